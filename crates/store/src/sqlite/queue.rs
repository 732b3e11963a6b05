//! Claims, leases, attempt records and endpoint failure ([`Queue`]).

use super::*;

/// What a claim reads of each delivery, in [`claimed_from_row`] order.
macro_rules! claim_columns {
    () => {
        "d.seq, d.team_id, d.event_id, v.event_type, COALESCE(d.body, v.body), d.endpoint_id, e.url, e.secret, d.attempts, \
         d.next_attempt_at, e.previous_secret, e.previous_secret_expires_at, d.created_at"
    };
}

/// A claim of due unordered work read through one of the two partial
/// indexes of schema 4 (`?1` now, `?2` the limit): what it reads, and the
/// conditions both share; `$only` names the index's own work.
macro_rules! claim_through {
    ($index:literal, $only:literal, $order:literal) => {
        concat!(
            "SELECT ",
            claim_columns!(),
            " FROM deliveries d INDEXED BY ",
            $index,
            " JOIN endpoints e ON e.id = d.endpoint_id
              JOIN events v ON v.id = d.event_id
              WHERE d.state = 'pending' AND d.ordered = 0 AND ",
            $only,
            " AND d.next_attempt_at <= ?1 AND e.status = 'active'
              ORDER BY ",
            $order,
            " LIMIT ?2"
        )
    };
}

/// Due free work, in due order.
pub(super) const CLAIM_FREE: &str =
    claim_through!("deliveries_due", "d.locked_until IS NULL", "d.next_attempt_at, d.seq");

/// Due work whose lease ran out, oldest lease first.
pub(super) const CLAIM_EXPIRED: &str = claim_through!(
    "deliveries_leased",
    "d.locked_until IS NOT NULL AND d.locked_until < ?1",
    "d.locked_until, d.seq"
);

pub(super) const CLAIM_COLUMNS: &str = claim_columns!();

pub(super) fn claimed_from_row(r: &Row<'_>) -> rusqlite::Result<ClaimedDelivery> {
    Ok(ClaimedDelivery {
        id: DeliveryId(r.get(0)?),
        team_id: TeamId::from_stored(r.get(1)?),
        event_id: EventId::from_stored(r.get(2)?),
        event_type: event_type_from(r.get_ref(3)?.as_str()?)?,
        body: Bytes::from(r.get::<_, Vec<u8>>(4)?),
        endpoint_id: EndpointId::from_stored(r.get(5)?),
        url: r.get(6)?,
        secret: secret_from(r.get_ref(7)?.as_str()?)?,
        previous_secret: previous_secret_from(r, 10)?.map(Box::new),
        attempt: r.get::<_, u32>(8)? + 1,
        due_ms: r.get(9)?,
        created_ms: r.get(12)?,
    })
}

pub(super) fn lease_all(c: &Connection, claimed: &[ClaimedDelivery], lease: &Lease) -> StoreResult<()> {
    let mut lock = c
        .prepare_cached("UPDATE deliveries SET locked_until = ?1, locked_by = ?2 WHERE seq = ?3")
        .map_err(internal)?;
    for d in claimed {
        lock.execute(params![lease.until_ms, lease.node, d.id.0])
            .map_err(internal)?;
    }
    Ok(())
}

#[async_trait]
impl Queue for SqliteStore {
    async fn renew(&self, deliveries: &[DeliveryId], lease: &Lease) -> StoreResult<()> {
        let (ids, lease): (Vec<i64>, Lease) = (deliveries.iter().map(|d| d.0).collect(), lease.clone());
        self.conns
            .write(move |c| {
                let mut stmt = c
                    .prepare_cached("UPDATE deliveries SET locked_until = ?1 WHERE seq = ?2 AND locked_by = ?3")
                    .map_err(internal)?;
                for id in ids {
                    stmt.execute(params![lease.until_ms, id, lease.node])
                        .map_err(internal)?;
                }
                Ok(())
            })
            .await
    }

    fn is_shared(&self) -> bool {
        false
    }

    async fn subscribe(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<crate::StoreSignal>>> {
        Ok(None)
    }

    async fn announce_endpoint_changed(&self, _endpoint: &EndpointId) -> StoreResult<()> {
        Ok(())
    }

    async fn claim_due(&self, now_ms: i64, limit: usize, lease: &Lease) -> StoreResult<Vec<ClaimedDelivery>> {
        let lease = lease.clone();
        self.conns
            .write(move |c| {
                // Free work in due order, then work whose lease ran out (its
                // holder lost track of it): each read from its own index, so
                // neither steps over what is leased and still held.
                let mut claimed = Vec::new();
                for sql in [CLAIM_FREE, CLAIM_EXPIRED] {
                    let left = limit.saturating_sub(claimed.len());
                    if left == 0 {
                        break;
                    }
                    let mut stmt = c.prepare_cached(sql).map_err(internal)?;
                    let rows = stmt
                        .query_map(params![now_ms, left as i64], claimed_from_row)
                        .map_err(internal)?;
                    for row in rows {
                        claimed.push(row.map_err(internal)?);
                    }
                }
                lease_all(c, &claimed, &lease)?;
                Ok(claimed)
            })
            .await
    }

    async fn claim_ordered(
        &self,
        now_ms: i64,
        endpoints: usize,
        run: usize,
        lease: &Lease,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let lease = lease.clone();
        self.conns
            .write(move |c| {
                // Per endpoint with pending ordered work: its first pending
                // delivery and the end of any lease it holds. An endpoint is
                // ready when nothing of it is leased and its head is due.
                let mut stmt = c
                    .prepare_cached(&format!(
                        "WITH heads AS (
                             SELECT endpoint_id, MIN(seq) AS head_seq, MAX(COALESCE(locked_until, 0)) AS lease_end
                             FROM deliveries WHERE state = 'pending' AND ordered = 1
                             GROUP BY endpoint_id
                         ),
                         ready AS (
                             SELECT h.endpoint_id FROM heads h
                             JOIN deliveries hd ON hd.seq = h.head_seq
                             JOIN endpoints e ON e.id = h.endpoint_id
                             WHERE h.lease_end < ?1 AND hd.next_attempt_at <= ?1 AND e.status = 'active'
                             ORDER BY hd.next_attempt_at
                             LIMIT ?2
                         ),
                         ranked AS (
                             SELECT d.seq AS seq, ROW_NUMBER() OVER (PARTITION BY d.endpoint_id ORDER BY d.seq) AS rn
                             FROM deliveries d JOIN ready r ON r.endpoint_id = d.endpoint_id
                             WHERE d.state = 'pending' AND d.ordered = 1
                         )
                         SELECT {CLAIM_COLUMNS}
                         FROM ranked k
                         JOIN deliveries d ON d.seq = k.seq
                         JOIN endpoints e ON e.id = d.endpoint_id
                         JOIN events v ON v.id = d.event_id
                         WHERE k.rn <= ?3
                         ORDER BY d.endpoint_id, d.seq"
                    ))
                    .map_err(internal)?;
                let claimed = stmt
                    .query_map(params![now_ms, endpoints as i64, run as i64], claimed_from_row)
                    .map_err(internal)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(internal)?;
                lease_all(c, &claimed, &lease)?;
                Ok(claimed)
            })
            .await
    }

    async fn backlog(&self, now_ms: i64) -> StoreResult<Backlog> {
        self.conns
            .read(move |c| {
                let one = |sql: &str| {
                    c.prepare_cached(sql)
                        .and_then(|mut s| s.query_row([now_ms], |r| r.get::<_, Option<i64>>(0)).optional())
                        .map(Option::flatten)
                        .map_err(internal)
                };
                let pending: i64 = c
                    .prepare_cached(
                        "SELECT (SELECT count(*) FROM deliveries INDEXED BY deliveries_due
                             WHERE state = 'pending' AND ordered = 0 AND locked_until IS NULL)
                          + (SELECT count(*) FROM deliveries INDEXED BY deliveries_leased
                             WHERE state = 'pending' AND ordered = 0 AND locked_until IS NOT NULL)
                          + (SELECT count(*) FROM deliveries INDEXED BY deliveries_ordered
                             WHERE state = 'pending' AND ordered = 1)",
                    )
                    .and_then(|mut s| s.query_row([], |r| r.get(0)))
                    .map_err(internal)?;
                let due = [
                    "SELECT d.next_attempt_at FROM deliveries d INDEXED BY deliveries_due
                     JOIN endpoints e ON e.id = d.endpoint_id
                     WHERE d.state = 'pending' AND d.ordered = 0 AND d.locked_until IS NULL AND e.status = 'active'
                       AND d.next_attempt_at <= ?1
                     ORDER BY d.next_attempt_at LIMIT 1",
                    "SELECT min(d.next_attempt_at) FROM deliveries d INDEXED BY deliveries_leased
                     JOIN endpoints e ON e.id = d.endpoint_id
                     WHERE d.state = 'pending' AND d.ordered = 0 AND d.locked_until IS NOT NULL AND e.status = 'active'
                       AND d.next_attempt_at <= ?1",
                    "SELECT min(d.next_attempt_at) FROM deliveries d INDEXED BY deliveries_ordered
                     JOIN endpoints e ON e.id = d.endpoint_id
                     WHERE d.state = 'pending' AND d.ordered = 1 AND e.status = 'active' AND d.next_attempt_at <= ?1",
                ];
                let mut oldest_due_ms: Option<i64> = None;
                for sql in due {
                    if let Some(at) = one(sql)? {
                        oldest_due_ms = Some(oldest_due_ms.map_or(at, |o| o.min(at)));
                    }
                }
                Ok(Backlog { pending, oldest_due_ms })
            })
            .await
    }

    async fn next_due_at(&self, now_ms: i64) -> StoreResult<Option<i64>> {
        self.conns
            .read(move |c| {
                // Unordered: the first free delivery in due order, and the
                // first lease to run out (claimable the millisecond after;
                // a leased unordered delivery is never due after its lease).
                let first = |sql: &str| {
                    c.prepare_cached(sql)
                        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)).optional())
                        .map_err(internal)
                };
                let free = first(
                    "SELECT d.next_attempt_at FROM deliveries d INDEXED BY deliveries_due
                     JOIN endpoints e ON e.id = d.endpoint_id
                     WHERE d.state = 'pending' AND d.ordered = 0 AND d.locked_until IS NULL AND e.status = 'active'
                     ORDER BY d.next_attempt_at LIMIT 1",
                )?;
                let expiring = first(
                    "SELECT MAX(d.next_attempt_at, d.locked_until + 1) FROM deliveries d INDEXED BY deliveries_leased
                     JOIN endpoints e ON e.id = d.endpoint_id
                     WHERE d.state = 'pending' AND d.ordered = 0 AND d.locked_until IS NOT NULL AND e.status = 'active'
                     ORDER BY d.locked_until LIMIT 1",
                )?;
                let unordered = match (free, expiring) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                // An ordered endpoint is claimable when its head is due and its
                // lease (if any) has ended: the later of the two.
                let ordered: Option<i64> = c
                    .query_row(
                        "WITH heads AS (
                             SELECT endpoint_id, MIN(seq) AS head_seq, MAX(COALESCE(locked_until, 0)) AS lease_end
                             FROM deliveries WHERE state = 'pending' AND ordered = 1
                             GROUP BY endpoint_id
                         )
                         SELECT MIN(MAX(hd.next_attempt_at, CASE WHEN h.lease_end >= ?1 THEN h.lease_end + 1 ELSE 0 END))
                         FROM heads h JOIN deliveries hd ON hd.seq = h.head_seq
                         JOIN endpoints e ON e.id = h.endpoint_id
                         WHERE e.status = 'active'",
                        [now_ms],
                        |r| r.get(0),
                    )
                    .map_err(internal)?;
                Ok(match (unordered, ordered) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                })
            })
            .await
    }

    async fn claim_recovery(&self, lease: &Lease, now_ms: i64, held: &[RecoveryId]) -> StoreResult<Option<Recovery>> {
        let lease = lease.clone();
        let held: Vec<String> = held.iter().map(|id| id.as_str().to_owned()).collect();
        self.conns.write(move |c| claim_in(c, &lease, now_ms, &held)).await
    }

    async fn recover_chunk(
        &self,
        id: &RecoveryId,
        limit: usize,
        lease: &Lease,
        now_ms: i64,
    ) -> StoreResult<RecoverChunk> {
        let (id, lease) = (id.as_str().to_owned(), lease.clone());
        let scanned = id.clone();
        let scan = self.conns.read(move |c| scan_chunk(c, &scanned, limit)).await?;
        self.conns
            .write(move |c| write_chunk(c, &id, scan, limit, &lease, now_ms))
            .await
    }

    async fn record_attempt(&self, record: AttemptRecord) -> StoreResult<Recorded> {
        crate::records::record(&self.records, &self.flush, record).await
    }

    async fn fail_endpoint(&self, last: AttemptRecord, drop_reason: &str) -> StoreResult<usize> {
        let reason = drop_reason.to_owned();
        self.conns
            .write(move |c| {
                record_many(c, &[&last])?;
                c.execute(
                    "UPDATE endpoints SET status = ?1 WHERE id = ?2",
                    params![EndpointStatus::Failed.as_str(), last.endpoint_id.as_str()],
                )
                .map_err(internal)?;
                let mut pending = c
                    .prepare_cached(
                        "SELECT d.seq, d.event_id, v.event_type, d.attempts, e.url FROM deliveries d
                         JOIN events v ON v.id = d.event_id JOIN endpoints e ON e.id = d.endpoint_id
                         WHERE d.endpoint_id = ?1 AND d.state = 'pending' AND d.ordered = 1 ORDER BY d.seq",
                    )
                    .map_err(internal)?;
                let dropped = pending
                    .query_map([last.endpoint_id.as_str()], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, u32>(3)?,
                            r.get::<_, String>(4)?,
                        ))
                    })
                    .map_err(internal)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(internal)?;
                for (seq, event_id, event_type, attempts, url) in &dropped {
                    let record = AttemptRecord {
                        id: AttemptId::generate(last.timestamp_ms),
                        delivery: DeliveryId(*seq),
                        team_id: last.team_id.clone(),
                        endpoint_id: last.endpoint_id.clone(),
                        event_id: EventId::from_stored(event_id.clone()),
                        event_type: event_type_from(event_type).map_err(internal)?,
                        attempt: attempts + 1,
                        timestamp_ms: last.timestamp_ms,
                        status: AttemptStatus::Dropped,
                        duration_ms: 0,
                        request_url: url.clone(),
                        request_headers: Vec::new(),
                        response: None,
                        error: Some(reason.clone()),
                        next: DeliveryNext::Dropped,
                        keep_lease_until: None,
                        deactivate: None,
                    };
                    record_many(c, &[&record])?;
                }
                Ok(dropped.len())
            })
            .await
    }

    async fn release(&self, deliveries: &[DeliveryId]) -> StoreResult<()> {
        let ids: Vec<i64> = deliveries.iter().map(|d| d.0).collect();
        self.conns
            .write(move |c| {
                let mut stmt = c
                    .prepare_cached("UPDATE deliveries SET locked_until = NULL, locked_by = NULL WHERE seq = ?1")
                    .map_err(internal)?;
                for id in ids {
                    stmt.execute([id]).map_err(internal)?;
                }
                Ok(())
            })
            .await
    }

    async fn release_node(&self, node: &str) -> StoreResult<()> {
        let node = node.to_owned();
        self.conns
            .write(move |c| {
                c.execute(
                    "UPDATE deliveries SET locked_until = NULL, locked_by = NULL WHERE locked_by = ?1",
                    [&node],
                )
                .map_err(internal)?;
                c.execute(
                    "UPDATE recoveries SET locked_until = NULL, locked_by = NULL
                     WHERE locked_by = ?1 AND finished_at IS NULL",
                    [&node],
                )
                .map_err(internal)?;
                Ok(())
            })
            .await
    }
}

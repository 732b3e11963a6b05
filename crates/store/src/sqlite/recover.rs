//! Recovers (contract §4.1): which failed events a recover sends, its row,
//! and the chunks of deliveries it makes ([`crate::plan`] decides what a
//! chunk is; this file is only its SQL).

use super::*;

/// The events a recover of webhook `?1` sends: those created in
/// `[?2, ?3)` whose latest delivery to it failed, among the attempts logged
/// up to `?4`: a failed attempt whose delivery no later delivery of the same
/// event to the same webhook followed. A later one is always manual (a
/// resend, a recover), pending or done, and found through the partial index
/// of manual deliveries, which publishes never write. Read through the index
/// of unsuccessful attempts, in attempt order.
macro_rules! recoverable {
    () => {
        " FROM attempts a INDEXED BY attempts_endpoint_unsuccessful
          JOIN events v ON v.id = a.event_id
          WHERE a.endpoint_id = ?1 AND a.status = 'failed' AND a.status <> 'success'
            AND v.created_at >= ?2 AND v.created_at < ?3 AND a.seq <= ?4
            AND NOT EXISTS (SELECT 1 FROM deliveries d INDEXED BY deliveries_manual
                            WHERE d.manual = 1 AND d.event_id = a.event_id AND d.endpoint_id = a.endpoint_id
                              AND d.seq > a.delivery_seq)"
    };
}

const COUNT_SQL: &str = concat!("SELECT count(*)", recoverable!());

/// The next `?7` of them after the cursor (`?5` attempt time, `?6` position).
const CHUNK_SQL: &str = concat!(
    "SELECT a.timestamp, a.seq, a.event_id, v.event_type, v.body",
    recoverable!(),
    " AND (a.timestamp > ?5 OR (a.timestamp = ?5 AND a.seq > ?6))
      ORDER BY a.timestamp, a.seq LIMIT ?7"
);

/// What the count of a recover reads: how many events, and the last attempt
/// logged when it was counted (later failures are not this recover's).
pub(super) fn count_recoverable(c: &Connection, webhook: &str, since: i64, until: i64) -> StoreResult<(i64, i64)> {
    let scan_to: i64 = c
        .query_row("SELECT coalesce(max(seq), 0) FROM attempts", [], |r| r.get(0))
        .map_err(internal)?;
    let count = c
        .prepare_cached(COUNT_SQL)
        .and_then(|mut s| s.query_row(params![webhook, since, until, scan_to], |r| r.get(0)))
        .map_err(internal)?;
    Ok((count, scan_to))
}

pub(super) const RECOVERY_COLUMNS: &str =
    "id, team_id, endpoint_id, since, until, total, made, created_at, finished_at";

pub(super) fn recovery_from_row(r: &Row<'_>) -> rusqlite::Result<Recovery> {
    Ok(Recovery {
        id: RecoveryId::from_stored(r.get(0)?),
        team_id: TeamId::from_stored(r.get(1)?),
        endpoint_id: EndpointId::from_stored(r.get(2)?),
        since_ms: r.get(3)?,
        until_ms: r.get(4)?,
        total: r.get(5)?,
        made: r.get(6)?,
        created_at: r.get(7)?,
        finished_at: r.get(8)?,
    })
}

/// What a chunk read, on a reader so that the writer is held only for the
/// inserts: the recover's place when it was read, and the events after it.
pub(super) struct Scan {
    team: String,
    webhook: String,
    cursor: (i64, i64),
    found: Vec<(i64, i64, String, String, Vec<u8>)>,
}

/// Reads a recover's next (up to `limit`) events; `None` if it is finished
/// or gone.
pub(super) fn scan_chunk(c: &Connection, id: &str, limit: usize) -> StoreResult<Option<Scan>> {
    let row = c
        .query_row(
            "SELECT team_id, endpoint_id, since, until, scan_to, cursor_ts, cursor_seq, finished_at
             FROM recoveries WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    [r.get::<_, i64>(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?],
                    r.get::<_, Option<i64>>(7)?,
                ))
            },
        )
        .optional()
        .map_err(internal)?;
    let Some((team, webhook, [since, until, scan_to, cursor_ts, cursor_seq], None)) = row else {
        return Ok(None);
    };
    let found = c
        .prepare_cached(CHUNK_SQL)
        .and_then(|mut stmt| {
            stmt.query_map(
                params![webhook, since, until, scan_to, cursor_ts, cursor_seq, limit as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(internal)?;
    Ok(Some(Scan {
        team,
        webhook,
        cursor: (cursor_ts, cursor_seq),
        found,
    }))
}

/// Makes the deliveries of a scanned chunk, leased to `lease`, and moves the
/// recover past what was read, in one write, if nobody moved it since the
/// scan and no other process holds it (then nothing is made).
pub(super) fn write_chunk(
    c: &Connection,
    id: &str,
    scan: Option<Scan>,
    limit: usize,
    lease: &Lease,
    now_ms: i64,
) -> StoreResult<RecoverChunk> {
    let Some(scan) = scan else {
        return Ok(plan::recover_gone());
    };
    let endpoint = match manual_target(c, &scan.team, &scan.webhook)? {
        Ok(endpoint) => endpoint,
        // Deactivated meanwhile: it waits, and goes on once it is active.
        Err(_) => return Ok(plan::recover_paused()),
    };
    let finished = scan.found.len() < limit;
    let cursor = scan.found.last().map(|f| (f.0, f.1)).unwrap_or(scan.cursor);
    let moved = c
        .execute(
            "UPDATE recoveries SET cursor_ts = ?2, cursor_seq = ?3, made = made + ?4, locked_until = ?5, locked_by = ?6,
                 finished_at = CASE WHEN ?7 THEN ?8 END
             WHERE id = ?1 AND cursor_ts = ?9 AND cursor_seq = ?10 AND finished_at IS NULL
                 AND (locked_by = ?6 OR locked_until IS NULL OR locked_until < ?8)",
            params![
                id,
                cursor.0,
                cursor.1,
                scan.found.len() as i64,
                lease.until_ms,
                lease.node,
                finished,
                now_ms,
                scan.cursor.0,
                scan.cursor.1
            ],
        )
        .map_err(internal)?;
    if moved == 0 {
        return Ok(plan::recover_paused());
    }
    let mut deliveries = Vec::with_capacity(scan.found.len());
    for (_, _, event_id, event_type, body) in scan.found {
        let event_type = event_type_from(&event_type).map_err(internal)?;
        let planned = plan::manual_delivery(
            &endpoint,
            EventId::from_stored(event_id),
            event_type,
            Bytes::from(body),
            now_ms,
        );
        deliveries.push(insert_manual_delivery(c, planned, lease)?);
    }
    Ok(RecoverChunk { deliveries, finished })
}

#[async_trait]
impl Recovering for SqliteStore {
    async fn recover(
        &self,
        team: &TeamId,
        webhook: &EndpointId,
        window: RecoverWindow,
        now_ms: i64,
    ) -> StoreResult<RecoverOutcome> {
        let (team, webhook) = (team.as_str().to_owned(), webhook.as_str().to_owned());
        // Counted on a reader: a large recover's count must not hold the writer.
        let (w, t) = (webhook.clone(), team.clone());
        let counted = self
            .conns
            .read(move |c| {
                load_endpoint(c, &t, &w)?;
                count_recoverable(c, &w, window.since_ms, window.until_ms)
            })
            .await;
        let (total, scan_to) = match counted {
            Ok(counted) => counted,
            Err(StoreError::NotFound) => return Ok(RecoverOutcome::UnknownWebhook),
            Err(e) => return Err(e),
        };
        self.conns
            .write(move |c| {
                let endpoint = match manual_target(c, &team, &webhook)? {
                    Ok(endpoint) => endpoint,
                    Err(refused) => return Ok(plan::recover_refused(refused)),
                };
                let running: Option<String> = c
                    .query_row(
                        "SELECT id FROM recoveries WHERE endpoint_id = ?1 AND finished_at IS NULL",
                        [&webhook],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(internal)?;
                if running.is_some() {
                    return Ok(RecoverOutcome::Running);
                }
                let recovery = plan::new_recovery(&endpoint, window, total, now_ms);
                c.execute(
                    "INSERT INTO recoveries (id, team_id, endpoint_id, since, until, scan_to, cursor_ts, cursor_seq,
                         total, made, created_at, finished_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, -1, 0, ?7, 0, ?8, ?9)",
                    params![
                        recovery.id.as_str(),
                        recovery.team_id.as_str(),
                        recovery.endpoint_id.as_str(),
                        recovery.since_ms,
                        recovery.until_ms,
                        scan_to,
                        recovery.total,
                        recovery.created_at,
                        recovery.finished_at
                    ],
                )
                .map_err(internal)?;
                Ok(RecoverOutcome::Created(recovery))
            })
            .await
    }

    async fn count_recoverable(&self, team: &TeamId, webhook: &EndpointId, window: RecoverWindow) -> StoreResult<i64> {
        let (team, webhook) = (team.as_str().to_owned(), webhook.as_str().to_owned());
        self.conns
            .read(move |c| {
                load_endpoint(c, &team, &webhook)?;
                count_recoverable(c, &webhook, window.since_ms, window.until_ms).map(|(n, _)| n)
            })
            .await
    }

    async fn recoveries(&self, team: &TeamId, webhook: &EndpointId, limit: usize) -> StoreResult<Vec<Recovery>> {
        let (team, webhook) = (team.as_str().to_owned(), webhook.as_str().to_owned());
        self.conns
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {RECOVERY_COLUMNS} FROM recoveries WHERE endpoint_id = ?1 AND team_id = ?2
                         ORDER BY created_at DESC, id DESC LIMIT ?3"
                    ))
                    .map_err(internal)?;
                let rows = stmt
                    .query_map(params![webhook, team, limit as i64], recovery_from_row)
                    .map_err(internal)?;
                rows.map(|r| r.map_err(internal)).collect()
            })
            .await
    }
}

/// An open recover of an active webhook that no other process holds, now
/// leased to `lease`: the oldest first.
pub(super) fn claim_in(c: &Connection, lease: &Lease, now_ms: i64, held: &[String]) -> StoreResult<Option<Recovery>> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let columns: Vec<String> = RECOVERY_COLUMNS.split(", ").map(|col| format!("r.{col}")).collect();
        format!(
            "SELECT {} FROM recoveries r JOIN endpoints e ON e.id = r.endpoint_id
             WHERE r.finished_at IS NULL AND e.status = 'active'
               AND (r.locked_until IS NULL OR r.locked_until < ?1 OR r.locked_by = ?2)
               AND r.id NOT IN (SELECT value FROM json_each(?3))
             ORDER BY r.created_at LIMIT 1",
            columns.join(", ")
        )
    });
    let found = c
        .prepare_cached(sql)
        .and_then(|mut s| {
            s.query_row(params![now_ms, lease.node, held_json(held)], recovery_from_row)
                .optional()
        })
        .map_err(internal)?;
    if let Some(recovery) = &found {
        c.execute(
            "UPDATE recoveries SET locked_until = ?2, locked_by = ?3 WHERE id = ?1",
            params![recovery.id.as_str(), lease.until_ms, lease.node],
        )
        .map_err(internal)?;
    }
    Ok(found)
}

/// The ids as a JSON array, which `json_each` reads as a list.
fn held_json(held: &[String]) -> String {
    serde_json::to_string(held).unwrap_or_else(|_| "[]".to_owned())
}

//! Recovers (contract §4.1) on PostgreSQL, as SQLite's `recover.rs`: the
//! same selection of events, one chunk of deliveries per transaction with
//! the recover's row locked, and leases so that one node works a recover.

use super::*;

/// The events a recover of webhook `$1` sends: created in `[$2, $3)`, the
/// latest delivery to it failed (no later, always manual, delivery of the
/// event to it), among the attempts logged up to `$4`.
macro_rules! recoverable {
    () => {
        " FROM attempts a JOIN events v ON v.id = a.event_id
          WHERE a.endpoint_id = $1 AND a.status = 'failed' AND a.status <> 'success'
            AND v.created_at >= $2 AND v.created_at < $3 AND a.seq <= $4
            AND NOT EXISTS (SELECT 1 FROM deliveries d
                            WHERE d.manual AND d.event_id = a.event_id AND d.endpoint_id = a.endpoint_id
                              AND d.seq > a.delivery_seq)"
    };
}

const COUNT_SQL: &str = concat!("SELECT count(*)", recoverable!());

/// The next `$7` after the cursor (`$5` attempt time, `$6` position). The
/// events are locked against retention until the chunk's deliveries are
/// committed (an event retention deletes meanwhile is skipped).
const CHUNK_SQL: &str = concat!(
    "SELECT a.timestamp, a.seq, a.event_id, v.event_type, v.body",
    recoverable!(),
    " AND (a.timestamp, a.seq) > ($5, $6)
      ORDER BY a.timestamp, a.seq LIMIT $7 FOR KEY SHARE OF v"
);

pub(super) const RECOVERY_COLUMNS: &str =
    "id, team_id, endpoint_id, since, until, total, made, created_at, finished_at";

pub(super) fn recovery_from_row(r: &Row) -> Recovery {
    Recovery {
        id: RecoveryId::from_stored(r.get(0)),
        team_id: TeamId::from_stored(r.get(1)),
        endpoint_id: EndpointId::from_stored(r.get(2)),
        since_ms: r.get(3),
        until_ms: r.get(4),
        total: r.get(5),
        made: r.get(6),
        created_at: r.get(7),
        finished_at: r.get(8),
    }
}

/// How many events a recover sends, and the last attempt logged when counted.
async fn count(
    client: &impl deadpool_postgres::GenericClient,
    webhook: &str,
    window: RecoverWindow,
) -> StoreResult<(i64, i64)> {
    let scan_to: i64 = client
        .query_one("SELECT coalesce(max(seq), 0) FROM attempts", &[])
        .await
        .map_err(pg_error)?
        .get(0);
    let n: i64 = client
        .query_one(COUNT_SQL, &[&webhook, &window.since_ms, &window.until_ms, &scan_to])
        .await
        .map_err(pg_error)?
        .get(0);
    Ok((n, scan_to))
}

async fn owned(client: &impl deadpool_postgres::GenericClient, team: &str, webhook: &str) -> StoreResult<()> {
    client
        .query_opt(
            "SELECT 1 FROM endpoints WHERE id = $1 AND team_id = $2",
            &[&webhook, &team],
        )
        .await
        .map_err(pg_error)?
        .map(|_| ())
        .ok_or(StoreError::NotFound)
}

pub(super) async fn claim(
    store: &PgStore,
    lease: &Lease,
    now_ms: i64,
    held: &[RecoveryId],
) -> StoreResult<Option<Recovery>> {
    let held: Vec<&str> = held.iter().map(RecoveryId::as_str).collect();
    let columns: Vec<String> = RECOVERY_COLUMNS.split(", ").map(|c| format!("r.{c}")).collect();
    let row = store
        .client()
        .await?
        .query_opt(
            &format!(
                "UPDATE recoveries r SET locked_until = $1, locked_by = $2
                 WHERE r.id = (
                     SELECT q.id FROM recoveries q JOIN endpoints e ON e.id = q.endpoint_id
                     WHERE q.finished_at IS NULL AND e.status = 'active'
                       AND (q.locked_until IS NULL OR q.locked_until < $3 OR q.locked_by = $2)
                       AND NOT (q.id = ANY($4))
                     ORDER BY q.created_at LIMIT 1
                     FOR UPDATE OF q SKIP LOCKED)
                 RETURNING {}",
                columns.join(", ")
            ),
            &[&lease.until_ms, &lease.node, &now_ms, &held],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.as_ref().map(recovery_from_row))
}

pub(super) async fn chunk(
    store: &PgStore,
    id: &RecoveryId,
    limit: usize,
    lease: &Lease,
    now_ms: i64,
) -> StoreResult<RecoverChunk> {
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let row = tx
        .query_opt(
            "SELECT team_id, endpoint_id, since, until, scan_to, cursor_ts, cursor_seq, finished_at, locked_by, locked_until
             FROM recoveries WHERE id = $1 FOR UPDATE",
            &[&id.as_str()],
        )
        .await
        .map_err(pg_error)?;
    let Some(row) = row else {
        return Ok(plan::recover_gone());
    };
    if row.get::<_, Option<i64>>(7).is_some() {
        return Ok(plan::recover_gone());
    }
    // Another process took it over while this one was away: it is theirs.
    let (holder, held_until): (Option<String>, Option<i64>) = (row.get(8), row.get(9));
    if holder.is_some_and(|h| h != lease.node) && held_until.is_some_and(|t| t >= now_ms) {
        return Ok(plan::recover_paused());
    }
    let (team, webhook): (String, String) = (row.get(0), row.get(1));
    let [since, until, scan_to, cursor_ts, cursor_seq]: [i64; 5] =
        [row.get(2), row.get(3), row.get(4), row.get(5), row.get(6)];
    let endpoint = match manual_target(&tx, &team, &webhook).await? {
        Ok(endpoint) => endpoint,
        Err(_) => return Ok(plan::recover_paused()),
    };
    let found = tx
        .query(
            CHUNK_SQL,
            &[
                &webhook,
                &since,
                &until,
                &scan_to,
                &cursor_ts,
                &cursor_seq,
                &(limit as i64),
            ],
        )
        .await
        .map_err(pg_error)?;
    let finished = found.len() < limit;
    let cursor = found
        .last()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        .unwrap_or((cursor_ts, cursor_seq));
    let mut deliveries = Vec::with_capacity(found.len());
    for r in &found {
        let event_type = event_type_from(r.get(3))?;
        let body = Bytes::from(r.get::<_, Vec<u8>>(4));
        let planned = plan::manual_delivery(&endpoint, EventId::from_stored(r.get(2)), event_type, body, now_ms);
        deliveries.push(insert_manual_delivery(&tx, planned, lease).await?);
    }
    let finished_at = finished.then_some(now_ms);
    tx.execute(
        "UPDATE recoveries SET cursor_ts = $2, cursor_seq = $3, made = made + $4, locked_until = $5, locked_by = $6,
             finished_at = $7
         WHERE id = $1",
        &[
            &id.as_str(),
            &cursor.0,
            &cursor.1,
            &(deliveries.len() as i64),
            &lease.until_ms,
            &lease.node,
            &finished_at,
        ],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(RecoverChunk { deliveries, finished })
}

#[async_trait]
impl Recovering for PgStore {
    async fn recover(
        &self,
        team: &TeamId,
        webhook: &EndpointId,
        window: RecoverWindow,
        now_ms: i64,
    ) -> StoreResult<RecoverOutcome> {
        let mut client = self.client().await?;
        if let Err(e) = owned(&client, team.as_str(), webhook.as_str()).await {
            return match e {
                StoreError::NotFound => Ok(RecoverOutcome::UnknownWebhook),
                other => Err(other),
            };
        }
        let (total, scan_to) = count(&client, webhook.as_str(), window).await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // The webhook's row lock makes two concurrent recovers of it one
        // after the other: the second sees the first running.
        tx.execute("SELECT 1 FROM endpoints WHERE id = $1 FOR UPDATE", &[&webhook.as_str()])
            .await
            .map_err(pg_error)?;
        let endpoint = match manual_target(&tx, team.as_str(), webhook.as_str()).await? {
            Ok(endpoint) => endpoint,
            Err(refused) => return Ok(plan::recover_refused(refused)),
        };
        let running = tx
            .query_opt(
                "SELECT 1 FROM recoveries WHERE endpoint_id = $1 AND finished_at IS NULL",
                &[&webhook.as_str()],
            )
            .await
            .map_err(pg_error)?;
        if running.is_some() {
            return Ok(RecoverOutcome::Running);
        }
        let recovery = plan::new_recovery(&endpoint, window, total, now_ms);
        tx.execute(
            "INSERT INTO recoveries (id, team_id, endpoint_id, since, until, scan_to, cursor_ts, cursor_seq,
                 total, made, created_at, finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, -1, 0, $7, 0, $8, $9)",
            &[
                &recovery.id.as_str(),
                &recovery.team_id.as_str(),
                &recovery.endpoint_id.as_str(),
                &recovery.since_ms,
                &recovery.until_ms,
                &scan_to,
                &recovery.total,
                &recovery.created_at,
                &recovery.finished_at,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(RecoverOutcome::Created(recovery))
    }

    async fn count_recoverable(&self, team: &TeamId, webhook: &EndpointId, window: RecoverWindow) -> StoreResult<i64> {
        let client = self.client().await?;
        owned(&client, team.as_str(), webhook.as_str()).await?;
        count(&client, webhook.as_str(), window).await.map(|(n, _)| n)
    }

    async fn recoveries(&self, team: &TeamId, webhook: &EndpointId, limit: usize) -> StoreResult<Vec<Recovery>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {RECOVERY_COLUMNS} FROM recoveries WHERE endpoint_id = $1 AND team_id = $2
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                ),
                &[&webhook.as_str(), &team.as_str(), &(limit as i64)],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(recovery_from_row).collect())
    }
}

//! Claims, leases, attempt records, endpoint failure and the signals
//! between processes (`LISTEN`/`NOTIFY`) ([`Queue`]).

use super::*;

/// Signals from other processes waiting for the engine; the listener waits
/// when the engine falls behind.
const SIGNAL_QUEUE: usize = 1024;

/// Keeps one connection listening for the other processes' announcements,
/// reconnecting with a pause when the database goes away, until `tx` closes.
pub(super) async fn listen(config: tokio_postgres::Config, tls: tls::PgTls, tx: mpsc::Sender<StoreSignal>) {
    let mut pause = Duration::from_millis(100);
    while !tx.is_closed() {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let subscribed = async {
                    client
                        .batch_execute(&format!("LISTEN {WORK_CHANNEL}; LISTEN {ENDPOINT_CHANNEL}"))
                        .await
                };
                // The LISTEN only completes while the connection is driven.
                let mut subscribed = Box::pin(subscribed);
                let mut listening = false;
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        done = &mut subscribed, if !listening => {
                            if done.is_err() { break; }
                            listening = true;
                            pause = Duration::from_millis(100);
                            // Anything committed while we were away is worth a look.
                            let _ = tx.try_send(StoreSignal::Work);
                        }
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                let signal = if n.channel() == ENDPOINT_CHANNEL {
                                    StoreSignal::EndpointChanged(EndpointId::from_stored(n.payload().to_owned()))
                                } else {
                                    StoreSignal::Work
                                };
                                let _ = tx.try_send(signal);
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break,
                        }
                    }
                }
                tracing::warn!("lost the PostgreSQL notification connection; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the PostgreSQL notification connection"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

#[async_trait]
impl Queue for PgStore {
    async fn claim_due(&self, now_ms: i64, limit: usize, lease: &Lease) -> StoreResult<Vec<ClaimedDelivery>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    // Free work in due order, then work whose lease ran out,
                    // each from its own partial index (schema 4).
                    "WITH free AS (
                         SELECT d.seq FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
                         WHERE d.state = 'pending' AND NOT d.ordered AND d.locked_until IS NULL
                           AND d.next_attempt_at <= $1 AND e.status = 'active'
                         ORDER BY d.next_attempt_at, d.seq
                         LIMIT $2
                         FOR UPDATE OF d SKIP LOCKED
                     ),
                     expired AS (
                         SELECT d.seq FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
                         WHERE d.state = 'pending' AND NOT d.ordered AND d.locked_until IS NOT NULL
                           AND d.locked_until < $1 AND d.next_attempt_at <= $1 AND e.status = 'active'
                         ORDER BY d.locked_until, d.seq
                         LIMIT $2
                         FOR UPDATE OF d SKIP LOCKED
                     ),
                     due AS (SELECT seq FROM free UNION ALL SELECT seq FROM expired LIMIT $2)
                     UPDATE deliveries d SET locked_until = $3, locked_by = $4
                     FROM due, events v, endpoints e
                     WHERE d.seq = due.seq AND v.id = d.event_id AND e.id = d.endpoint_id
                     RETURNING {CLAIM_COLUMNS}"
                ),
                &[&now_ms, &(limit as i64), &lease.until_ms, &lease.node],
            )
            .await
            .map_err(pg_error)?;
        let mut claimed = rows.iter().map(claimed_from_row).collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|d| d.id);
        Ok(claimed)
    }

    async fn claim_ordered(
        &self,
        now_ms: i64,
        endpoints: usize,
        run: usize,
        lease: &Lease,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // Candidates from a snapshot; then lock their endpoint rows (skipping
        // those another process holds) and check again in a fresh statement,
        // which sees whatever a process that held the lock has committed.
        let ready = |limit_param: &str| {
            format!(
                "SELECT h.endpoint_id FROM (
                     SELECT endpoint_id, MIN(seq) AS head_seq, MAX(COALESCE(locked_until, 0)) AS lease_end
                     FROM deliveries WHERE state = 'pending' AND ordered {limit_param}
                     GROUP BY endpoint_id
                 ) h
                 JOIN deliveries hd ON hd.seq = h.head_seq
                 JOIN endpoints e ON e.id = h.endpoint_id
                 WHERE h.lease_end < $1 AND hd.next_attempt_at <= $1 AND e.status = 'active'
                 ORDER BY hd.next_attempt_at LIMIT $2"
            )
        };
        let candidates: Vec<String> = tx
            .query(&ready(""), &[&now_ms, &(endpoints as i64)])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let locked: Vec<String> = tx
            .query(
                "SELECT id FROM endpoints WHERE id = ANY($1) AND status = 'active' ORDER BY id FOR UPDATE SKIP LOCKED",
                &[&candidates],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if locked.is_empty() {
            return Ok(Vec::new());
        }
        let rows = tx
            .query(
                &format!(
                    "WITH ready AS ({}),
                     ranked AS (
                         SELECT d.seq, ROW_NUMBER() OVER (PARTITION BY d.endpoint_id ORDER BY d.seq) AS rn
                         FROM deliveries d JOIN ready r ON r.endpoint_id = d.endpoint_id
                         WHERE d.state = 'pending' AND d.ordered
                     ),
                     claimed AS (
                         UPDATE deliveries d SET locked_until = $4, locked_by = $5
                         FROM ranked k WHERE d.seq = k.seq AND k.rn <= $3
                         RETURNING d.*
                     )
                     SELECT {}
                     FROM claimed d JOIN events v ON v.id = d.event_id JOIN endpoints e ON e.id = d.endpoint_id
                     ORDER BY d.endpoint_id, d.seq",
                    ready("AND endpoint_id = ANY($6)"),
                    CLAIM_COLUMNS
                ),
                &[
                    &now_ms,
                    &(endpoints as i64),
                    &(run as i64),
                    &lease.until_ms,
                    &lease.node,
                    &locked,
                ],
            )
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        rows.iter().map(claimed_from_row).collect()
    }

    async fn backlog(&self, now_ms: i64) -> StoreResult<Backlog> {
        // Each part matches one partial index of pending work exactly.
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT
                     (SELECT count(*) FROM deliveries
                      WHERE state = 'pending' AND NOT ordered AND locked_until IS NULL)
                   + (SELECT count(*) FROM deliveries
                      WHERE state = 'pending' AND NOT ordered AND locked_until IS NOT NULL)
                   + (SELECT count(*) FROM deliveries WHERE state = 'pending' AND ordered),
                   LEAST(
                     (SELECT d.next_attempt_at FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
                      WHERE d.state = 'pending' AND NOT d.ordered AND d.locked_until IS NULL AND e.status = 'active'
                        AND d.next_attempt_at <= $1
                      ORDER BY d.next_attempt_at LIMIT 1),
                     (SELECT min(d.next_attempt_at) FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
                      WHERE d.state = 'pending' AND NOT d.ordered AND d.locked_until IS NOT NULL AND e.status = 'active'
                        AND d.next_attempt_at <= $1),
                     (SELECT min(d.next_attempt_at) FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
                      WHERE d.state = 'pending' AND d.ordered AND e.status = 'active' AND d.next_attempt_at <= $1))",
                &[&now_ms],
            )
            .await
            .map_err(pg_error)?;
        Ok(Backlog {
            pending: row.get(0),
            oldest_due_ms: row.get(1),
        })
    }

    async fn next_due_at(&self, now_ms: i64) -> StoreResult<Option<i64>> {
        let row = self
            .client()
            .await?
            .query_one(
                // Unordered: the first free delivery in due order and the
                // first lease to run out (claimable the millisecond after).
                "SELECT LEAST(
                     (SELECT d.next_attempt_at FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
                      WHERE d.state = 'pending' AND NOT d.ordered AND d.locked_until IS NULL AND e.status = 'active'
                      ORDER BY d.next_attempt_at LIMIT 1),
                     (SELECT GREATEST(d.next_attempt_at, d.locked_until + 1)
                      FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
                      WHERE d.state = 'pending' AND NOT d.ordered AND d.locked_until IS NOT NULL AND e.status = 'active'
                      ORDER BY d.locked_until LIMIT 1),
                     (SELECT MIN(GREATEST(hd.next_attempt_at, CASE WHEN h.lease_end >= $1 THEN h.lease_end + 1 ELSE 0 END))
                      FROM (SELECT endpoint_id, MIN(seq) AS head_seq, MAX(COALESCE(locked_until, 0)) AS lease_end
                            FROM deliveries WHERE state = 'pending' AND ordered GROUP BY endpoint_id) h
                      JOIN deliveries hd ON hd.seq = h.head_seq
                      JOIN endpoints e ON e.id = h.endpoint_id
                      WHERE e.status = 'active'))",
                &[&now_ms],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }

    async fn claim_recovery(&self, lease: &Lease, now_ms: i64, held: &[RecoveryId]) -> StoreResult<Option<Recovery>> {
        recover::claim(self, lease, now_ms, held).await
    }

    async fn recover_chunk(
        &self,
        id: &RecoveryId,
        limit: usize,
        lease: &Lease,
        now_ms: i64,
    ) -> StoreResult<RecoverChunk> {
        recover::chunk(self, id, limit, lease, now_ms).await
    }

    async fn record_attempt(&self, record: AttemptRecord) -> StoreResult<Recorded> {
        crate::records::record(&self.records, &self.flush, record).await
    }

    async fn fail_endpoint(&self, last: AttemptRecord, drop_reason: &str) -> StoreResult<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        record_in(&tx, &last).await?;
        tx.execute(
            "UPDATE endpoints SET status = $1 WHERE id = $2",
            &[&EndpointStatus::Failed.as_str(), &last.endpoint_id.as_str()],
        )
        .await
        .map_err(pg_error)?;
        let pending = tx
            .query(
                "SELECT d.seq, d.event_id, v.event_type, d.attempts, e.url FROM deliveries d
                 JOIN events v ON v.id = d.event_id JOIN endpoints e ON e.id = d.endpoint_id
                 WHERE d.endpoint_id = $1 AND d.state = 'pending' AND d.ordered ORDER BY d.seq FOR UPDATE OF d",
                &[&last.endpoint_id.as_str()],
            )
            .await
            .map_err(pg_error)?;
        for row in &pending {
            let record = AttemptRecord {
                id: AttemptId::generate(last.timestamp_ms),
                delivery: DeliveryId(row.get(0)),
                team_id: last.team_id.clone(),
                endpoint_id: last.endpoint_id.clone(),
                event_id: EventId::from_stored(row.get(1)),
                event_type: event_type_from(row.get(2))?,
                attempt: row.get::<_, i32>(3) as u32 + 1,
                timestamp_ms: last.timestamp_ms,
                status: AttemptStatus::Dropped,
                duration_ms: 0,
                request_url: row.get(4),
                request_headers: Vec::new(),
                response: None,
                error: Some(drop_reason.to_owned()),
                next: DeliveryNext::Dropped,
                keep_lease_until: None,
                deactivate: None,
            };
            record_in(&tx, &record).await?;
        }
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&ENDPOINT_CHANNEL, &last.endpoint_id.as_str()],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(pending.len())
    }

    async fn renew(&self, deliveries: &[DeliveryId], lease: &Lease) -> StoreResult<()> {
        let ids: Vec<i64> = deliveries.iter().map(|d| d.0).collect();
        self.client()
            .await?
            .execute(
                "UPDATE deliveries SET locked_until = $1 WHERE seq = ANY($2) AND locked_by = $3 AND state = 'pending'",
                &[&lease.until_ms, &ids, &lease.node],
            )
            .await
            .map_err(pg_error)
            .map(|_| ())
    }

    async fn release(&self, deliveries: &[DeliveryId]) -> StoreResult<()> {
        let ids: Vec<i64> = deliveries.iter().map(|d| d.0).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute(
            "UPDATE deliveries SET locked_until = NULL, locked_by = NULL WHERE seq = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(pg_error)?;
        tx.execute("SELECT pg_notify($1, '')", &[&WORK_CHANNEL])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn release_node(&self, node: &str) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let n = tx
            .execute(
                "UPDATE deliveries SET locked_until = NULL, locked_by = NULL WHERE locked_by = $1",
                &[&node],
            )
            .await
            .map_err(pg_error)?;
        tx.execute(
            "UPDATE recoveries SET locked_until = NULL, locked_by = NULL WHERE locked_by = $1 AND finished_at IS NULL",
            &[&node],
        )
        .await
        .map_err(pg_error)?;
        if n > 0 {
            tx.execute("SELECT pg_notify($1, '')", &[&WORK_CHANNEL])
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn subscribe(&self) -> StoreResult<Option<mpsc::Receiver<StoreSignal>>> {
        let (tx, rx) = mpsc::channel(SIGNAL_QUEUE);
        tokio::spawn(listen(self.config.clone(), self.tls.clone(), tx));
        Ok(Some(rx))
    }

    async fn announce_endpoint_changed(&self, endpoint: &EndpointId) -> StoreResult<()> {
        self.client()
            .await?
            .execute("SELECT pg_notify($1, $2)", &[&ENDPOINT_CHANNEL, &endpoint.as_str()])
            .await
            .map_err(pg_error)
            .map(|_| ())
    }
}

//! The two writes every delivery makes, batched: publishes and attempt
//! records queue up while the database is busy, and whatever has queued goes
//! to PostgreSQL as one statement over arrays (`unnest`). One statement for
//! many rows costs PostgreSQL one parse, one executor start-up and one commit
//! instead of one each per row; at a quiet moment a batch is a single row and
//! waits for nothing.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};

use herald_domain::ids::DeliveryId;

use super::webhook_health as health;
use super::{existing_event, pg_error, pool_error, previous_secret_from, secret_from};
use crate::codec::{delivery_move, headers_json, request_headers_stored};
use crate::model::*;
use crate::plan::{self, split_unique};
use crate::records::{Flush, RecordQueue, Unrun};
use crate::{StoreError, StoreResult};

/// The most publishes in one statement.
pub(super) const PUBLISH_BATCH: usize = 64;
/// Publish statements in flight at once, each on its own connection.
pub(super) const PUBLISH_WORKERS: usize = 1;
/// How many times the publish worker lets other tasks run before it sends a
/// batch, as long as each time brings more publishes. It costs a quiet
/// publish a few microseconds. Nodes sharing the load each see only part of
/// it, so their batches are small. With these yields, three nodes made 7,506
/// publish statements for 60,000 events instead of 10,681, used about 10%
/// less CPU, and kept 94% of one node's rate instead of 84% (means of four
/// alternating rounds of `herald-bench single --store postgres --nodes 1|3
/// --events 60000`).
const PUBLISH_YIELDS: usize = 2;
/// The most attempt records in one statement.
pub(super) const RECORD_BATCH: usize = 256;

pub(super) struct PublishJob {
    pub event: NewEvent,
    pub lease: Lease,
    pub done: oneshot::Sender<StoreResult<PublishOutcome>>,
}

pub(super) type RecordJob = crate::records::Waiting;

/// Runs [`PUBLISH_WORKERS`] workers taking batches of publishes off `jobs`.
/// They end when the store (the last sender) is dropped.
pub(super) fn spawn_publishers(pool: Pool, jobs: mpsc::Receiver<PublishJob>) {
    let jobs = Arc::new(Mutex::new(jobs));
    for _ in 0..PUBLISH_WORKERS {
        let (pool, jobs) = (pool.clone(), jobs.clone());
        tokio::spawn(async move {
            loop {
                let batch = {
                    let mut jobs = jobs.lock().await;
                    let Some(first) = jobs.recv().await else { return };
                    let mut batch = vec![first];
                    take_queued(&mut jobs, &mut batch);
                    // Requests read in the same wakeup as this one may still
                    // be in their handlers: step aside so that they join this
                    // batch rather than wait a whole statement for the next.
                    for _ in 0..PUBLISH_YIELDS {
                        if batch.len() >= PUBLISH_BATCH {
                            break;
                        }
                        tokio::task::yield_now().await;
                        if !take_queued(&mut jobs, &mut batch) {
                            break;
                        }
                    }
                    batch
                };
                for part in split_unique(batch, |job| job.event.id.as_str().to_owned()) {
                    publish_batch(&pool, part).await;
                }
            }
        });
    }
}

/// Moves what has queued into `batch`, up to [`PUBLISH_BATCH`]; whether
/// anything came.
fn take_queued(jobs: &mut mpsc::Receiver<PublishJob>, batch: &mut Vec<PublishJob>) -> bool {
    let before = batch.len();
    while batch.len() < PUBLISH_BATCH {
        match jobs.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    batch.len() > before
}

/// One statement stores the batch's events and makes their deliveries: for
/// each event it checks the team and its account, stores the event unless its
/// id is taken, and makes a leased delivery for every active webhook of the
/// team subscribed to the type ([`plan::subscribes`], asked as `LIKE`
/// [`plan::subscription_like`]). A row per event (its number in the batch, the
/// team's account, whether it was stored) and one per delivery come back.
const PUBLISH_SQL: &str = "
    WITH input AS (
        SELECT i.*, (SELECT account_id FROM teams WHERE teams.id = i.team_id) AS team_account
        FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[], $6::text[], $7::text[], $8::bigint[])
            WITH ORDINALITY AS i(id, team_id, event_type, created_at, body, account_id, pattern, until, n)
    ),
    stored AS (
        INSERT INTO events (id, team_id, event_type, created_at, body)
        SELECT id, team_id, event_type, created_at, body FROM input WHERE team_account = account_id ORDER BY n
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    ),
    subscribed AS (
        SELECT input.n, e.id, e.url, e.secret, e.previous_secret, e.previous_secret_expires_at
        FROM input CROSS JOIN LATERAL (
            SELECT id, url, secret, previous_secret, previous_secret_expires_at FROM endpoints
            WHERE team_id = input.team_id AND kind = 'webhook' AND status = 'active' AND event_types LIKE input.pattern
            OFFSET 0
        ) e
    ),
    made AS (
        INSERT INTO deliveries (event_id, endpoint_id, team_id, state, ordered, attempts, next_attempt_at, locked_until, locked_by, created_at)
        SELECT input.id, subscribed.id, input.team_id, 'pending', FALSE, 0, input.created_at, input.until, $9, input.created_at
        FROM stored JOIN input ON input.id = stored.id JOIN subscribed ON subscribed.n = input.n
        ORDER BY input.n, subscribed.id
        RETURNING seq, event_id, endpoint_id
    )
    SELECT input.n, input.team_account, stored.id IS NOT NULL, NULL::bigint, NULL::text, NULL::text, NULL::text,
        NULL::text, NULL::bigint
    FROM input LEFT JOIN stored ON stored.id = input.id
    UNION ALL
    SELECT input.n, NULL, NULL, made.seq, made.endpoint_id, subscribed.url, subscribed.secret,
        subscribed.previous_secret, subscribed.previous_secret_expires_at
    FROM made JOIN input ON input.id = made.event_id
        JOIN subscribed ON subscribed.n = input.n AND subscribed.id = made.endpoint_id";

/// Publishes `batch` (no id twice) and answers each job.
async fn publish_batch(pool: &Pool, batch: Vec<PublishJob>) {
    let outcomes = match publish_rows(pool, &batch).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            for job in batch {
                let _ = job.done.send(Err(e.clone()));
            }
            return;
        }
    };
    for (job, outcome) in batch.into_iter().zip(outcomes) {
        let outcome = match outcome {
            Some(outcome) => Ok(outcome),
            // Its id was taken (by an earlier publish, or by another process
            // a moment ago): the stored event decides between a replay and a
            // conflict.
            None => existing(pool, &job.event).await,
        };
        let _ = job.done.send(outcome);
    }
}

async fn existing(pool: &Pool, event: &NewEvent) -> StoreResult<PublishOutcome> {
    let client = pool.get().await.map_err(pool_error)?;
    existing_event(&client, event)
        .await?
        .ok_or_else(|| StoreError::Conflict("event id already used".into()))
}

/// The outcome of each job in order; `None` where the id was already taken.
async fn publish_rows(pool: &Pool, batch: &[PublishJob]) -> StoreResult<Vec<Option<PublishOutcome>>> {
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client.prepare_cached(PUBLISH_SQL).await.map_err(pg_error)?;
    let events = batch.iter().map(|job| &job.event);
    let ids: Vec<&str> = events.clone().map(|e| e.id.as_str()).collect();
    let teams: Vec<&str> = events.clone().map(|e| e.team_id.as_str()).collect();
    let types: Vec<&str> = events.clone().map(|e| e.event_type.as_str()).collect();
    let created: Vec<i64> = events.clone().map(|e| e.created_at).collect();
    let bodies: Vec<&[u8]> = events.clone().map(|e| &e.body[..]).collect();
    let accounts: Vec<&str> = events.clone().map(|e| e.account_id.as_str()).collect();
    let patterns: Vec<String> = events.map(|e| plan::subscription_like(e.event_type)).collect();
    let until: Vec<i64> = batch.iter().map(|job| job.lease.until_ms).collect();
    // Every job of one batch comes from this process: one node name.
    let node = batch.first().map(|job| job.lease.node.as_str()).unwrap_or_default();
    let rows = client
        .query(
            &statement,
            &[
                &ids, &teams, &types, &created, &bodies, &accounts, &patterns, &until, &node,
            ],
        )
        .await
        .map_err(pg_error)?;

    let mut heads: Vec<Option<(Option<String>, bool)>> = vec![None; batch.len()];
    let mut made: Vec<Vec<ClaimedDelivery>> = vec![Vec::new(); batch.len()];
    for row in &rows {
        let Some(i) = usize::try_from(row.get::<_, i64>(0) - 1)
            .ok()
            .filter(|i| *i < batch.len())
        else {
            return Err(StoreError::Internal("publish returned a row for no event".into()));
        };
        let event = &batch[i].event;
        match row.get::<_, Option<i64>>(3) {
            None => heads[i] = Some((row.get(1), row.get::<_, Option<bool>>(2).unwrap_or(false))),
            Some(seq) => made[i].push(plan::team_delivery(
                DeliveryId(seq),
                event,
                row.get(4),
                row.get(5),
                secret_from(row.get(6))?,
                previous_secret_from(row, 7)?,
            )),
        }
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    for ((job, head), deliveries) in batch.iter().zip(heads).zip(made) {
        let event = &job.event;
        outcomes.push(match head {
            None | Some((None, _)) => Some(PublishOutcome::UnknownTeam),
            Some((Some(account), _)) if account != event.account_id => Some(PublishOutcome::AccountMismatch),
            Some((Some(_), false)) => None,
            Some((Some(_), true)) => Some(plan::published(event, deliveries)),
        });
    }
    Ok(outcomes)
}

/// Records attempts in batches: whatever has queued up goes into one
/// statement, so a busy engine pays one commit for many attempts. Each caller
/// hears back after the commit. Ends when the store (the last sender) is
/// dropped.
/// How PostgreSQL writes the record queue ([`crate::records`]): a drain is
/// a task that waits its turn (one drain at a time, as one statement after
/// another), takes the queue, and sends it in statements of up to
/// [`RECORD_BATCH`] records.
pub(super) struct PgFlush {
    pool: Pool,
    turn: Arc<Mutex<()>>,
}

impl PgFlush {
    pub(super) fn new(pool: Pool) -> Self {
        Self {
            pool,
            turn: Arc::default(),
        }
    }
}

impl Flush for PgFlush {
    /// How long the first team-webhook attempt record of a batch waits for
    /// others. A record statement costs PostgreSQL about 0.25 ms however few
    /// rows it has (`pg_stat_statements`), and nodes sharing the load each see
    /// only their part of it, so a short gather leaves each node many small
    /// statements: at 2 ms, three nodes made 3.3 times the record statements of
    /// one node for the same events. At 10 ms three nodes kept 82% of one
    /// node's rate against 77% at 2 ms (means of 12 and 9 alternating pairs of
    /// `herald-bench single --store postgres --nodes 1|3 --events 60000`).
    const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

    async fn schedule(&self, queue: Arc<RecordQueue>) -> StoreResult<()> {
        let unrun = Unrun::new(queue);
        let (pool, turn) = (self.pool.clone(), Arc::clone(&self.turn));
        tokio::spawn(async move {
            let _turn = turn.lock().await;
            for mut part in split_unique(unrun.run(), |(record, _)| record.delivery.0) {
                while !part.is_empty() {
                    let rest = part.split_off(part.len().min(RECORD_BATCH));
                    let written = write_records(&pool, &part).await;
                    crate::records::answer(part, &written);
                    part = rest;
                }
            }
        });
        Ok(())
    }
}

/// One statement moves each delivery on and, where it still exists (its
/// endpoint may have been deleted meanwhile), logs the attempt.
const RECORD_SQL: &str = "
    WITH input AS (
        SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[], $13::bigint[], $14::text[], $15::text[],
            $16::int[], $17::text[], $18::bytea[], $19::text[]) WITH ORDINALITY
            AS r(state, attempt, next_at, keep_until, delivery, id, team_id, endpoint_id, event_id, event_type,
                timestamp, status, duration_ms, request_url, request_headers, response_status, response_headers,
                response_body, error, n)
    ),
    moved AS (
        UPDATE deliveries d SET state = r.state, attempts = r.attempt, next_attempt_at = r.next_at,
            locked_until = r.keep_until, locked_by = CASE WHEN r.keep_until IS NULL THEN NULL ELSE d.locked_by END
        FROM input r WHERE d.seq = r.delivery
        RETURNING d.seq, d.manual
    )
    INSERT INTO attempts (id, delivery_seq, team_id, endpoint_id, event_id, event_type, attempt, timestamp, status,
        duration_ms, request_url, request_headers, response_status, response_headers, response_body, error, manual)
    SELECT r.id, moved.seq, r.team_id, r.endpoint_id, r.event_id, r.event_type, r.attempt, r.timestamp, r.status,
        r.duration_ms, r.request_url, r.request_headers, r.response_status, r.response_headers, r.response_body,
        r.error, moved.manual
    FROM input r JOIN moved ON moved.seq = r.delivery
    ORDER BY r.n";

/// How many times a part of a drain is written before its records hear the
/// error (their deliveries are then tried again when their leases run out).
const RECORD_TRIES: usize = 4;

/// Writes part of a drain in one transaction: the records, then what they
/// change in their webhooks' health (hourly stats, failing streak,
/// deactivation, [`health`]), so that all of it is kept or none. Returns
/// the webhooks it deactivated. A deadlock or serialization failure is
/// tried again.
async fn write_records(pool: &Pool, part: &[RecordJob]) -> StoreResult<Vec<String>> {
    let mut tallies = crate::health::tally(part.iter().map(|(record, _)| record));
    tallies.sort_by(|a, b| a.endpoint.cmp(b.endpoint));
    let mut tries = 0;
    loop {
        tries += 1;
        let mut client = pool.get().await.map_err(pool_error)?;
        let written = async {
            let tx = client.transaction().await?;
            health::lock_webhooks(&tx, &tallies).await?;
            record_batch(&tx, part).await?;
            let deactivated = health::account(&tx, &tallies).await?;
            tx.commit().await?;
            Ok(deactivated)
        }
        .await;
        match written {
            Err(e) if tries < RECORD_TRIES && health::is_conflict(&e) => {
                tracing::debug!(error = %e, "attempt records met another transaction; writing them again");
            }
            written => return written.map_err(pg_error),
        }
    }
}

async fn record_batch(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &[RecordJob],
) -> Result<(), tokio_postgres::Error> {
    let statement = tx.prepare_cached(RECORD_SQL).await?;
    let records = || batch.iter().map(|(record, _)| record);
    let moves: Vec<(&str, i64)> = records().map(delivery_move).collect();
    let states: Vec<&str> = moves.iter().map(|m| m.0).collect();
    let next_at: Vec<i64> = moves.iter().map(|m| m.1).collect();
    let attempt: Vec<i32> = records().map(|r| r.attempt as i32).collect();
    let keep_until: Vec<Option<i64>> = records().map(|r| r.keep_lease_until).collect();
    let delivery: Vec<i64> = records().map(|r| r.delivery.0).collect();
    let ids: Vec<&str> = records().map(|r| r.id.as_str()).collect();
    let teams: Vec<&str> = records().map(|r| r.team_id.as_str()).collect();
    let endpoints: Vec<&str> = records().map(|r| r.endpoint_id.as_str()).collect();
    let events: Vec<&str> = records().map(|r| r.event_id.as_str()).collect();
    let types: Vec<&str> = records().map(|r| r.event_type.as_str()).collect();
    let timestamps: Vec<i64> = records().map(|r| r.timestamp_ms).collect();
    let statuses: Vec<&str> = records().map(|r| r.status.as_str()).collect();
    let durations: Vec<i64> = records().map(|r| r.duration_ms).collect();
    let urls: Vec<&str> = records().map(|r| r.request_url.as_str()).collect();
    let request_headers: Vec<String> = records()
        .map(|r| request_headers_stored(&r.request_headers, r.event_id.as_str()))
        .collect();
    let response_status: Vec<Option<i32>> = records()
        .map(|r| r.response.as_ref().map(|x| i32::from(x.status)))
        .collect();
    let response_headers: Vec<Option<String>> = records()
        .map(|r| r.response.as_ref().map(|x| headers_json(&x.headers)))
        .collect();
    let response_body: Vec<Option<&[u8]>> = records()
        .map(|r| r.response.as_ref().map(|x| x.body.as_slice()))
        .collect();
    let errors: Vec<Option<&str>> = records().map(|r| r.error.as_deref()).collect();
    tx.execute(
        &statement,
        &[
            &states,
            &attempt,
            &next_at,
            &keep_until,
            &delivery,
            &ids,
            &teams,
            &endpoints,
            &events,
            &types,
            &timestamps,
            &statuses,
            &durations,
            &urls,
            &request_headers,
            &response_status,
            &response_headers,
            &response_body,
            &errors,
        ],
    )
    .await
    .map(|_| ())
}

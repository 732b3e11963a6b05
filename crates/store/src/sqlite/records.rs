//! SQLite's side of the attempt-record batcher ([`crate::records`]): a
//! drain is a writer job, and its records are written in chunks of several
//! records per statement.

use super::*;

/// How SQLite writes the record queue ([`crate::records`]): a drain is a
/// job on the writer's channel, sharing a savepoint with the publishes
/// beside it, that takes the queue when the writer reaches it.
pub(super) struct SqliteFlush {
    pub(super) writer: pool::Writer,
}

impl Flush for SqliteFlush {
    /// How long a record of a team webhook's attempt waits for others to share
    /// its commit. Each commit writes every page it touches, and a lone record
    /// touches several (the log, its indexes, the delivery and its lease index),
    /// and every WAL rewind holds the writer (10-25 ms on this VM's disk). With
    /// one record per commit, `herald-bench paced` (1,000 events/s for 30 s)
    /// rewound the WAL 8 times; gathered for 3 ms, 5 times, and its p99 went from
    /// 0.89-3.2 ms to 0.44-0.49 ms with a fifth less server CPU. Under full load
    /// the records queue while the writer is busy anyway. Nothing waits on these
    /// records but the log and the delivery's state, so the wait is on no
    /// delivery's path.
    const GATHER: std::time::Duration = std::time::Duration::from_millis(3);

    async fn schedule(&self, queue: Arc<RecordQueue>) -> StoreResult<()> {
        self.writer.submit_shared_run(drain_job(queue)).await
    }
}

/// The write job that takes the queue: its records' results go to their
/// waiters once the batch has committed.
pub(super) fn drain_job(queue: Arc<RecordQueue>) -> pool::Run {
    let unrun = Unrun::new(queue);
    Box::new(move |conn: &Connection| {
        let taken = unrun.run();
        let records: Vec<&AttemptRecord> = taken.iter().map(|(r, _)| r).collect();
        let result = record_many(conn, &records).and_then(|()| account_health(conn, &records));
        let ok = result.is_ok();
        let done: pool::Completion = Box::new(move |commit_error| {
            let written = match commit_error {
                Some(e) => Err(e.clone()),
                None => result,
            };
            crate::records::answer(taken, &written);
        });
        (ok, done)
    })
}

/// Attempt records per statement, largest first. A run of records is cut
/// into chunks of these sizes, so that each size's statement is parsed once
/// and stays in the connection's statement cache.
pub(super) const RECORD_CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// Logs attempts and moves their deliveries on, a chunk of records per
/// statement pair.
///
/// Each attempt joins the log with its delivery's `manual` mark; no delivery
/// row means its endpoint was deleted while the attempt was in flight, and
/// its log went with it, so that record leaves nothing. Both statements are
/// `OR FAIL`: a failure ends the whole batch's transaction or savepoint
/// anyway, so SQLite need not copy each page they touch to a statement
/// journal first. No `RETURNING`: SQLite buffers its rows in a temporary
/// b-tree, opened, zeroed and closed for each statement. One statement for
/// many records pays once for what every statement costs (opening and
/// closing a cursor on each table and index, halting, resetting).
pub(super) fn record_many(c: &Connection, records: &[&AttemptRecord]) -> StoreResult<()> {
    static SQL: OnceLock<Vec<(String, String)>> = OnceLock::new();
    let sql = SQL.get_or_init(|| RECORD_CHUNKS.into_iter().map(record_sql).collect());
    let mut rest = records;
    while !rest.is_empty() {
        let size = chunk_size(rest);
        let (chunk, tail) = rest.split_at(RECORD_CHUNKS[size]);
        record_chunk(c, chunk, &sql[size]).map_err(internal)?;
        rest = tail;
    }
    Ok(())
}

/// The next chunk's size, as an index into [`RECORD_CHUNKS`]: the largest
/// that `rest` fills without holding one delivery twice (an `UPDATE … FROM`
/// would apply only one of its two rows).
pub(super) fn chunk_size(rest: &[&AttemptRecord]) -> usize {
    let distinct = plan::distinct_prefix(rest, |r| r.delivery.0, RECORD_CHUNKS[0]);
    RECORD_CHUNKS
        .iter()
        .position(|&n| n <= distinct)
        .unwrap_or(RECORD_CHUNKS.len() - 1)
}

pub(super) const RECORD_INSERT_COLUMNS: &str =
    "id, delivery_seq, team_id, endpoint_id, event_id, event_type, attempt, timestamp,
    status, duration_ms, request_url, request_headers, response_status, response_headers, response_body, error, manual";

pub(super) const RECORD_INSERT_PARAMS: usize = 16;

pub(super) const RECORD_UPDATE_PARAMS: usize = 5;

/// The statement pair for `n` records: `n` rows of values joined with the
/// deliveries (`CROSS JOIN` keeps the values the outer loop, so the log rows
/// are numbered in the records' order); a lone record binds them directly.
pub(super) fn record_sql(n: usize) -> (String, String) {
    if n == 1 {
        return (
            format!(
                "INSERT OR FAIL INTO attempts ({RECORD_INSERT_COLUMNS})
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, manual
                 FROM deliveries WHERE seq = ?2"
            ),
            "UPDATE OR FAIL deliveries SET state = ?1, attempts = ?2, next_attempt_at = ?3, locked_until = ?4,
                 locked_by = CASE WHEN ?4 IS NULL THEN NULL ELSE locked_by END
             WHERE seq = ?5"
                .to_owned(),
        );
    }
    let rows = |width: usize| {
        let row = format!("({})", vec!["?"; width].join(","));
        vec![row; n].join(",")
    };
    let picked = (1..=RECORD_INSERT_PARAMS)
        .map(|i| format!("v.column{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    (
        format!(
            "INSERT OR FAIL INTO attempts ({RECORD_INSERT_COLUMNS})
             SELECT {picked}, d.manual
             FROM (VALUES {}) AS v CROSS JOIN deliveries AS d ON d.seq = v.column2",
            rows(RECORD_INSERT_PARAMS)
        ),
        format!(
            "UPDATE OR FAIL deliveries SET state = v.column1, attempts = v.column2, next_attempt_at = v.column3,
                 locked_until = v.column4, locked_by = CASE WHEN v.column4 IS NULL THEN NULL ELSE locked_by END
             FROM (VALUES {}) AS v WHERE deliveries.seq = v.column5",
            rows(RECORD_UPDATE_PARAMS)
        ),
    )
}

pub(super) fn record_chunk(c: &Connection, chunk: &[&AttemptRecord], sql: &(String, String)) -> rusqlite::Result<()> {
    let (insert_sql, update_sql) = sql;
    let mut insert = c.prepare_cached(insert_sql)?;
    for (i, r) in chunk.iter().enumerate() {
        let at = i * RECORD_INSERT_PARAMS;
        let response = r.response.as_ref();
        insert.raw_bind_parameter(at + 1, r.id.as_str())?;
        insert.raw_bind_parameter(at + 2, r.delivery.0)?;
        insert.raw_bind_parameter(at + 3, r.team_id.as_str())?;
        insert.raw_bind_parameter(at + 4, r.endpoint_id.as_str())?;
        insert.raw_bind_parameter(at + 5, r.event_id.as_str())?;
        insert.raw_bind_parameter(at + 6, r.event_type.as_str())?;
        insert.raw_bind_parameter(at + 7, r.attempt)?;
        insert.raw_bind_parameter(at + 8, r.timestamp_ms)?;
        insert.raw_bind_parameter(at + 9, r.status.as_str())?;
        insert.raw_bind_parameter(at + 10, r.duration_ms)?;
        insert.raw_bind_parameter(at + 11, r.request_url.as_str())?;
        insert.raw_bind_parameter(at + 12, request_headers_stored(&r.request_headers, r.event_id.as_str()))?;
        insert.raw_bind_parameter(at + 13, response.map(|x| x.status))?;
        insert.raw_bind_parameter(at + 14, response.map(|x| headers_json(&x.headers)))?;
        insert.raw_bind_parameter(at + 15, response.map(|x| x.body.as_slice()))?;
        insert.raw_bind_parameter(at + 16, r.error.as_deref())?;
    }
    insert.raw_execute()?;
    let mut update = c.prepare_cached(update_sql)?;
    for (i, r) in chunk.iter().enumerate() {
        let at = i * RECORD_UPDATE_PARAMS;
        let (state, next_at) = delivery_move(r);
        update.raw_bind_parameter(at + 1, state)?;
        update.raw_bind_parameter(at + 2, r.attempt)?;
        update.raw_bind_parameter(at + 3, next_at)?;
        update.raw_bind_parameter(at + 4, r.keep_lease_until)?;
        update.raw_bind_parameter(at + 5, r.delivery.0)?;
    }
    update.raw_execute()?;
    Ok(())
}

/// The upsert of one (webhook, hour) of [`health::tally`]: `?1` the
/// webhook, `?2` the hour, `?3`-`?5` the counts by status, `?6` the longest
/// attempt, then one count per duration bucket.
fn stats_upsert_sql() -> String {
    let buckets: Vec<String> = (0..health::DURATION_BUCKETS).map(|i| format!("d{i}")).collect();
    let params: Vec<String> = (1..=6 + health::DURATION_BUCKETS).map(|i| format!("?{i}")).collect();
    let added: Vec<String> = ["success", "retrying", "failed"]
        .iter()
        .map(|c| c.to_string())
        .chain(buckets.iter().cloned())
        .map(|c| format!("{c} = {c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO endpoint_stats (endpoint_id, hour, success, retrying, failed, max_ms, {})
         VALUES ({})
         ON CONFLICT (endpoint_id, hour) DO UPDATE SET {}, max_ms = max(max_ms, excluded.max_ms)",
        buckets.join(", "),
        params.join(", "),
        added.join(", ")
    )
}

/// Counts a drain's webhook attempts in their hourly stats, moves each
/// webhook's failing streak, and deactivates the webhooks its records ask
/// to ([`health::tally`]); returns the ids of those deactivated. A statement
/// per webhook and hour of the drain, not per record.
pub(super) fn account_health(c: &Connection, records: &[&AttemptRecord]) -> StoreResult<Vec<String>> {
    static STATS_SQL: OnceLock<String> = OnceLock::new();
    let tallies = health::tally(records.iter().copied());
    let mut deactivated = Vec::new();
    if tallies.is_empty() {
        return Ok(deactivated);
    }
    let mut upsert = c
        .prepare_cached(STATS_SQL.get_or_init(stats_upsert_sql))
        .map_err(internal)?;
    for tally in &tallies {
        for hour in &tally.hours {
            upsert.raw_bind_parameter(1, tally.endpoint).map_err(internal)?;
            let counts = [hour.start_ms, hour.success, hour.retrying, hour.failed, hour.max_ms];
            for (i, value) in counts.iter().chain(hour.durations.iter()).enumerate() {
                upsert.raw_bind_parameter(i + 2, value).map_err(internal)?;
            }
            upsert.raw_execute().map_err(internal)?;
        }
        let (reset, at) = match tally.failing_since() {
            StreakMove::Set(at) => (true, at),
            StreakMove::IfUnset(at) => (false, Some(at)),
            StreakMove::Unchanged => (false, None),
        };
        if reset || at.is_some() {
            c.prepare_cached(
                "UPDATE endpoints SET failing_since = CASE WHEN ?2 THEN ?3 ELSE coalesce(failing_since, ?3) END
                 WHERE id = ?1 AND failing_since IS NOT (CASE WHEN ?2 THEN ?3 ELSE coalesce(failing_since, ?3) END)",
            )
            .and_then(|mut s| s.execute(params![tally.endpoint, reset, at]))
            .map_err(internal)?;
        }
        if let Some(deactivation) = tally.deactivate {
            let (reason, by) = match deactivation {
                Deactivation::Now(reason) => (reason, None),
                Deactivation::FailingSince { by_ms, reason } => (reason, Some(*by_ms)),
            };
            let changed = c
                .prepare_cached(
                    "UPDATE endpoints SET status = 'deactivated', deactivated_reason = ?2
                     WHERE id = ?1 AND status = 'active' AND (?3 IS NULL OR failing_since <= ?3)",
                )
                .and_then(|mut s| s.execute(params![tally.endpoint, reason, by]))
                .map_err(internal)?;
            if changed > 0 {
                deactivated.push(tally.endpoint.to_owned());
            }
        }
    }
    Ok(deactivated)
}

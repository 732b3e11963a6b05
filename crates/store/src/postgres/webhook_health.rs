//! What a drain of attempt records changes in its webhooks' health, written
//! in the records' own transaction ([`batch`](super::batch)): the hourly
//! stats, the failing streak and the deactivations the records ask for
//! ([`crate::health::tally`]). Each transaction locks the webhook rows it
//! will change first, in id order, then the (webhook, hour) stats rows in
//! that order: two nodes' drains, and a webhook's deletion (webhook row,
//! then its deliveries and stats), take their locks in the same order.

use deadpool_postgres::Transaction;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::health::{DURATION_BUCKETS, EndpointTally, StreakMove};
use crate::model::{Deactivation, HourStats};

/// A deadlock or a serialization failure: the transaction was undone and
/// may be tried again.
pub(super) fn is_conflict(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

/// Locks the rows of the webhooks whose streak or status the tallies may
/// change, in id order (`tallies` are sorted by webhook).
pub(super) async fn lock_webhooks(
    tx: &Transaction<'_>,
    tallies: &[EndpointTally<'_>],
) -> Result<(), tokio_postgres::Error> {
    let ids: Vec<&str> = tallies
        .iter()
        .filter(|t| t.deactivate.is_some() || !matches!(t.failing_since(), StreakMove::Unchanged))
        .map(|t| t.endpoint)
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let statement = tx
        .prepare_cached("SELECT 1 FROM endpoints WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .await?;
    tx.execute(&statement, &[&ids]).await.map(|_| ())
}

/// The upsert of a drain's (webhook, hour) counts, one row per element of
/// its arrays: webhook, hour, counts by status, the longest attempt, then
/// one array per duration bucket.
fn stats_upsert_sql() -> String {
    let buckets: Vec<String> = (0..DURATION_BUCKETS).map(|i| format!("d{i}")).collect();
    let arrays: Vec<String> = (1..=6 + DURATION_BUCKETS)
        .map(|i| format!("${i}::{}[]", if i == 1 { "text" } else { "bigint" }))
        .collect();
    let added: Vec<String> = ["success", "retrying", "failed"]
        .iter()
        .map(|c| c.to_string())
        .chain(buckets.iter().cloned())
        .map(|c| format!("{c} = s.{c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO endpoint_stats AS s (endpoint_id, hour, success, retrying, failed, max_ms, {})
         SELECT * FROM unnest({})
         ON CONFLICT (endpoint_id, hour) DO UPDATE SET {}, max_ms = GREATEST(s.max_ms, excluded.max_ms)",
        buckets.join(", "),
        arrays.join(", "),
        added.join(", ")
    )
}

/// Moves each webhook's failing streak as [`StreakMove`] says (`reset`
/// sets it to `at`, else `at` only starts one), writing only what changes.
const FAILING_SINCE_SQL: &str = "
    UPDATE endpoints e SET failing_since = CASE WHEN u.reset THEN u.at ELSE COALESCE(e.failing_since, u.at) END
    FROM unnest($1::text[], $2::bool[], $3::bigint[]) AS u(id, reset, at)
    WHERE e.id = u.id
        AND e.failing_since IS DISTINCT FROM (CASE WHEN u.reset THEN u.at ELSE COALESCE(e.failing_since, u.at) END)";

const DEACTIVATE_SQL: &str = "
    UPDATE endpoints SET status = 'deactivated', deactivated_reason = $2
    WHERE id = $1 AND status = 'active' AND ($3::bigint IS NULL OR failing_since <= $3)";

/// Counts the tallied attempts in their webhooks' hourly stats, moves each
/// webhook's failing streak, and deactivates the webhooks the records ask
/// to; returns the ids of those deactivated. `tallies` are sorted by
/// webhook, so the stats rows are written in (webhook, hour) order.
pub(super) async fn account(
    tx: &Transaction<'_>,
    tallies: &[EndpointTally<'_>],
) -> Result<Vec<String>, tokio_postgres::Error> {
    if tallies.is_empty() {
        return Ok(Vec::new());
    }
    let hours: Vec<(&str, &HourStats)> = tallies
        .iter()
        .flat_map(|t| {
            let mut hours: Vec<&HourStats> = t.hours.iter().collect();
            hours.sort_by_key(|h| h.start_ms);
            hours.into_iter().map(move |h| (t.endpoint, h))
        })
        .collect();
    let endpoints: Vec<&str> = hours.iter().map(|(e, _)| *e).collect();
    let column = |f: &dyn Fn(&HourStats) -> i64| -> Vec<i64> { hours.iter().map(|(_, h)| f(h)).collect() };
    let mut columns: Vec<Vec<i64>> = vec![
        column(&|h| h.start_ms),
        column(&|h| h.success),
        column(&|h| h.retrying),
        column(&|h| h.failed),
        column(&|h| h.max_ms),
    ];
    for i in 0..DURATION_BUCKETS {
        columns.push(column(&|h| h.durations[i]));
    }
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&endpoints];
    params.extend(columns.iter().map(|c| c as &(dyn ToSql + Sync)));
    static STATS_SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let upsert = tx.prepare_cached(STATS_SQL.get_or_init(stats_upsert_sql)).await?;
    tx.execute(&upsert, &params).await?;

    let mut ids = Vec::new();
    let mut resets = Vec::new();
    let mut ats: Vec<Option<i64>> = Vec::new();
    for tally in tallies {
        let (reset, at) = match tally.failing_since() {
            StreakMove::Set(at) => (true, at),
            StreakMove::IfUnset(at) => (false, Some(at)),
            StreakMove::Unchanged => continue,
        };
        ids.push(tally.endpoint);
        resets.push(reset);
        ats.push(at);
    }
    if !ids.is_empty() {
        let statement = tx.prepare_cached(FAILING_SINCE_SQL).await?;
        tx.execute(&statement, &[&ids, &resets, &ats]).await?;
    }
    let mut deactivated = Vec::new();
    for tally in tallies {
        let Some(deactivation) = tally.deactivate else { continue };
        let (reason, by): (&str, Option<i64>) = match deactivation {
            Deactivation::Now(reason) => (reason, None),
            Deactivation::FailingSince { by_ms, reason } => (reason, Some(*by_ms)),
        };
        if tx.execute(DEACTIVATE_SQL, &[&tally.endpoint, &reason, &by]).await? > 0 {
            deactivated.push(tally.endpoint.to_owned());
        }
    }
    Ok(deactivated)
}

//! Retention (contract §7.1): one batch of old events at a time, as one
//! background writer job that runs only when no other job is queued, so
//! that a publish waits for one short batch at most. SQLite reuses the pages it frees, so the file stops growing once
//! retention keeps up with the traffic.

use super::*;

/// The ids as a JSON array, which `json_each` reads as a list.
fn json_list(ids: &[&str]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())
}

pub(super) fn prune_events_in(c: &Connection, cutoff_ms: i64, after: i64, limit: usize) -> StoreResult<Pruned> {
    let scanned: Vec<(i64, String, i64)> = c
        .prepare_cached("SELECT seq, id, created_at FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
        .and_then(|mut s| {
            s.query_map(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(internal)?;
    let old: Vec<&(i64, String, i64)> = scanned.iter().take_while(|(_, _, at)| *at < cutoff_ms).collect();
    let more = old.len() == limit;
    let after = old.last().map_or(after, |(seq, ..)| *seq);
    if old.is_empty() {
        return Ok(Pruned {
            events: 0,
            kept: 0,
            after,
            more,
        });
    }
    let ids: Vec<&str> = old.iter().map(|(_, id, _)| id.as_str()).collect();
    let pending: Vec<String> = c
        .prepare_cached(
            "SELECT DISTINCT event_id FROM deliveries INDEXED BY deliveries_event
             WHERE event_id IN (SELECT value FROM json_each(?1)) AND state = 'pending'",
        )
        .and_then(|mut s| s.query_map([json_list(&ids)], |r| r.get(0))?.collect())
        .map_err(internal)?;
    let gone: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| !pending.iter().any(|p| p == id))
        .collect();
    let gone_json = json_list(&gone);
    for sql in [
        "DELETE FROM attempts WHERE event_id IN (SELECT value FROM json_each(?1))",
        "DELETE FROM deliveries WHERE event_id IN (SELECT value FROM json_each(?1))",
        "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?1))",
    ] {
        c.prepare_cached(sql)
            .and_then(|mut s| s.execute([&gone_json]))
            .map_err(internal)?;
    }
    Ok(Pruned {
        events: gone.len(),
        kept: pending.len(),
        after,
        more,
    })
}

pub(super) fn prune_history_in(c: &Connection, cutoff_ms: i64) -> StoreResult<u64> {
    let stats = c
        .execute(
            "DELETE FROM endpoint_stats WHERE hour < ?1",
            [crate::health::hour_of(cutoff_ms)],
        )
        .map_err(internal)?;
    let recoveries = c
        .execute(
            "DELETE FROM recoveries WHERE finished_at IS NOT NULL AND finished_at < ?1",
            [cutoff_ms],
        )
        .map_err(internal)?;
    Ok((stats + recoveries) as u64)
}

#[async_trait]
impl Retention for SqliteStore {
    async fn prune_events(&self, cutoff_ms: i64, after: i64, limit: usize) -> StoreResult<Pruned> {
        self.conns
            .write_when_idle(move |c| prune_events_in(c, cutoff_ms, after, limit))
            .await
    }

    async fn prune_history(&self, cutoff_ms: i64) -> StoreResult<u64> {
        self.conns
            .write_when_idle(move |c| prune_history_in(c, cutoff_ms))
            .await
    }
}

//! Retention (contract §7.1) on PostgreSQL: one node at a time (a
//! transaction-scoped advisory lock per batch), one small batch per
//! transaction, in the events' insertion order. The batch locks its events
//! first (in that order); a resend or a recover locks the events it sends
//! again (`FOR KEY SHARE`), so an event is either deleted with everything of
//! it or kept with the new delivery, never left half. Autovacuum reclaims
//! the deleted rows (schema 8 starts it at 2 % dead rows on these tables).

use super::*;

/// Arbitrary, fixed: the advisory lock of the node that prunes.
const RETENTION_LOCK: i64 = 0x6865_7261_6c66;

#[async_trait]
impl Retention for PgStore {
    async fn prune_events(&self, cutoff_ms: i64, after: i64, limit: usize) -> StoreResult<Pruned> {
        let idle = Pruned {
            events: 0,
            kept: 0,
            after,
            more: false,
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let ours: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&RETENTION_LOCK])
            .await
            .map_err(pg_error)?
            .get(0);
        if !ours {
            // Another node prunes now.
            return Ok(idle);
        }
        let scanned = tx
            .query(
                "SELECT seq, id, created_at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2 FOR UPDATE",
                &[&after, &(limit as i64)],
            )
            .await
            .map_err(pg_error)?;
        let old: Vec<(i64, String)> = scanned
            .iter()
            .take_while(|r| r.get::<_, i64>(2) < cutoff_ms)
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let more = old.len() == limit;
        let after = old.last().map_or(after, |(seq, _)| *seq);
        if old.is_empty() {
            return Ok(Pruned { after, more, ..idle });
        }
        let ids: Vec<&str> = old.iter().map(|(_, id)| id.as_str()).collect();
        let pending: Vec<String> = tx
            .query(
                "SELECT DISTINCT event_id FROM deliveries WHERE event_id = ANY($1) AND state = 'pending'",
                &[&ids],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let gone: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !pending.iter().any(|p| p == id))
            .collect();
        for sql in [
            "DELETE FROM attempts WHERE event_id = ANY($1)",
            "DELETE FROM deliveries WHERE event_id = ANY($1)",
            "DELETE FROM events WHERE id = ANY($1)",
        ] {
            tx.execute(sql, &[&gone]).await.map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(Pruned {
            events: gone.len(),
            kept: pending.len(),
            after,
            more,
        })
    }

    async fn prune_history(&self, cutoff_ms: i64) -> StoreResult<u64> {
        let client = self.client().await?;
        let stats = client
            .execute(
                "DELETE FROM endpoint_stats WHERE hour < $1",
                &[&health::hour_of(cutoff_ms)],
            )
            .await
            .map_err(pg_error)?;
        let recoveries = client
            .execute(
                "DELETE FROM recoveries WHERE finished_at IS NOT NULL AND finished_at < $1",
                &[&cutoff_ms],
            )
            .await
            .map_err(pg_error)?;
        Ok(stats + recoveries)
    }
}

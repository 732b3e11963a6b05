//! Retention (contract §7.1, `HERALD_RETENTION`): every round deletes the
//! events older than the retention, with their deliveries and attempts, a
//! small batch at a time with a pause between batches so that publishes
//! never wait behind it for long; then the hourly stats and finished
//! recovers older than it (those at most once a minute: stats are kept by
//! the hour). A round runs every tenth of the retention, at most every
//! second, so that the work comes in small, even portions and an event
//! goes within seconds of passing it. The store decides what may go
//! ([`herald_store::Retention`]).

use std::sync::Arc;
use std::time::Duration;

use herald_store::Retention;
use tokio_util::sync::CancellationToken;

/// Events per batch: one batch is one short write, which on SQLite runs only
/// when no publish or record is queued, but which a publish arriving during
/// it waits for. With 500 a batch (in the writer's queue like any job), a
/// steady 1,000 events/s had a p99 of 2.4 ms against 1.1 ms before
/// retention started deleting; with 100, 1.4-2.8 ms (`herald-bench soak`,
/// docs/performance.md).
const BATCH: usize = 25;
/// Between batches the writer is the traffic's. At 25 events a batch this
/// still deletes several thousand events a second.
const PAUSE: Duration = Duration::from_millis(2);
/// How often the hourly stats and finished recovers are pruned.
const HISTORY_EVERY: Duration = Duration::from_secs(60);

pub(crate) async fn run(store: Arc<dyn Retention>, retention: Duration, shutdown: CancellationToken) {
    let every = (retention / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut history_due = tokio::time::Instant::now();
    loop {
        // The wall clock events are stamped with when accepted.
        let cutoff = herald_engine::now_ms() - retention.as_millis() as i64;
        round(store.as_ref(), cutoff, &shutdown).await;
        if tokio::time::Instant::now() >= history_due {
            history_due = tokio::time::Instant::now() + HISTORY_EVERY;
            if let Err(e) = store.prune_history(cutoff).await {
                tracing::warn!(error = %e, "retention could not delete old stats and recovers; it tries again later");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn round(store: &dyn Retention, cutoff: i64, shutdown: &CancellationToken) {
    let (mut after, mut deleted, mut kept) = (0, 0, 0);
    loop {
        match store.prune_events(cutoff, after, BATCH).await {
            Ok(pruned) => {
                deleted += pruned.events;
                kept += pruned.kept;
                after = pruned.after;
                if !pruned.more {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention could not delete old events; it tries again next round");
                return;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PAUSE) => {}
        }
    }
    if deleted > 0 {
        tracing::debug!(events = deleted, kept_pending = kept, "retention deleted old events");
    }
}

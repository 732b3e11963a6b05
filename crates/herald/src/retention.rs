//! Retention (contract §7.1, `HERALD_RETENTION`): every round deletes the
//! events older than the retention, with their deliveries and attempts, a
//! small batch at a time with a pause between batches so that publishes
//! never wait behind it for long; then the hourly stats and finished
//! recovers older than it. A round runs every tenth of the retention, at
//! most every 10 s, so that an event goes well within a minute of passing
//! it. The store decides what may go ([`herald_store::Retention`]).

use std::sync::Arc;
use std::time::Duration;

use herald_engine::Clock;
use herald_store::Retention;
use tokio_util::sync::CancellationToken;

/// Events per batch: one batch is one short write (a few milliseconds).
const BATCH: usize = 500;
/// Between batches the writer is the traffic's.
const PAUSE: Duration = Duration::from_millis(20);

pub(crate) async fn run(store: Arc<dyn Retention>, retention: Duration, clock: Clock, shutdown: CancellationToken) {
    let every = (retention / 10).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        round(store.as_ref(), retention, &clock, &shutdown).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn round(store: &dyn Retention, retention: Duration, clock: &Clock, shutdown: &CancellationToken) {
    let cutoff = clock.now_ms() - retention.as_millis() as i64;
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
    if let Err(e) = store.prune_history(cutoff).await {
        tracing::warn!(error = %e, "retention could not delete old stats and recovers; it tries again next round");
    }
    if deleted > 0 {
        tracing::debug!(events = deleted, kept_pending = kept, "retention deleted old events");
    }
}

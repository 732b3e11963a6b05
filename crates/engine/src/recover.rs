//! Works recovers (contract §4.1): the store holds each recover and how far
//! it has got; this loop leases one, makes its deliveries a chunk at a time
//! and hands them to the webhook's queue like any other delivery, so they go
//! at the webhook's own concurrency. The next chunk is made only once the
//! queue has sent most of the last, so a recover of any size never fills
//! the in-memory window or holds up other webhooks, and whatever it has
//! not made yet is still in the store if the process dies: another process
//! (or this one, restarted) takes the recover over when its lease runs out.
//! Recovers are catch-up work: together they make at most
//! [`EngineConfig::recover_rate_per_s`](crate::EngineConfig) deliveries a
//! second, so that live traffic keeps its latency while one runs.

use std::time::Duration;

use herald_store::Recovery;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{Engine, now_ms};

/// How often each process looks for recovers nobody works (one query).
const POLL: Duration = Duration::from_secs(1);
/// How often a worked recover's queue is looked at while it drains.
const PACE: Duration = Duration::from_millis(10);

/// Asked-for recovers, so that this process starts on one at once.
#[derive(Debug, Default)]
pub struct RecoverWake(Notify);

impl RecoverWake {
    pub(crate) fn wake(&self) {
        self.0.notify_one();
    }
}

/// Deliveries per chunk: enough to keep the webhook's attempts all busy
/// while the next chunk is made, few enough that writing one holds the
/// store's writer (and the publishes queued behind it) only briefly.
fn chunk_size(engine: &Engine) -> usize {
    (engine.config.per_endpoint_in_flight * 2).clamp(16, 256)
}

pub(crate) async fn run(engine: Engine, shutdown: CancellationToken) {
    loop {
        loop {
            let lease = engine.new_lease();
            match engine.store.claim_recovery(&lease, now_ms()).await {
                // After a failed write, wait before trying again.
                Ok(Some(recovery)) => {
                    if !work(&engine, recovery, &shutdown).await {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for recovers to work");
                    break;
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = engine.recovers.0.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Makes a recover's deliveries chunk by chunk until it is finished, its
/// webhook is deactivated (it waits in the store), another process holds it
/// or the process stops. `false` when a write failed.
async fn work(engine: &Engine, recovery: Recovery, shutdown: &CancellationToken) -> bool {
    let size = chunk_size(engine);
    let renew_every = engine.config.lease / 3;
    let rate = engine.config.recover_rate_per_s.max(1.0);
    let started = tokio::time::Instant::now();
    let mut made_so_far = 0usize;
    tracing::info!(recovery_id = %recovery.id, endpoint_id = %recovery.endpoint_id, total = recovery.total, "recover started");
    loop {
        // Wait until most of the last chunk is sent and the window has room,
        // keeping the recover's lease alive meanwhile (a chunk of none only
        // renews it).
        let mut renewed = tokio::time::Instant::now();
        // Not ahead of the rate: the next chunk may start once the ones made
        // so far have had their share of time.
        let due = started + Duration::from_secs_f64(made_so_far as f64 / rate);
        while engine.dispatcher.queued(&recovery.endpoint_id) > size / 2
            || engine.dispatcher.room() < 2 * size
            || tokio::time::Instant::now() < due
        {
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                _ = tokio::time::sleep(PACE) => {}
            }
            if renewed.elapsed() >= renew_every {
                renewed = tokio::time::Instant::now();
                if let Err(e) = engine
                    .store
                    .recover_chunk(&recovery.id, 0, &engine.new_lease(), now_ms())
                    .await
                {
                    tracing::warn!(error = %e, recovery_id = %recovery.id, "could not renew a recover's lease");
                }
            }
        }
        let chunk = match engine
            .store
            .recover_chunk(&recovery.id, size, &engine.new_lease(), now_ms())
            .await
        {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::warn!(error = %e, recovery_id = %recovery.id, "could not make a recover's deliveries; it is taken up again later");
                return false;
            }
        };
        let made = chunk.deliveries.len();
        made_so_far += made;
        engine.enqueue(chunk.deliveries).await;
        if chunk.finished {
            tracing::info!(recovery_id = %recovery.id, endpoint_id = %recovery.endpoint_id, "recover finished");
            return true;
        }
        if made == 0 {
            // Its webhook is deactivated (the recover waits in the store), or
            // another process holds it now.
            return true;
        }
    }
}

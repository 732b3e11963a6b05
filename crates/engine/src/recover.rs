//! Works recovers (contract §4.1): the store holds each recover and how far
//! it has got; this loop leases them, makes their deliveries a chunk at a
//! time and hands them to each webhook's queue like any other delivery, so
//! they go at the webhook's own concurrency. A recover's next chunk is made
//! only once its queue has sent most of the last, so a recover of any size
//! never fills the in-memory window or holds up other webhooks, and
//! whatever it has not made yet is still in the store if the process dies:
//! another process (or this one, restarted) takes the recover over when its
//! lease runs out.
//! Up to [`AT_ONCE`] recovers are worked side by side, so that one team's
//! long recover does not keep another's waiting. Recovers are catch-up
//! work: together they make at most
//! [`EngineConfig::recover_rate_per_s`](crate::EngineConfig) deliveries a
//! second, shared out chunk by chunk in the order they ask, so that live
//! traffic keeps its latency while they run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_domain::ids::RecoveryId;
use herald_store::Recovery;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Engine, now_ms};

/// How often each process looks for recovers nobody works (one query).
const POLL: Duration = Duration::from_secs(1);
/// How often a worked recover's queue is looked at while it drains.
const PACE: Duration = Duration::from_millis(10);
/// The most recovers one process works at a time; more wait in the store
/// (or are taken by other processes).
const AT_ONCE: usize = 16;

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

/// The recovers' shared rate: each chunk books its place in time, after
/// the chunks booked before it, so that recovers take turns.
struct Pace {
    per_delivery: Duration,
    next: Mutex<Instant>,
}

impl Pace {
    fn new(rate_per_s: f64) -> Self {
        Self {
            per_delivery: Duration::from_secs_f64(1.0 / rate_per_s.max(1.0)),
            next: Mutex::new(Instant::now()),
        }
    }

    /// When a chunk of `n` deliveries asked for now may be made. Time no
    /// chunk used is not saved up for later bursts.
    fn book(&self, n: usize) -> Instant {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = (*next).max(now);
        *next = at + self.per_delivery * n as u32;
        at
    }
}

pub(crate) async fn run(engine: Engine, shutdown: CancellationToken) {
    let pace = Arc::new(Pace::new(engine.config.recover_rate_per_s));
    let mut working: JoinSet<bool> = JoinSet::new();
    // The recovers worked here, by the task working each.
    let mut held: Vec<(tokio::task::Id, RecoveryId)> = Vec::new();
    // After a failed write, no new recover is taken before this.
    let mut calm_until = Instant::now();
    loop {
        while working.len() < AT_ONCE && Instant::now() >= calm_until {
            let lease = engine.new_lease();
            let ids: Vec<RecoveryId> = held.iter().map(|(_, id)| id.clone()).collect();
            match engine.store.claim_recovery(&lease, now_ms(), &ids).await {
                Ok(Some(recovery)) => {
                    let id = recovery.id.clone();
                    let (engine, pace, shutdown) = (engine.clone(), Arc::clone(&pace), shutdown.clone());
                    let task = working.spawn(async move { work(&engine, recovery, &pace, &shutdown).await });
                    held.push((task.id(), id));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for recovers to work");
                    calm_until = Instant::now() + POLL;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                while working.join_next().await.is_some() {}
                return;
            }
            Some(done) = working.join_next_with_id(), if !working.is_empty() => {
                let task = match &done {
                    Ok((task, _)) => *task,
                    Err(e) => e.id(),
                };
                held.retain(|(t, _)| *t != task);
                match done {
                    Ok((_, true)) => {}
                    Ok((_, false)) => calm_until = Instant::now() + POLL,
                    // Only a bug makes a recover's task panic: the recover is
                    // taken again after a pause, like after a failed write.
                    Err(e) => {
                        tracing::error!(error = %e, "a recover's task ended without an answer");
                        calm_until = Instant::now() + POLL;
                    }
                }
            }
            _ = engine.recovers.0.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Makes a recover's deliveries chunk by chunk until it is finished, its
/// webhook is deactivated (it waits in the store), another process holds it
/// or the process stops. `false` when a write failed.
async fn work(engine: &Engine, recovery: Recovery, pace: &Pace, shutdown: &CancellationToken) -> bool {
    let size = chunk_size(engine);
    let renew_every = engine.config.lease / 3;
    tracing::info!(recovery_id = %recovery.id, endpoint_id = %recovery.endpoint_id, total = recovery.total, "recover started");
    let mut renewed = Instant::now();
    loop {
        // Wait until most of the last chunk is sent and the window has
        // room, then for this chunk's turn, keeping the recover's lease
        // alive meanwhile (a chunk of none only renews it).
        let mut turn = None;
        loop {
            let ready =
                engine.dispatcher.queued(&recovery.endpoint_id) <= size / 2 && engine.dispatcher.room() >= 2 * size;
            if ready && turn.is_none() {
                turn = Some(pace.book(size));
            }
            if turn.is_some_and(|at| Instant::now() >= at) {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                _ = tokio::time::sleep(PACE) => {}
            }
            if renewed.elapsed() >= renew_every {
                renewed = Instant::now();
                if let Err(e) = engine
                    .store
                    .recover_chunk(&recovery.id, 0, &engine.new_lease(), now_ms())
                    .await
                {
                    tracing::warn!(error = %e, recovery_id = %recovery.id, "could not renew a recover's lease");
                }
            }
        }
        renewed = Instant::now();
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

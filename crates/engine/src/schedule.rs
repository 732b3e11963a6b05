//! The scheduler: claims due work from the store, without polling.
//!
//! It sleeps until the earliest moment anything can be due: the earliest
//! `next_attempt_at` in the store, or an earlier time announced through
//! [`Wakeup::wake_at`] when an attempt schedules a retry, capped by the slow
//! safety-net sweep. When it wakes it claims due deliveries in batches, with a
//! lease, as far as the in-memory window has room.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{Engine, now_ms};

const CLAIM_BATCH: usize = 500;

/// How long to wait before trying again when the window is full or the
/// store is failing: short enough to keep retries on schedule.
const BACKOFF: Duration = Duration::from_millis(50);

/// The longest pause between tries while the store is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Announcements of new due times to the scheduler.
#[derive(Debug, Default)]
pub struct Wakeup {
    earliest: Mutex<Option<i64>>,
    notify: Notify,
}

impl Wakeup {
    /// Something becomes due at `at_ms`; wakes the scheduler if that is
    /// earlier than anything it knew of.
    pub fn wake_at(&self, at_ms: i64) {
        let mut earliest = self.earliest.lock().unwrap_or_else(|p| p.into_inner());
        if earliest.is_none_or(|e| at_ms < e) {
            *earliest = Some(at_ms);
            drop(earliest);
            self.notify.notify_one();
        }
    }

    fn take(&self) -> Option<i64> {
        self.earliest.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

pub(crate) async fn run(engine: Engine, shutdown: CancellationToken) {
    let sweep_ms = engine.config.sweep_interval.as_millis() as i64;
    // Start with a claim: there may be work left from a previous run.
    let mut deadline = now_ms();
    // Grows while the store keeps failing, so an outage is not a busy loop.
    let mut failing = BACKOFF;
    loop {
        let wait = Duration::from_millis((deadline - now_ms()).max(0) as u64);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = engine.wakeup.notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        let hinted = engine.wakeup.take();
        let now = now_ms();
        if hinted.is_some_and(|at| at > now) && deadline > now {
            // Woken for a time still ahead: just move the alarm.
            deadline = deadline.min(hinted.unwrap_or(deadline));
            continue;
        }
        let next = match claim_due(&engine).await {
            Ok(true) => Ok(now_ms() + BACKOFF.as_millis() as i64),
            Ok(false) => match engine.store.next_due_at(now_ms()).await {
                Ok(next) => Ok(next.unwrap_or(i64::MAX).min(now_ms() + sweep_ms)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the next due time");
                    Err(())
                }
            },
            Err(()) => Err(()),
        };
        deadline = match next {
            Ok(at) => {
                failing = BACKOFF;
                at
            }
            Err(()) => {
                failing = (failing * 2).min(MAX_BACKOFF);
                now_ms() + failing.as_millis() as i64
            }
        };
        if let Some(at) = hinted.filter(|at| *at > now) {
            deadline = deadline.min(at);
        }
    }
}

/// Claims due work while there is room: unordered deliveries first, then runs
/// of ordered endpoints. Returns whether it stopped for lack of room or with
/// more possibly ready (so it should look again soon), or `Err` if the store
/// failed.
async fn claim_due(engine: &Engine) -> Result<bool, ()> {
    loop {
        let room = engine.dispatcher.room();
        if room == 0 {
            return Ok(true);
        }
        let limit = room.min(CLAIM_BATCH);
        let lease = engine.new_lease();
        match engine.store.claim_due(now_ms(), limit, &lease).await {
            Ok(claimed) => {
                let full_batch = claimed.len() == limit;
                engine.dispatcher.enqueue_claimed(claimed, engine.config.ordered_run);
                if !full_batch {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim due deliveries; retrying shortly");
                return Err(());
            }
        }
    }
    let run = engine.config.ordered_run;
    let room = engine.dispatcher.room();
    if room == 0 {
        return Ok(true);
    }
    let endpoints = (room / run).clamp(1, CLAIM_BATCH);
    match engine
        .store
        .claim_ordered(now_ms(), endpoints, run, &engine.new_lease())
        .await
    {
        Ok(claimed) => {
            let mut distinct = claimed.iter().map(|d| &d.endpoint_id).collect::<Vec<_>>();
            distinct.dedup();
            let more = distinct.len() == endpoints;
            engine.dispatcher.enqueue_claimed(claimed, run);
            Ok(more)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot claim ordered deliveries; retrying shortly");
            Err(())
        }
    }
}

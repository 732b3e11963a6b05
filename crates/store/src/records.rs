//! The one attempt-record batcher of both backends. Every attempt writes a
//! record (the log row and the delivery's next state); a record into a queue
//! with no drain scheduled schedules one: at once when the endpoint's next
//! delivery waits for it ([`plan::record_is_urgent`]), after the backend's
//! [`Flush::GATHER`] otherwise, so that the records of that time share one
//! statement and one commit. The drain, when it runs, takes every record
//! queued by then; a record arriving after that schedules the next. The
//! queue is bounded by the attempts in flight, each waiting here. Each
//! backend says only how a drain is run and written ([`Flush`]).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::model::{AttemptRecord, Recorded};
use crate::plan;
use crate::{StoreError, StoreResult};

/// A queued record and the waiter for its result.
pub(crate) type Waiting = (AttemptRecord, oneshot::Sender<StoreResult<Recorded>>);

/// Answers the waiters of a written drain: `deactivated` names the webhooks
/// its records deactivated (each of their records hears it), or the error
/// every record of the drain hears.
pub(crate) fn answer(taken: Vec<Waiting>, written: &StoreResult<Vec<String>>) {
    for (record, waiter) in taken {
        let _ = waiter.send(written.as_ref().map_err(Clone::clone).map(|deactivated| Recorded {
            deactivated: deactivated.iter().any(|id| id == record.endpoint_id.as_str()),
        }));
    }
}

/// How a backend writes what the queue gathered.
pub(crate) trait Flush: Send + Sync + 'static {
    /// How long a record that is not urgent waits for others.
    const GATHER: Duration;

    /// Schedules a drain of `queue`: when it runs it calls
    /// [`RecordQueue::take`] and answers each waiter once its records are
    /// written. Returns once the drain is scheduled; a drain that cannot be
    /// scheduled, or is dropped unrun, must still empty the queue (hold an
    /// [`Unrun`] until it runs) so that its waiters hear it.
    fn schedule(&self, queue: Arc<RecordQueue>) -> impl Future<Output = StoreResult<()>> + Send;
}

/// The records waiting for a drain.
#[derive(Default)]
pub(crate) struct RecordQueue(Mutex<Pending>);

#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) records: Vec<Waiting>,
    /// A drain is scheduled and has not taken the queue yet.
    pub(crate) job_queued: bool,
    /// A gather timer is running and will schedule a drain if none is.
    pub(crate) gathering: bool,
}

/// What a record asks of its queue once it is in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A drain is scheduled, or a timer will schedule one.
    Nothing,
    /// Schedule a drain now.
    Now,
    /// Start the gather timer.
    Gather,
}

impl RecordQueue {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Puts `record` in the queue and says what must happen for it to be written.
    pub(crate) fn push(&self, record: AttemptRecord, waiter: oneshot::Sender<StoreResult<Recorded>>) -> Wake {
        let urgent = plan::record_is_urgent(&record);
        let mut pending = self.lock();
        pending.records.push((record, waiter));
        if pending.job_queued {
            Wake::Nothing
        } else if urgent {
            pending.job_queued = true;
            Wake::Now
        } else if !pending.gathering {
            pending.gathering = true;
            Wake::Gather
        } else {
            Wake::Nothing
        }
    }

    /// A gather timer ran out: whether a drain must be scheduled now.
    pub(crate) fn gathered(&self) -> bool {
        let mut pending = self.lock();
        pending.gathering = false;
        let schedule = !pending.job_queued && !pending.records.is_empty();
        pending.job_queued |= schedule;
        schedule
    }

    /// A drain takes every record queued so far; the next record schedules
    /// the next drain.
    pub(crate) fn take(&self) -> Vec<Waiting> {
        let mut pending = self.lock();
        pending.job_queued = false;
        std::mem::take(&mut pending.records)
    }
}

/// Held by a scheduled drain until it runs ([`Unrun::run`]); dropped unrun
/// (the backend refused or lost the drain), it empties the queue, so that
/// its waiters hear it and the next record schedules a drain again.
pub(crate) struct Unrun(Option<Arc<RecordQueue>>);

impl Unrun {
    pub(crate) fn new(queue: Arc<RecordQueue>) -> Self {
        Self(Some(queue))
    }

    /// The drain runs: the records it writes.
    pub(crate) fn run(mut self) -> Vec<Waiting> {
        self.0.take().map(|queue| queue.take()).unwrap_or_default()
    }
}

impl Drop for Unrun {
    fn drop(&mut self) {
        if let Some(queue) = self.0.take() {
            drop(queue.take());
        }
    }
}

/// Records `record` through the backend's `flush` and waits until it is
/// written (or its write failed).
pub(crate) async fn record<F: Flush>(
    queue: &Arc<RecordQueue>,
    flush: &Arc<F>,
    record: AttemptRecord,
) -> StoreResult<Recorded> {
    let (tx, rx) = oneshot::channel();
    match queue.push(record, tx) {
        Wake::Nothing => {}
        // Refused, the drain is dropped unrun and empties the queue.
        Wake::Now => flush.schedule(Arc::clone(queue)).await?,
        Wake::Gather => {
            // Its own task: the waiters behind this record must not depend
            // on its caller staying alive.
            let (queue, flush) = (Arc::clone(queue), Arc::clone(flush));
            tokio::spawn(async move {
                tokio::time::sleep(F::GATHER).await;
                if queue.gathered() {
                    let _ = flush.schedule(queue).await;
                }
            });
        }
    }
    rx.await
        .map_err(|_| StoreError::Unavailable("the recorder stopped".into()))?
}

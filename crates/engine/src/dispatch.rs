//! Per-endpoint queues under a global in-flight limit.
//!
//! The state sits behind one std `Mutex`, held only for queue bookkeeping,
//! never across an `.await`: deciding what may start happens under the lock,
//! spawning the attempt tasks happens after it is released. Each endpoint may
//! have `per_endpoint_in_flight` attempts on the wire; endpoints that have work
//! but find the global limit reached wait in `ready`, in turn, so one busy
//! endpoint cannot starve the others.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};

use herald_domain::attempt::AttemptStatus;
use herald_domain::ids::{AttemptId, DeliveryId, EndpointId};
use herald_domain::retry::Decision;
use herald_store::{AttemptRecord, ClaimedDelivery, DeliveryNext, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::schedule::Wakeup;
use crate::sender::{Sender, SentAttempt};
use crate::{EngineConfig, Metrics, now_ms};

pub struct Dispatcher {
    state: Mutex<State>,
    store: Arc<dyn Store>,
    config: Arc<EngineConfig>,
    sender: Sender,
    wakeup: Arc<Wakeup>,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

#[derive(Default)]
struct State {
    queues: HashMap<EndpointId, EndpointQueue>,
    /// Endpoints with queued work that found the global limit reached.
    ready: VecDeque<EndpointId>,
    /// Every delivery queued or in flight here, so a claim of one already held
    /// (its lease ran out while it waited) is not queued twice.
    held: HashSet<DeliveryId>,
    in_flight: usize,
}

#[derive(Default)]
struct EndpointQueue {
    jobs: VecDeque<ClaimedDelivery>,
    in_flight: usize,
    in_ready: bool,
}

impl Dispatcher {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        config: Arc<EngineConfig>,
        sender: Sender,
        wakeup: Arc<Wakeup>,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            state: Mutex::default(),
            store,
            config,
            sender,
            wakeup,
            metrics,
            tracker,
            shutdown,
        }
    }

    /// How many more deliveries the in-memory window can hold.
    pub fn room(&self) -> usize {
        self.config.window.saturating_sub(self.lock().held.len())
    }

    pub(crate) fn enqueue(self: &Arc<Self>, deliveries: Vec<ClaimedDelivery>) {
        let mut to_start = Vec::new();
        {
            let mut state = self.lock();
            let mut touched = Vec::new();
            for job in deliveries {
                if !state.held.insert(job.id) {
                    continue;
                }
                let endpoint = job.endpoint_id.clone();
                state
                    .queues
                    .entry(endpoint.clone())
                    .or_default()
                    .jobs
                    .push_back(job);
                touched.push(endpoint);
            }
            touched.dedup();
            for endpoint in touched {
                self.pump(&mut state, &endpoint, &mut to_start);
            }
            self.metrics
                .in_memory
                .store(state.held.len() as u64, Relaxed);
        }
        self.start_all(to_start);
    }

    /// Drops the queued (not in-flight) work of an endpoint; returns its ids so
    /// the caller can release their leases.
    pub(crate) fn forget_endpoint(&self, endpoint: &EndpointId) -> Vec<DeliveryId> {
        let mut state = self.lock();
        let Some(queue) = state.queues.get_mut(endpoint) else {
            return Vec::new();
        };
        let dropped: Vec<DeliveryId> = queue.jobs.drain(..).map(|j| j.id).collect();
        if queue.in_flight == 0 {
            state.queues.remove(endpoint);
        }
        for id in &dropped {
            state.held.remove(id);
        }
        self.metrics
            .in_memory
            .store(state.held.len() as u64, Relaxed);
        dropped
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Bookkeeping under this lock never panics midway; recover regardless.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves jobs of `endpoint` from its queue to `to_start` while both its own
    /// and the global limit allow.
    fn pump(&self, state: &mut State, endpoint: &EndpointId, to_start: &mut Vec<ClaimedDelivery>) {
        if self.shutdown.is_cancelled() {
            return;
        }
        loop {
            let global_full = state.in_flight >= self.config.max_in_flight;
            let Some(queue) = state.queues.get_mut(endpoint) else {
                return;
            };
            if queue.jobs.is_empty() || queue.in_flight >= self.config.per_endpoint_in_flight {
                return;
            }
            if global_full {
                if !queue.in_ready {
                    queue.in_ready = true;
                    state.ready.push_back(endpoint.clone());
                }
                return;
            }
            let Some(job) = queue.jobs.pop_front() else {
                return;
            };
            queue.in_flight += 1;
            state.in_flight += 1;
            to_start.push(job);
        }
    }

    fn start_all(self: &Arc<Self>, jobs: Vec<ClaimedDelivery>) {
        for job in jobs {
            let this = Arc::clone(self);
            self.tracker
                .spawn(async move { this.run_attempt(job).await });
        }
    }

    /// One attempt, start to finish: send, free the slot, record, forget.
    async fn run_attempt(self: Arc<Self>, job: ClaimedDelivery) {
        self.metrics.in_flight.fetch_add(1, Relaxed);
        let sent = self.sender.attempt(&job, now_ms()).await;
        self.metrics.in_flight.fetch_sub(1, Relaxed);
        self.finish_slot(&job.endpoint_id);
        let record = self.to_record(&job, sent);
        let retry_at = match record.next {
            DeliveryNext::RetryAt(at) => Some(at),
            _ => None,
        };
        match self.store.record_attempt(record).await {
            Ok(()) => {
                if let Some(at) = retry_at {
                    self.wakeup.wake_at(at);
                }
            }
            Err(e) => tracing::error!(
                error = %e, event_id = %job.event_id, endpoint_id = %job.endpoint_id,
                "could not record an attempt; the delivery will be retried when its lease expires"
            ),
        }
        let mut state = self.lock();
        state.held.remove(&job.id);
        self.metrics
            .in_memory
            .store(state.held.len() as u64, Relaxed);
    }

    fn to_record(&self, job: &ClaimedDelivery, sent: SentAttempt) -> AttemptRecord {
        let ended_ms = sent.started_ms + sent.duration.as_millis() as i64;
        let decision = self
            .config
            .standard_retry
            .decide(job.attempt, &sent.outcome, ended_ms);
        let (status, next) = match decision {
            Decision::Delivered => (AttemptStatus::Success, DeliveryNext::Succeeded),
            Decision::RetryAt(at) => (AttemptStatus::Retrying, DeliveryNext::RetryAt(at)),
            Decision::GiveUp => (AttemptStatus::Failed, DeliveryNext::Failed),
        };
        match status {
            AttemptStatus::Success => Metrics::add(&self.metrics.attempts_succeeded, 1),
            AttemptStatus::Failed => {
                Metrics::add(&self.metrics.attempts_failed, 1);
                Metrics::add(&self.metrics.deliveries_failed, 1);
            }
            _ => Metrics::add(&self.metrics.attempts_failed, 1),
        }
        Metrics::add(
            &self.metrics.attempt_micros_total,
            sent.duration.as_micros() as u64,
        );
        AttemptRecord {
            id: AttemptId::generate(sent.started_ms),
            delivery: job.id,
            team_id: job.team_id.clone(),
            endpoint_id: job.endpoint_id.clone(),
            event_id: job.event_id.clone(),
            event_type: job.event_type,
            attempt: job.attempt,
            timestamp_ms: sent.started_ms,
            status,
            duration_ms: sent.duration.as_millis() as i64,
            request_url: job.url.clone(),
            request_headers: sent.request_headers,
            error: sent.outcome.error_text(),
            response: sent.response,
            next,
        }
    }

    /// An attempt of `endpoint` left the wire: start what its slot, or the
    /// global slot it freed, allows.
    fn finish_slot(self: &Arc<Self>, endpoint: &EndpointId) {
        let mut to_start = Vec::new();
        {
            let mut state = self.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            if let Some(queue) = state.queues.get_mut(endpoint) {
                queue.in_flight = queue.in_flight.saturating_sub(1);
            }
            self.pump(&mut state, endpoint, &mut to_start);
            while state.in_flight < self.config.max_in_flight {
                let Some(next) = state.ready.pop_front() else {
                    break;
                };
                if let Some(queue) = state.queues.get_mut(&next) {
                    queue.in_ready = false;
                }
                self.pump(&mut state, &next, &mut to_start);
            }
            if state.queues.get(endpoint).is_some_and(|q| q.jobs.is_empty() && q.in_flight == 0) {
                state.queues.remove(endpoint);
            }
        }
        self.start_all(to_start);
    }
}

//! Per-endpoint queues under a global in-flight limit.
//!
//! The state sits behind one std `Mutex`, held only for queue bookkeeping,
//! never across an `.await`: deciding what may start happens under the lock,
//! spawning the attempt tasks happens after it is released. Each endpoint may
//! have `per_endpoint_in_flight` attempts on the wire; endpoints that have work
//! but find the global limit reached wait in `ready`, in turn, so one busy
//! endpoint cannot starve the others.
//!
//! Real-time endpoints are *ordered*: one attempt at a time, in production
//! order, and a failed head stays at the front (parked until its retry time,
//! still leased) so nothing behind it goes first. Memory may only ever hold a
//! prefix of an ordered endpoint's pending deliveries. A queue is `synced`
//! when it holds all of them; only then may a fresh publish be appended
//! directly. Otherwise the fresh delivery is released to the store and the
//! scheduler claims the endpoint's next run, in order, when the queue drains.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use foldhash::{HashMap, HashSet};
use herald_domain::attempt::AttemptStatus;
use herald_domain::ids::{AttemptId, DeliveryId, EndpointId, EndpointKind};
use herald_domain::retry::{Decision, GONE_REASON, auto_deactivation_reason};
use herald_store::{AttemptRecord, ClaimedDelivery, Deactivation, DeliveryNext, Queue};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::schedule::Wakeup;
use crate::sender::{Sender, SentAttempt};
use crate::{EngineConfig, Metrics, now_ms};

/// Logged for each delivery dropped when its real-time endpoint fails.
const DROP_REASON: &str = "not sent: the real-time endpoint failed after its last retry";

pub struct Dispatcher {
    state: Mutex<State>,
    /// The retries expected from fresh team-webhook deliveries, for publish
    /// admission.
    pub(crate) admission: Admission,
    store: Arc<dyn Queue>,
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
    /// Ordered endpoints that failed while this process ran.
    failed: HashSet<EndpointId>,
    in_flight: usize,
}

#[derive(Default)]
struct EndpointQueue {
    jobs: VecDeque<ClaimedDelivery>,
    /// Unordered only: claimed work (retries coming due, work taken over from
    /// an expired lease), which goes before the fresh publishes in `jobs`. A
    /// retry has a time to keep; a fresh delivery only has to go soon, and
    /// under a publish flood `jobs` can hold many seconds of work.
    claimed: VecDeque<ClaimedDelivery>,
    in_flight: usize,
    in_ready: bool,
    ordered: bool,
    /// Ordered only: memory holds every pending delivery of the endpoint.
    synced: bool,
    /// Ordered only: the highest position handed back to the store since the
    /// queue was last synced; a claimed run must reach it to sync again.
    released_up_to: Option<i64>,
    /// Ordered only: the head failed and waits for its retry time.
    parked: bool,
}

impl EndpointQueue {
    fn new(endpoint: &EndpointId) -> Self {
        Self {
            ordered: endpoint.kind() == EndpointKind::Realtime,
            ..Self::default()
        }
    }

    /// Whether anything waits to start, fresh or claimed.
    fn has_waiting(&self) -> bool {
        !self.jobs.is_empty() || !self.claimed.is_empty()
    }

    fn is_idle(&self) -> bool {
        !self.has_waiting() && self.in_flight == 0
    }

    /// The next delivery to start: claimed work first.
    fn next_job(&mut self) -> Option<ClaimedDelivery> {
        self.claimed.pop_front().or_else(|| self.jobs.pop_front())
    }
}

impl Dispatcher {
    pub(crate) fn new(
        store: Arc<dyn Queue>,
        config: Arc<EngineConfig>,
        sender: Sender,
        wakeup: Arc<Wakeup>,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let delays_ms: Vec<i64> = config.standard_retry.delays().map(|d| d.as_millis() as i64).collect();
        Self {
            state: Mutex::default(),
            admission: Admission::new(&delays_ms, config.retry_capacity_per_s, now_ms()),
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

    /// Deliveries of `endpoint` queued or in flight here.
    pub(crate) fn queued(&self, endpoint: &EndpointId) -> usize {
        self.lock()
            .queues
            .get(endpoint)
            .map_or(0, |q| q.jobs.len() + q.claimed.len() + q.in_flight)
    }

    /// Every delivery held here, for lease renewal.
    pub(crate) fn held(&self) -> Vec<DeliveryId> {
        self.lock().held.iter().copied().collect()
    }

    /// Takes freshly published deliveries. Returns those of ordered endpoints
    /// that may not jump the line in memory (the caller releases them to the
    /// store, where the scheduler will claim them in order), and whether the
    /// scheduler should look for such work now.
    pub(crate) fn enqueue_published(self: &Arc<Self>, deliveries: Vec<ClaimedDelivery>) -> (Vec<DeliveryId>, bool) {
        let mut to_start = Vec::new();
        let mut released = Vec::new();
        let shared = self.store.is_shared();
        let mut claim = false;
        let mut fresh_unordered = 0;
        {
            let mut state = self.lock();
            let mut touched = Vec::new();
            for job in deliveries {
                if state.held.contains(&job.id) || state.failed.contains(&job.endpoint_id) {
                    continue;
                }
                if shared && job.endpoint_id.kind() == EndpointKind::Realtime {
                    // Unleased in the store; whoever claims the endpoint sends it.
                    claim = true;
                    continue;
                }
                let endpoint = job.endpoint_id.clone();
                let cap = self.config.ordered_queue_cap;
                let queue = state
                    .queues
                    .entry(endpoint.clone())
                    .or_insert_with(|| EndpointQueue::new(&endpoint));
                if queue.ordered && !(queue.synced && queue.released_up_to.is_none() && queue.jobs.len() < cap) {
                    queue.synced = false;
                    queue.released_up_to = Some(queue.released_up_to.unwrap_or(0).max(job.id.0));
                    released.push(job.id);
                    continue;
                }
                // Publishes committed together may hand off in any order: keep
                // the queue in store order behind what is already on the wire.
                let at = if queue.ordered {
                    queue
                        .jobs
                        .iter()
                        .rposition(|queued| queued.id < job.id)
                        .map_or(0, |i| i + 1)
                } else {
                    fresh_unordered += 1;
                    queue.jobs.len()
                };
                state.held.insert(job.id);
                let queue = state
                    .queues
                    .entry(endpoint.clone())
                    .or_insert_with(|| EndpointQueue::new(&endpoint));
                queue.jobs.insert(at, job);
                touched.push(endpoint);
            }
            touched.dedup();
            for endpoint in touched {
                self.pump(&mut state, &endpoint, &mut to_start);
            }
            self.metrics.in_memory.store(state.held.len() as u64, Relaxed);
        }
        self.admission.accepted(now_ms(), fresh_unordered);
        self.start_all(to_start);
        let claim = claim || !released.is_empty();
        (released, claim)
    }

    /// Takes deliveries the scheduler claimed. Ordered ones come as runs, in
    /// order, grouped by endpoint; a run shorter than `run` is everything the
    /// endpoint had pending, so its queue is synced (unless a later delivery
    /// was handed back to the store meanwhile).
    pub(crate) fn enqueue_claimed(self: &Arc<Self>, deliveries: Vec<ClaimedDelivery>, run: usize) {
        let mut to_start = Vec::new();
        {
            let mut state = self.lock();
            let mut runs: Vec<(EndpointId, usize, i64)> = Vec::new();
            for job in deliveries {
                let endpoint = job.endpoint_id.clone();
                match runs.last_mut() {
                    Some((e, count, last)) if *e == endpoint => {
                        *count += 1;
                        *last = job.id.0;
                    }
                    _ => runs.push((endpoint.clone(), 1, job.id.0)),
                }
                if state.failed.contains(&endpoint) || !state.held.insert(job.id) {
                    continue;
                }
                let queue = state
                    .queues
                    .entry(endpoint.clone())
                    .or_insert_with(|| EndpointQueue::new(&endpoint));
                if queue.ordered {
                    queue.jobs.push_back(job);
                } else {
                    queue.claimed.push_back(job);
                }
            }
            for (endpoint, count, last_seq) in &runs {
                if let Some(queue) = state.queues.get_mut(endpoint)
                    && queue.ordered
                {
                    // On a shared store another process may add to the endpoint
                    // at any time, so memory is never the whole of it.
                    let complete =
                        !self.store.is_shared() && *count < run && queue.released_up_to.is_none_or(|r| *last_seq >= r);
                    queue.synced = complete;
                    if complete {
                        queue.released_up_to = None;
                    }
                }
                self.pump(&mut state, endpoint, &mut to_start);
            }
            self.metrics.in_memory.store(state.held.len() as u64, Relaxed);
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
        let dropped: Vec<DeliveryId> = queue
            .claimed
            .drain(..)
            .chain(queue.jobs.drain(..))
            .map(|j| j.id)
            .collect();
        queue.synced = false;
        if queue.in_flight == 0 {
            state.queues.remove(endpoint);
        }
        for id in &dropped {
            state.held.remove(id);
        }
        self.metrics.in_memory.store(state.held.len() as u64, Relaxed);
        dropped
    }

    /// Whether shutdown has begun: nothing new is started from then on.
    pub(crate) fn stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Bookkeeping under this lock never panics midway; recover regardless.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
            let limit = if queue.ordered {
                1
            } else {
                self.config.per_endpoint_in_flight
            };
            if !queue.has_waiting() || queue.parked || queue.in_flight >= limit {
                return;
            }
            if global_full {
                if !queue.in_ready {
                    queue.in_ready = true;
                    state.ready.push_back(endpoint.clone());
                }
                return;
            }
            let Some(job) = queue.next_job() else { return };
            queue.in_flight += 1;
            state.in_flight += 1;
            to_start.push(job);
        }
    }

    fn start_all(self: &Arc<Self>, jobs: Vec<ClaimedDelivery>) {
        for job in jobs {
            let this = Arc::clone(self);
            self.tracker.spawn(async move { this.run_attempt(job).await });
        }
    }

    /// One attempt, start to finish: send, decide, record, and move the queue on.
    async fn run_attempt(self: Arc<Self>, job: ClaimedDelivery) {
        self.metrics.in_flight.fetch_add(1, Relaxed);
        let ordered = job.endpoint_id.kind() == EndpointKind::Realtime;
        let started_ms = now_ms();
        if !ordered && job.attempt > 1 && job.due_ms > 0 {
            self.admission.retry_started(started_ms, job.due_ms);
        }
        // Boxed: the request's future is most of this task's size, and a
        // task is moved whole into its cell when spawned and overwritten
        // whole when it ends.
        let sent = Box::pin(self.sender.attempt(&job, started_ms)).await;
        self.metrics.in_flight.fetch_sub(1, Relaxed);
        if !ordered {
            // Unordered: the slot is free as soon as the answer is in.
            self.finish_slot(&job.endpoint_id, None);
            self.admission.finished(now_ms(), !sent.outcome.is_success());
        }
        let (record, decision) = self.to_record(&job, sent);
        match decision {
            Decision::RetryAt(at) if ordered => Box::pin(self.park_head(job, record, at)).await,
            Decision::GiveUp if ordered => Box::pin(self.fail_endpoint(job, record)).await,
            _ => {
                let retry_at = match record.next {
                    DeliveryNext::RetryAt(at) => Some(at),
                    _ => None,
                };
                match self.store.record_attempt(record).await {
                    Ok(recorded) => {
                        if let Some(at) = retry_at {
                            self.wakeup.wake_at(at);
                        }
                        if recorded.deactivated {
                            tracing::warn!(endpoint_id = %job.endpoint_id, "webhook deactivated by its answers");
                            Box::pin(self.endpoint_changed(&job.endpoint_id)).await;
                        }
                    }
                    Err(e) => tracing::error!(
                        error = %e, event_id = %job.event_id, endpoint_id = %job.endpoint_id,
                        "could not record an attempt; the delivery will be retried when its lease expires"
                    ),
                }
                // Ordered: only now, with the success durable, may the next one go.
                self.finish_slot(&job.endpoint_id, ordered.then_some(job.id));
                if !ordered {
                    self.forget(job.id);
                }
            }
        }
    }

    /// An endpoint changed (edited, deactivated, deleted, here or by a
    /// recorded attempt): tell the other processes, and drop what is queued
    /// for it here.
    pub(crate) async fn endpoint_changed(&self, endpoint: &EndpointId) {
        if let Err(e) = self.store.announce_endpoint_changed(endpoint).await {
            tracing::warn!(error = %e, endpoint_id = %endpoint, "could not tell the other processes about a changed endpoint");
        }
        self.drop_endpoint(endpoint).await;
    }

    /// Drops what is queued for `endpoint` here and gives its leases back,
    /// so that the scheduler claims its work again under its new
    /// configuration (or not at all, if it is no longer active).
    pub(crate) async fn drop_endpoint(&self, endpoint: &EndpointId) {
        let released = self.forget_endpoint(endpoint);
        if !released.is_empty()
            && let Err(e) = self.store.release(&released).await
        {
            tracing::warn!(error = %e, endpoint_id = %endpoint, "could not release queued deliveries; their leases will expire");
        }
        self.wakeup.wake_at(now_ms());
    }

    fn forget(&self, delivery: DeliveryId) {
        let mut state = self.lock();
        state.held.remove(&delivery);
        self.metrics.in_memory.store(state.held.len() as u64, Relaxed);
    }

    /// An ordered head failed with retries left: log the attempt while keeping
    /// the lease, put the head back in front, and wake the queue at `at`.
    async fn park_head(self: &Arc<Self>, mut job: ClaimedDelivery, mut record: AttemptRecord, at: i64) {
        record.keep_lease_until = Some(at + self.config.lease.as_millis() as i64);
        if let Err(e) = self.store.record_attempt(record).await {
            tracing::error!(error = %e, event_id = %job.event_id, endpoint_id = %job.endpoint_id, "could not record an attempt");
        }
        let endpoint = job.endpoint_id.clone();
        job.attempt += 1;
        let mut to_start = Vec::new();
        {
            let mut state = self.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            if let Some(queue) = state.queues.get_mut(&endpoint) {
                queue.in_flight = queue.in_flight.saturating_sub(1);
                queue.parked = true;
                queue.jobs.push_front(job);
            }
            self.pump_ready(&mut state, &mut to_start);
        }
        self.start_all(to_start);
        let this = Arc::clone(self);
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            let wait = Duration::from_millis((at - now_ms()).max(0) as u64);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(wait) => this.unpark(&endpoint),
            }
        });
    }

    fn unpark(self: &Arc<Self>, endpoint: &EndpointId) {
        let mut to_start = Vec::new();
        {
            let mut state = self.lock();
            if let Some(queue) = state.queues.get_mut(endpoint) {
                queue.parked = false;
            }
            self.pump(&mut state, endpoint, &mut to_start);
        }
        self.start_all(to_start);
    }

    /// An ordered endpoint used its last retry: it fails, and everything
    /// waiting for it, here and in the store, is dropped and logged.
    async fn fail_endpoint(self: &Arc<Self>, job: ClaimedDelivery, record: AttemptRecord) {
        match self.store.fail_endpoint(record, DROP_REASON).await {
            Ok(dropped) => tracing::warn!(endpoint_id = %job.endpoint_id, dropped, "real-time endpoint failed"),
            Err(e) => tracing::error!(error = %e, endpoint_id = %job.endpoint_id, "could not mark the endpoint failed"),
        }
        Metrics::add(&self.metrics.deliveries_failed, 1);
        let mut to_start = Vec::new();
        {
            let mut state = self.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            state.failed.insert(job.endpoint_id.clone());
            if let Some(queue) = state.queues.remove(&job.endpoint_id) {
                for queued in queue.jobs {
                    state.held.remove(&queued.id);
                }
            }
            state.held.remove(&job.id);
            self.metrics.in_memory.store(state.held.len() as u64, Relaxed);
            self.pump_ready(&mut state, &mut to_start);
        }
        self.start_all(to_start);
    }

    fn to_record(&self, job: &ClaimedDelivery, sent: SentAttempt) -> (AttemptRecord, Decision) {
        // A retry's delay runs from the attempt's end. The start was read
        // before the request was built, and a busy machine can hold the
        // thread up before it is sent (the likely cause of a real-time retry
        // arriving 994 ms after the previous one in a CI run), so the clock
        // is read again now. Both readings are floored to the millisecond;
        // one more keeps a retry from ever firing before its full delay has
        // passed.
        let ended_ms = (sent.started_ms + sent.duration.as_millis() as i64).max(now_ms()) + 1;
        let policy = match job.endpoint_id.kind() {
            EndpointKind::Webhook => &self.config.standard_retry,
            EndpointKind::Realtime => &self.config.realtime_retry,
        };
        let retry_after = sent.response.as_ref().and_then(|r| {
            r.headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
                .map(|(_, value)| value.as_str())
        });
        let decision = policy.decide(job.attempt, &sent.outcome, ended_ms, retry_after);
        let webhook = job.endpoint_id.kind() == EndpointKind::Webhook;
        let (status, next, deactivate) = match decision {
            Decision::Delivered => (AttemptStatus::Success, DeliveryNext::Succeeded, None),
            Decision::RetryAt(at) => (AttemptStatus::Retrying, DeliveryNext::RetryAt(at), None),
            Decision::GiveUp => {
                // A webhook's failed delivery may be the one that makes its
                // failing streak long enough.
                let after = self.config.auto_deactivate_after;
                let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
                let deactivate = webhook.then(|| Deactivation::FailingSince {
                    by_ms: ended_ms.saturating_sub(after_ms),
                    reason: auto_deactivation_reason(after),
                });
                (AttemptStatus::Failed, DeliveryNext::Failed, deactivate)
            }
            Decision::Gone => (
                AttemptStatus::Failed,
                DeliveryNext::Failed,
                Some(Deactivation::Now(GONE_REASON.to_owned())),
            ),
        };
        match status {
            AttemptStatus::Success => Metrics::add(&self.metrics.attempts_succeeded, 1),
            AttemptStatus::Failed if job.endpoint_id.kind() == EndpointKind::Webhook => {
                Metrics::add(&self.metrics.attempts_failed, 1);
                Metrics::add(&self.metrics.deliveries_failed, 1);
            }
            _ => Metrics::add(&self.metrics.attempts_failed, 1),
        }
        Metrics::add(&self.metrics.attempt_micros_total, sent.duration.as_micros() as u64);
        let ended_ms = sent.started_ms + sent.duration.as_millis() as i64;
        self.metrics.attempt(
            sent.duration,
            status == AttemptStatus::Success,
            ended_ms - job.created_ms,
        );
        let record = AttemptRecord {
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
            keep_lease_until: None,
            deactivate,
        };
        (record, decision)
    }

    /// An attempt of `endpoint` is over: start what its slot, or the global
    /// slot it freed, allows. `done` is an ordered delivery now finished.
    fn finish_slot(self: &Arc<Self>, endpoint: &EndpointId, done: Option<DeliveryId>) {
        let mut to_start = Vec::new();
        let mut claim_more = false;
        {
            let mut state = self.lock();
            if let Some(id) = done {
                state.held.remove(&id);
                self.metrics.in_memory.store(state.held.len() as u64, Relaxed);
            }
            state.in_flight = state.in_flight.saturating_sub(1);
            if let Some(queue) = state.queues.get_mut(endpoint) {
                queue.in_flight = queue.in_flight.saturating_sub(1);
            }
            self.pump(&mut state, endpoint, &mut to_start);
            self.pump_ready(&mut state, &mut to_start);
            if let Some(queue) = state.queues.get(endpoint)
                && queue.is_idle()
            {
                // An idle unordered queue is forgotten. An ordered one stays
                // while it is synced (the next publish can go straight to
                // memory) or owes the store a claim (`released_up_to`: losing
                // it would let a later claim call the queue synced too soon);
                // an unsynced ordered endpoint may have more in the store.
                claim_more = queue.ordered && !queue.synced;
                if !queue.ordered || (!queue.synced && queue.released_up_to.is_none()) {
                    state.queues.remove(endpoint);
                }
            }
        }
        self.start_all(to_start);
        if claim_more {
            self.wakeup.wake_at(now_ms());
        }
    }

    /// Gives freed global slots to endpoints waiting for one, in turn.
    fn pump_ready(&self, state: &mut State, to_start: &mut Vec<ClaimedDelivery>) {
        while state.in_flight < self.config.max_in_flight {
            let Some(next) = state.ready.pop_front() else { break };
            if let Some(queue) = state.queues.get_mut(&next) {
                queue.in_ready = false;
            }
            self.pump(state, &next, to_start);
        }
    }
}

//! The delivery engine: turns pending deliveries into attempts and attempts
//! into log lines and next states.
//!
//! Work reaches it two ways. New deliveries are handed over in memory by the
//! API right after the publish commits ([`Engine::enqueue`]), already leased,
//! so the hot path never polls the database. Retries and anything left over
//! from a crash live only in the store; the [`schedule`] task sleeps until the
//! earliest `next_attempt_at` it knows of, claims what is due with a lease,
//! and hands it to the same queues; a slow sweep is the safety net.
//!
//! The [`dispatch`] module keeps one queue per endpoint with its own in-flight
//! limit under a global one, so a slow or hanging endpoint only ever ties up
//! its own slots. [`sender`] makes each attempt; the outcome goes through the
//! pure retry policy and is recorded in a second short transaction. No lock
//! or transaction is held across a network call, and memory holds a bounded
//! window of work: the rest waits in the store.

pub mod admission;
pub mod dispatch;
pub mod metrics;
pub mod recover;
pub mod schedule;
pub mod sender;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_domain::ids::EndpointId;
use herald_domain::retry::RetryPolicy;
use herald_domain::target::TargetPolicy;
use herald_store::{ClaimedDelivery, Lease, Queue, StoreError, StoreSignal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use metrics::Metrics;

/// Attempts one team webhook may have on the wire at once, by default
/// (`EngineConfig::per_endpoint_in_flight`). Each is a connection the
/// endpoint's server holds open; a hanging endpoint holds all of them until
/// their timeouts.
pub const DEFAULT_ENDPOINT_CONCURRENCY: usize = 32;

/// Leases renewed per write. The store commits a write with the publishes
/// and records queued beside it, so one renewal of everything held stalls
/// them all: with 20 hanging webhooks piling up a few thousand held
/// deliveries, that was a 5-29 ms commit every 3.3 s and the healthy
/// webhooks' p99 (`herald-bench isolation --rate 1000`). Each renewed lease
/// rewrites its row and index pages, about 13 µs in SQLite, so a chunk adds
/// about 0.4 ms to the commit it joins, and the chunks are spread over
/// [`RENEW_SPREAD`] of the renewal interval instead of going back to back
/// (128 back to back, 1.7 ms each, were 1.81 and 1.75 ms of healthy p99
/// there against 1.46 and 1.58 ms without renewals).
const RENEW_CHUNK: usize = 32;

/// The share of the renewal interval its chunks are spread over; the rest is
/// the margin before the old leases run out.
const RENEW_SPREAD: f64 = 0.5;

/// How the engine behaves. [`EngineConfig::new`] gives the contract's values.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Names this process in leases. SQLite has one process, so a fixed name
    /// lets a restart take back what the previous run held at once.
    pub node: String,
    pub attempt_timeout: Duration,
    pub standard_retry: RetryPolicy,
    pub realtime_retry: RetryPolicy,
    /// A webhook whose every delivery has failed for this long, counted from
    /// its first failed delivery after its last success, is deactivated
    /// (contract §4.3, `HERALD_AUTO_DEACTIVATE_AFTER`).
    pub auto_deactivate_after: Duration,
    /// The most deliveries per second this process's recovers make
    /// (`HERALD_RECOVER_RATE`): a recover is catch-up work and leaves the
    /// machine to live traffic first.
    pub recover_rate_per_s: f64,
    /// How many deliveries of one ordered endpoint a claim takes at once.
    pub ordered_run: usize,
    /// Past this many queued deliveries, an ordered endpoint's new work waits
    /// in the store instead of memory (a failing endpoint cannot fill the window).
    pub ordered_queue_cap: usize,
    /// How long a claim holds without renewal. The engine renews the leases
    /// of everything it holds every third of this, so a live process keeps
    /// its claims and a dead one's are taken over this long after it died.
    pub lease: Duration,
    /// The most deliveries held in memory (queued or in flight). Past it the
    /// API sheds load with 503 and the scheduler leaves work in the store.
    /// About 1 KiB each: at 50,000, a retry storm that filled it brought the
    /// server to 126 MB; at 20,000 the same run peaked at 98-108 MB and kept
    /// its retries as near their times (`herald-bench backlog`). The busiest
    /// steady runs hold a few hundred.
    pub window: usize,
    pub max_in_flight: usize,
    pub per_endpoint_in_flight: usize,
    /// The safety-net sweep for due work nobody announced.
    pub sweep_interval: Duration,
    /// How long shutdown waits for attempts already in flight.
    pub shutdown_grace: Duration,
    pub target_policy: TargetPolicy,
    pub user_agent: String,
    /// A fixed attempt capacity for publish admission; `None` learns it
    /// (see [`admission`]).
    pub retry_capacity_per_s: Option<f64>,
}

impl EngineConfig {
    pub fn new(target_policy: TargetPolicy) -> Self {
        Self {
            node: "local".into(),
            attempt_timeout: Duration::from_secs(10),
            standard_retry: RetryPolicy::standard(),
            realtime_retry: RetryPolicy::realtime(),
            auto_deactivate_after: Duration::from_secs(5 * 86_400),
            recover_rate_per_s: DEFAULT_RECOVER_RATE,
            ordered_run: 256,
            ordered_queue_cap: 1024,
            lease: Duration::from_secs(10),
            window: 20_000,
            max_in_flight: 1024,
            per_endpoint_in_flight: DEFAULT_ENDPOINT_CONCURRENCY,
            sweep_interval: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            target_policy,
            user_agent: format!("Herald/{}", env!("CARGO_PKG_VERSION")),
            retry_capacity_per_s: None,
        }
    }
}

/// The default of [`EngineConfig::recover_rate_per_s`].
pub const DEFAULT_RECOVER_RATE: f64 = 1_000.0;

/// A handle on the running engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    dispatcher: Arc<dispatch::Dispatcher>,
    wakeup: Arc<schedule::Wakeup>,
    config: Arc<EngineConfig>,
    store: Arc<dyn Queue>,
    metrics: Arc<Metrics>,
    recovers: Arc<recover::RecoverWake>,
}

/// Why the engine could not start.
#[derive(Debug)]
pub enum StartError {
    Client(rustls::Error),
    Store(StoreError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client(e) => write!(f, "cannot build the HTTP client: {e}"),
            Self::Store(e) => write!(f, "cannot take back this node's leases: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl Engine {
    /// Starts the scheduler; attempts run as tasks on `tracker` until `shutdown`.
    pub async fn start(
        store: Arc<dyn Queue>,
        config: EngineConfig,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, StartError> {
        // Whatever this node held when it last stopped is free again.
        store.release_node(&config.node).await.map_err(StartError::Store)?;
        let sender = sender::Sender::new(
            config.attempt_timeout,
            config.target_policy,
            config.user_agent.clone(),
            config.max_in_flight,
        )
        .map_err(StartError::Client)?;
        let config = Arc::new(config);
        let wakeup = Arc::new(schedule::Wakeup::default());
        let dispatcher = Arc::new(dispatch::Dispatcher::new(
            Arc::clone(&store),
            Arc::clone(&config),
            sender,
            Arc::clone(&wakeup),
            Arc::clone(&metrics),
            tracker.clone(),
            shutdown.clone(),
        ));
        let engine = Self {
            dispatcher,
            wakeup,
            config,
            store,
            metrics,
            recovers: Arc::default(),
        };
        if let Some(signals) = engine.store.subscribe().await.map_err(StartError::Store)? {
            tracker.spawn(engine.clone().follow(signals, shutdown.clone()));
        }
        tracker.spawn(engine.clone().renew_leases(shutdown.clone()));
        tracker.spawn(recover::run(engine.clone(), shutdown.clone()));
        tracker.spawn(schedule::run(engine.clone(), shutdown));
        Ok(engine)
    }

    /// Acts on what the other processes on a shared store announce.
    async fn follow(self, mut signals: tokio::sync::mpsc::Receiver<StoreSignal>, shutdown: CancellationToken) {
        loop {
            let signal = tokio::select! {
                _ = shutdown.cancelled() => return,
                signal = signals.recv() => signal,
            };
            match signal {
                Some(StoreSignal::Work) => self.wakeup.wake_at(now_ms()),
                Some(StoreSignal::EndpointChanged(endpoint)) => self.drop_queued(&endpoint).await,
                None => return,
            }
        }
    }

    /// Keeps this node's claims alive while it works on them, a chunk of
    /// [`RENEW_CHUNK`] leases per write, the chunks spread evenly over
    /// [`RENEW_SPREAD`] of the interval.
    async fn renew_leases(self, shutdown: CancellationToken) {
        // An interval may not be zero, whatever lease a caller configures.
        let every = (self.config.lease / 3).max(Duration::from_millis(1));
        let mut round = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = round.tick() => {}
            }
            let held = self.dispatcher.held();
            if held.is_empty() {
                continue;
            }
            let lease = self.new_lease();
            let chunks = held.len().div_ceil(RENEW_CHUNK);
            let gap = every.mul_f64(RENEW_SPREAD / chunks as f64);
            for (i, chunk) in held.chunks(RENEW_CHUNK).enumerate() {
                if i > 0 {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(gap) => {}
                    }
                }
                if let Err(e) = self.store.renew(chunk, &lease).await {
                    tracing::warn!(error = %e, held = held.len(), "could not renew leases");
                    break;
                }
            }
        }
    }

    /// The lease a publish should put on the deliveries it creates, so that
    /// they are this engine's from the moment they are committed.
    pub fn new_lease(&self) -> Lease {
        Lease {
            node: self.config.node.clone(),
            until_ms: now_ms() + self.config.lease.as_millis() as i64,
        }
    }

    /// The lease for the deliveries of ordered (real-time) endpoints a publish
    /// creates. On a shared store there is none: another process may be
    /// sending that endpoint's run, so the work is left for whoever claims the
    /// endpoint next, in order.
    pub fn ordered_publish_lease(&self) -> Option<Lease> {
        (!self.store.is_shared()).then(|| self.new_lease())
    }

    /// Hands freshly committed, leased deliveries to their endpoint queues.
    /// Deliveries of ordered endpoints that cannot go straight to memory
    /// without jumping the line are released to the store for the scheduler.
    pub async fn enqueue(&self, deliveries: Vec<ClaimedDelivery>) {
        let (released, claim) = self.dispatcher.enqueue_published(deliveries);
        if claim {
            self.wakeup.wake_at(now_ms());
        }
        if released.is_empty() {
            return;
        }
        if let Err(e) = self.store.release(&released).await {
            tracing::warn!(error = %e, "could not release deliveries to the store; their leases will expire");
        }
        self.wakeup.wake_at(now_ms());
    }

    /// Whether the in-memory window can take more work. When it cannot, the
    /// API answers 503 instead of letting memory grow.
    pub fn has_room(&self) -> bool {
        self.dispatcher.room() > 0
    }

    /// Whether a team event may be accepted now without pushing the retries
    /// this process has already promised off their schedule (see
    /// [`admission`]). When it may not, the API answers 503 as for a full
    /// window.
    pub fn retries_admit_publish(&self) -> bool {
        self.dispatcher.admission.admits(now_ms())
    }

    /// An endpoint was changed or deleted: drop what is queued for it and let
    /// the scheduler claim its work again under the new configuration (or not
    /// at all, if it is no longer active).
    pub async fn endpoint_changed(&self, endpoint: &EndpointId) {
        self.dispatcher.endpoint_changed(endpoint).await;
    }

    async fn drop_queued(&self, endpoint: &EndpointId) {
        self.dispatcher.drop_endpoint(endpoint).await;
    }

    /// A recover was asked for: this process starts working it at once
    /// (any process would within a second).
    pub fn recover_requested(&self) {
        self.recovers.wake();
    }

    /// Whether this process was told to stop: it claims and starts nothing
    /// new, and `/readyz` answers 503.
    pub fn is_stopping(&self) -> bool {
        self.dispatcher.stopping()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Prometheus text for `/metrics`, with this node's name.
    pub async fn render_metrics(&self) -> String {
        let mut out = format!(
            "# HELP herald_node_info The name this process uses in leases.\n# TYPE herald_node_info gauge\nherald_node_info{{node=\"{}\"}} 1\n{}",
            self.config.node,
            self.metrics.render()
        );
        // The store's backlog, shared by every node: read at each scrape.
        let now = now_ms();
        match self.store.backlog(now).await {
            Ok(backlog) => {
                let lag_s = backlog
                    .oldest_due_ms
                    .map_or(0.0, |due| (now - due).max(0) as f64 / 1000.0);
                out.push_str(&format!(
                    "# HELP herald_deliveries_pending Deliveries not yet finished, in the store.\n# TYPE herald_deliveries_pending gauge\nherald_deliveries_pending {}\n\
                     # HELP herald_due_lag_seconds How long the oldest due delivery of an active endpoint has waited past its due time (0 when none waits).\n# TYPE herald_due_lag_seconds gauge\nherald_due_lag_seconds {lag_s}\n",
                    backlog.pending
                ));
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the backlog for /metrics"),
        }
        out
    }

    /// Gives back the leases of work still queued, after the tasks stopped.
    pub async fn release_all(&self) {
        if let Err(e) = self.store.release_node(&self.config.node).await {
            tracing::warn!(error = %e, "could not release leases on shutdown; they will expire");
        }
    }
}

/// The wall clock in Unix milliseconds: the engine's one clock read.
/// Where the wall-clock time comes from for what expires by it (dashboard
/// sign-in links and sessions). The server runs on [`Clock::system`]; a test
/// sets a [`Clock::manual`] one and moves it on, instead of sleeping
/// through the expiry.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system's clock ([`now_ms`]).
    pub fn system() -> Self {
        Self(Arc::new(now_ms))
    }

    /// A clock that reads `start_ms` until the returned handle moves it.
    pub fn manual(start_ms: i64) -> (Self, Arc<std::sync::atomic::AtomicI64>) {
        let time = Arc::new(std::sync::atomic::AtomicI64::new(start_ms));
        let read = Arc::clone(&time);
        (
            Self(Arc::new(move || read.load(std::sync::atomic::Ordering::Relaxed))),
            time,
        )
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now_ms())
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

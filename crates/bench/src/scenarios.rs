//! The scenarios: each starts its own server and receiver, sets up through
//! the public API, measures the loopback limit, publishes, waits (bounded)
//! for every delivery, checks them, and returns one [`Report`].
//!
//! Team-webhook scenarios (`single`, `fanout`, `paced`, `isolation`,
//! `backlog`) share [`run_team`]; `realtime`, `idle` and `recover` (in
//! `scenarios/recover.rs`) have their own.

mod recover;
mod soak;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{self, Api, Job, LoadResult, Order, Plan, bearer, field};
use crate::receiver::Receiver;
use crate::server::{ADMIN_KEY, Herald, proc_cpu_s};

pub use recover::recover;
pub use soak::soak;

/// The standard retry schedule: delays before attempts 2 to 5.
const STANDARD_DELAYS_S: [f64; 4] = [2.0, 4.0, 8.0, 16.0];

/// Everything a scenario may be told; [`Params::defaults`] fills it per
/// scenario and the command line overrides.
#[derive(Debug, Clone)]
pub struct Params {
    pub herald_bin: PathBuf,
    /// Settings given to the server beside those every scenario sets
    /// (`soak`: its retention).
    pub server_env: Vec<(String, String)>,
    pub events: u64,
    /// Paced rate (events/s); `None` is as fast as the server answers.
    pub rate: Option<f64>,
    pub concurrency: usize,
    /// Publishing stops after this many seconds (the paced length for `paced`).
    pub duration_s: f64,
    /// How long to wait for deliveries after the last publish.
    pub wait_s: f64,
    /// How long the loopback-limit measurement runs.
    pub limit_s: f64,
    /// Webhooks (`fanout`), teams (`isolation`) or bots (`realtime`).
    pub endpoints: usize,
    /// Hanging endpoints (`isolation`).
    pub hang: usize,
    /// Seconds the receiver answers 503 (`backlog`).
    pub fail_s: f64,
    /// Events per second per bot (`realtime`).
    pub bot_rate: f64,
    /// Seconds to wait idle (`idle`).
    pub idle_s: f64,
    /// A PostgreSQL database to run on (a fresh schema per scenario); `None`
    /// is a fresh SQLite file.
    pub postgres_url: Option<String>,
    /// How many `herald serve` processes share the store (PostgreSQL only).
    pub nodes: usize,
    /// Where to write each delivery's publish time and latency.
    pub latencies: Option<PathBuf>,
}

/// The `--latencies` file: one line per delivery, seconds from the start of
/// publishing to its publish and milliseconds from publish to arrival, so a
/// tail can be placed in time (and beside the server's own logs: the first
/// line gives the start as Unix seconds).
struct Latencies {
    out: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
}

impl Latencies {
    fn create(path: &Path, started: Instant) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut this = Self {
            out: std::io::BufWriter::new(file),
            path: path.to_owned(),
        };
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let start = unix_now.saturating_sub(started.elapsed()).as_secs_f64();
        this.line(format_args!(
            "# publish_s latency_ms; publishing started at {start:.4} (Unix s)"
        ))?;
        Ok(this)
    }

    fn write(&mut self, started: Instant, sent: Instant, arrived: Instant) -> anyhow::Result<()> {
        let at = sent.saturating_duration_since(started).as_secs_f64();
        let ms = arrived.saturating_duration_since(sent).as_secs_f64() * 1000.0;
        self.line(format_args!("{at:.4} {ms:.3}"))
    }

    fn line(&mut self, line: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
        writeln!(self.out, "{line}").with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// One JSON object, fields in the order they were set.
#[derive(Debug, Clone, Default)]
pub struct Report {
    fields: Vec<(String, Value)>,
    /// False when an event went missing, a body was wrong or the run failed.
    pub passed: bool,
}

impl Report {
    pub fn new(scenario: &str) -> Self {
        let mut report = Self {
            fields: Vec::new(),
            passed: true,
        };
        report.set("scenario", scenario);
        report
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key.to_owned(), value)),
        }
    }

    /// A float rounded to `digits` decimals (non-finite becomes null).
    pub fn set_f(&mut self, key: &str, value: f64, digits: i32) {
        self.set(key, rounded(value, digits));
    }

    /// The report as one line of JSON.
    pub fn line(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::String(k.clone()).to_string());
            out.push(':');
            out.push_str(&v.to_string());
        }
        out.push('}');
        out
    }
}

/// `value` rounded to `digits` decimals, as JSON (non-finite becomes null).
fn rounded(value: f64, digits: i32) -> Value {
    let scale = 10f64.powi(digits);
    serde_json::Number::from_f64((value * scale).round() / scale).map_or(Value::Null, Value::Number)
}

/// Latencies in microseconds, up to an hour.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant, valid histogram bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// CPU seconds this harness process has used.
fn own_cpu_s() -> f64 {
    proc_cpu_s("/proc/self/stat").unwrap_or(0.0)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// The team-webhook body of event `i` (unique `data.meeting.id` = `mtg_{i}`).
fn meeting_body(i: u64, account: &str, team: &str) -> Bytes {
    Bytes::from(format!(
        concat!(
            r#"{{"eventType":"meeting.completed","data":{{"#,
            r#""meeting":{{"id":"mtg_{i}","name":"Project Sync","startTime":"2025-10-10T10:23:27.000Z","#,
            r#""ownerName":"Alex Rivers","participants":["+12345678900"],"isPrivate":false}},"#,
            r#""organization":{{"accountId":"{account}","teamId":"{team}"}},"#,
            r#""assets":{{"transcriptionUrl":"https://example.com/t.txt"}}}}}}"#
        ),
        i = i,
        account = account,
        team = team
    ))
}

/// A published team event: the id Herald gave it and when its accepted
/// publish was sent.
type Sent = OnceLock<(Box<str>, Instant)>;

#[derive(Deserialize)]
struct Accepted {
    id: String,
}

/// Publishes `meeting.completed` round-robin over the teams (or posts the
/// same bodies to the receiver's `/loop` for the limit).
/// A team with a key and one `meeting.completed` webhook to `url`.
struct Team {
    id: String,
    key: String,
    webhook: String,
}

async fn team_with_webhook(api: &mut Api, account: &str, name: &str, url: String) -> anyhow::Result<Team> {
    let id = field(
        &api.create(
            &format!("/api/v1/accounts/{account}/teams"),
            ADMIN_KEY,
            &json!({ "name": name }),
        )
        .await?,
        "id",
    )?;
    let key = field(
        &api.create(&format!("/api/v1/teams/{id}/keys"), ADMIN_KEY, &json!({}))
            .await?,
        "key",
    )?;
    let webhook = field(
        &api.create(
            "/api/v1/webhooks",
            &key,
            &json!({"name": name, "url": url, "eventTypes": ["meeting.completed"]}),
        )
        .await?,
        "id",
    )?;
    Ok(Team { id, key, webhook })
}

/// The deliveries of a paced job's events to one endpoint, checked.
#[derive(Default)]
struct EndpointCheck {
    delivered: u64,
    missing: u64,
    duplicates: u64,
    wrong: u64,
}

impl EndpointCheck {
    /// Takes the deliveries of `job`'s events to `endpoint` out of
    /// `arrivals`: counts them, checks each body, and hands each delivered
    /// event's publish time and first arrival to `each`.
    fn take(
        &mut self,
        job: &MeetingJob,
        endpoint: u32,
        arrivals: &mut crate::receiver::TeamTable,
        mut each: impl FnMut(Instant, Instant) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        for (i, slot) in job.sent.iter().enumerate() {
            let Some((id, sent)) = slot.get() else {
                continue;
            };
            let Some(record) = arrivals.remove(&(endpoint, id.clone())) else {
                self.missing += 1;
                continue;
            };
            let meeting = format!("mtg_{i}");
            if !record.body_ok || record.meeting_id.as_deref() != Some(meeting.as_str()) {
                self.wrong += 1;
            }
            let Some(first) = record.first_delivery() else {
                self.missing += 1;
                continue;
            };
            self.delivered += 1;
            self.duplicates += record.delivered().saturating_sub(1) as u64;
            each(*sent, first)?;
        }
        Ok(())
    }
}

struct MeetingJob {
    account: String,
    teams: Vec<String>,
    path: &'static str,
    sent: Vec<Sent>,
}

impl Job for MeetingJob {
    fn request(&self, i: u64) -> (String, Bytes) {
        let team = &self.teams[(i % self.teams.len() as u64) as usize];
        (self.path.to_owned(), meeting_body(i, &self.account, team))
    }

    fn done(&self, i: u64, sent: Instant, body: &[u8]) {
        if let Some(slot) = self.sent.get(i as usize)
            && let Ok(accepted) = serde_json::from_slice::<Accepted>(body)
        {
            let _ = slot.set((accepted.id.into_boxed_str(), sent));
        }
    }
}

/// The shape of a team-webhook scenario.
struct TeamShape {
    teams: usize,
    webhooks_per_team: usize,
    /// Teams whose (only) webhook hangs.
    hanging_teams: usize,
    /// The receiver answers 503 for this long from the first publish.
    fail_s: Option<f64>,
}

fn load_fields(report: &mut Report, load: &LoadResult) {
    report.set("publish_503", load.busy_503);
    report.set("publish_failed", load.failed);
    report.set("publish_conn_errors", load.conn_errors);
    report.set("publish_abandoned", load.abandoned);
    report.set_f("publish_s", (load.finished - load.started).as_secs_f64(), 3);
    report.set_f("publish_per_s", load.per_s(), 1);
    if let Some(why) = &load.first_failure {
        report.set("publish_first_failure", why.as_str());
    }
}

/// Measures the loopback limit: `job`'s bodies posted straight to the
/// receiver's `/loop` with the same client, concurrency and headers.
async fn loopback_limit(receiver: &Receiver, p: &Params, job: Arc<dyn Job>) -> anyhow::Result<f64> {
    let plan = Plan {
        concurrency: p.concurrency,
        total: 5_000_000,
        rate: None,
        deadline: Instant::now() + secs(p.limit_s),
        order: Order::Shared,
        auth: Some(bearer(ADMIN_KEY)?),
        busy_backoff: Duration::from_millis(100),
    };
    let result = client::run(&[receiver.addr], plan, job).await;
    if result.failed > 0 {
        anyhow::bail!(
            "the loopback limit run had {} failures: {:?}",
            result.failed,
            result.first_failure
        );
    }
    Ok(result.per_s())
}

/// Waits until `done()` or the deadline; answers whether it finished.
/// The resource use of all nodes together: CPU summed, peak RSS of the largest.
fn cluster_stats(nodes: &[Herald]) -> crate::server::ProcStats {
    let all: Vec<_> = nodes.iter().map(Herald::stats).collect();
    crate::server::ProcStats {
        peak_rss_mb: all.iter().map(|s| s.peak_rss_mb).fold(0.0, f64::max),
        rss_mb: all.iter().map(|s| s.rss_mb).fold(0.0, f64::max),
        cpu_s: all.iter().map(|s| s.cpu_s).sum(),
        wal_mb: all.iter().map(|s| s.wal_mb).fold(0.0, f64::max),
    }
}

async fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn single(p: &Params) -> anyhow::Result<Report> {
    let shape = TeamShape {
        teams: 1,
        webhooks_per_team: 1,
        hanging_teams: 0,
        fail_s: None,
    };
    run_team("single", p, shape).await
}

pub async fn fanout(p: &Params) -> anyhow::Result<Report> {
    let shape = TeamShape {
        teams: 1,
        webhooks_per_team: p.endpoints.max(1),
        hanging_teams: 0,
        fail_s: None,
    };
    run_team("fanout", p, shape).await
}

pub async fn paced(p: &Params) -> anyhow::Result<Report> {
    let shape = TeamShape {
        teams: 1,
        webhooks_per_team: 1,
        hanging_teams: 0,
        fail_s: None,
    };
    run_team("paced", p, shape).await
}

pub async fn isolation(p: &Params) -> anyhow::Result<Report> {
    let teams = p.endpoints.max(1);
    let shape = TeamShape {
        teams,
        webhooks_per_team: 1,
        hanging_teams: p.hang.min(teams.saturating_sub(1)),
        fail_s: None,
    };
    run_team("isolation", p, shape).await
}

pub async fn backlog(p: &Params) -> anyhow::Result<Report> {
    let shape = TeamShape {
        teams: 1,
        webhooks_per_team: 1,
        hanging_teams: 0,
        fail_s: Some(p.fail_s),
    };
    run_team("backlog", p, shape).await
}

/// Whether team `t` of `teams` hangs: spread evenly (every fifth of 100).
fn team_hangs(t: usize, teams: usize, hanging: usize) -> bool {
    hanging > 0 && (t * hanging) % teams < hanging
}

async fn run_team(name: &str, p: &Params, shape: TeamShape) -> anyhow::Result<Report> {
    let Some(base) = &p.postgres_url else {
        return run_team_on(name, p, shape, None).await;
    };
    let schema = crate::server::BenchSchema::create(base).await?;
    let report = run_team_on(name, p, shape, Some(&schema.url)).await;
    // The servers have stopped (or were killed on drop): nothing holds the
    // schema any more.
    let dropped = schema.drop_schema().await;
    let report = report?;
    dropped?;
    Ok(report)
}

/// Starts `p.nodes` servers on the store (a fresh SQLite file when
/// `database_url` is `None`).
async fn start_nodes(p: &Params, database_url: Option<&str>) -> anyhow::Result<Vec<Herald>> {
    let mut nodes = Vec::with_capacity(p.nodes.max(1));
    // Several nodes on one machine share its cores, as separate machines
    // would not: each gets its share of threads instead of one per core.
    let threads = (p.nodes > 1).then(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        (cores / p.nodes).max(1)
    });
    for _ in 0..p.nodes.max(1) {
        nodes.push(Herald::start(&p.herald_bin, database_url, threads, &p.server_env).await?);
    }
    Ok(nodes)
}

async fn run_team_on(name: &str, p: &Params, shape: TeamShape, database_url: Option<&str>) -> anyhow::Result<Report> {
    let mut report = Report::new(name);
    let cpu_at_start = own_cpu_s();
    let nodes = start_nodes(p, database_url).await?;
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let herald = &nodes[0];
    report.set("store", if database_url.is_some() { "postgres" } else { "sqlite" });
    report.set("nodes", nodes.len() as u64);
    let receiver = Receiver::start().await?;

    // Setup through the public API.
    let mut api = Api::new(herald.addr);
    let account = field(
        &api.create("/api/v1/accounts", ADMIN_KEY, &json!({"name": "Bench"}))
            .await?,
        "id",
    )?;
    let mut teams = Vec::with_capacity(shape.teams);
    // Per team: the endpoint indices that should receive its events.
    let mut healthy: Vec<Vec<u32>> = Vec::with_capacity(shape.teams);
    let mut endpoint = 0u32;
    let setup_started = Instant::now();
    for t in 0..shape.teams {
        let team = field(
            &api.create(
                &format!("/api/v1/accounts/{account}/teams"),
                ADMIN_KEY,
                &json!({"name": format!("team {t}")}),
            )
            .await?,
            "id",
        )?;
        let key = field(
            &api.create(&format!("/api/v1/teams/{team}/keys"), ADMIN_KEY, &json!({}))
                .await?,
            "key",
        )?;
        let hangs = team_hangs(t, shape.teams, shape.hanging_teams);
        let mut mine = Vec::new();
        for _ in 0..shape.webhooks_per_team {
            let path = if hangs {
                format!("/hang/{endpoint}")
            } else {
                format!("/ep/{endpoint}")
            };
            api.create(
                "/api/v1/webhooks",
                &key,
                &json!({"name": format!("bench {endpoint}"), "url": receiver.url(&path),
                        "eventTypes": ["meeting.completed"]}),
            )
            .await?;
            if !hangs {
                mine.push(endpoint);
            }
            endpoint += 1;
        }
        teams.push(team);
        healthy.push(mine);
    }
    report.set_f("setup_s", setup_started.elapsed().as_secs_f64(), 3);

    // The loopback limit, with the same client, concurrency and bodies.
    let loop_job = Arc::new(MeetingJob {
        account: account.clone(),
        teams: teams.clone(),
        path: "/loop",
        sent: Vec::new(),
    });
    let limit = loopback_limit(&receiver, p, loop_job).await?;

    // Publish.
    let total = match p.rate {
        Some(rate) if p.events == 0 => (rate * p.duration_s).round() as u64,
        _ => p.events,
    };
    let job = Arc::new(MeetingJob {
        account,
        teams,
        path: "/api/v1/events",
        sent: (0..total).map(|_| OnceLock::new()).collect(),
    });
    // A paced run gets slack past its nominal length to finish its schedule.
    let publish_window = match p.rate {
        Some(_) => p.duration_s * 1.2 + 5.0,
        None => p.duration_s,
    };
    let plan = Plan {
        concurrency: p.concurrency,
        total,
        rate: p.rate,
        deadline: Instant::now() + secs(publish_window),
        order: Order::Shared,
        auth: Some(bearer(ADMIN_KEY)?),
        busy_backoff: Duration::from_millis(100),
    };
    if let Some(fail_s) = shape.fail_s {
        receiver.fail_until(Instant::now() + secs(fail_s));
    }
    let server_cpu_before = cluster_stats(&nodes).cpu_s;
    let bench_cpu_before = own_cpu_s();
    let load = client::run(&addrs, plan, Arc::clone(&job) as Arc<dyn Job>).await;

    // Wait (bounded) for every delivery of every accepted event.
    let expected: u64 = job
        .sent
        .iter()
        .enumerate()
        .filter(|(_, s)| s.get().is_some())
        .map(|(i, _)| healthy[i % healthy.len()].len() as u64)
        .sum();
    let counts = receiver.counts();
    let all_arrived = wait_until(Instant::now() + secs(p.wait_s), || {
        counts.team_delivered.load(std::sync::atomic::Ordering::Relaxed) >= expected
    })
    .await;
    let server = cluster_stats(&nodes);
    let bench_cpu_after = own_cpu_s();

    // Check each expected delivery.
    let (mut arrivals, _) = receiver.take();
    let mut latency = histogram();
    let mut delivered = 0u64;
    let mut missing = 0u64;
    let mut duplicates = 0u64;
    let mut wrong = 0u64;
    let mut last_arrival = load.started;
    let mut lateness = histogram();
    // The same, by which retry it was (after the first attempt, the second…).
    let mut lateness_by_gap: Vec<Histogram<u64>> = STANDARD_DELAYS_S.iter().map(|_| histogram()).collect();
    // When the latest retry was due, from the start of publishing.
    let mut worst_late_at_s = 0.0;
    let mut max_late_ms = f64::MIN;
    let mut min_late_ms = f64::MAX;
    let mut retried_events = 0u64;
    let mut retry_gaps = 0u64;
    // Per second from the start of publishing: events published, attempts
    // arriving, and the lateness of the retries due in that second.
    let mut by_second = BySecond::default();
    let mut max_attempts = 0usize;
    let mut events = 0u64;
    let mut latencies = match &p.latencies {
        Some(path) => Some(Latencies::create(path, load.started)?),
        None => None,
    };
    for (i, slot) in job.sent.iter().enumerate() {
        let Some((id, sent)) = slot.get() else {
            continue;
        };
        events += 1;
        by_second.published(sent.saturating_duration_since(load.started).as_secs_f64());
        let meeting = format!("mtg_{i}");
        for &n in &healthy[i % healthy.len()] {
            let Some(record) = arrivals.remove(&(n, id.clone())) else {
                missing += 1;
                continue;
            };
            if !record.body_ok || record.meeting_id.as_deref() != Some(meeting.as_str()) {
                wrong += 1;
            }
            max_attempts = max_attempts.max(record.arrivals.len());
            for (at, _) in &record.arrivals {
                by_second.arrived((*at - load.started).as_secs_f64());
            }
            if record.arrivals.len() > 1 {
                retried_events += 1;
                for (k, pair) in record.arrivals.windows(2).enumerate() {
                    let gap = (pair[1].0 - pair[0].0).as_secs_f64() * 1000.0;
                    let Some(planned) = STANDARD_DELAYS_S.get(k) else {
                        continue;
                    };
                    let late = gap - planned * 1000.0;
                    by_second.retried((pair[0].0 - load.started).as_secs_f64() + planned, late);
                    if late > max_late_ms {
                        worst_late_at_s = (pair[0].0 - load.started).as_secs_f64() + planned;
                    }
                    max_late_ms = max_late_ms.max(late);
                    min_late_ms = min_late_ms.min(late);
                    let _ = lateness.record((late.max(0.0) * 1000.0) as u64);
                    if let Some(h) = lateness_by_gap.get_mut(k) {
                        let _ = h.record((late.max(0.0) * 1000.0) as u64);
                    }
                    retry_gaps += 1;
                }
            }
            let Some(first) = record.first_delivery() else {
                missing += 1;
                continue;
            };
            delivered += 1;
            duplicates += record.delivered().saturating_sub(1) as u64;
            last_arrival = last_arrival.max(first);
            let _ = latency.record(first.saturating_duration_since(*sent).as_micros() as u64);
            if let Some(out) = latencies.as_mut() {
                out.write(load.started, *sent, first)?;
            }
        }
    }
    if let Some(out) = latencies {
        out.finish()?;
    }
    let unexpected = arrivals.values().filter(|r| r.delivered() > 0).count();
    let span = (last_arrival - load.started).as_secs_f64();
    let per_s = if span > 0.0 { delivered as f64 / span } else { 0.0 };

    report.set("events", events);
    report.set("deliveries", delivered);
    report.set_f("deliveries_per_s", per_s, 1);
    report.set_f("limit_per_s", limit, 1);
    report.set_f("limit_s", p.limit_s, 1);
    report.set_f("ratio", if limit > 0.0 { per_s / limit } else { 0.0 }, 4);
    report.set_f("p50_ms", ms(&latency, 0.5), 3);
    report.set_f("p99_ms", ms(&latency, 0.99), 3);
    report.set_f("max_ms", ms(&latency, 1.0), 3);
    report.set_f("server_rss_mb", server.peak_rss_mb, 1);
    report.set_f("server_cpu_s", server.cpu_s, 2);
    report.set_f("wal_mb", server.wal_mb, 1);
    report.set_f("ready_ms", herald.ready_ms, 1);
    report.set("expected_deliveries", expected);
    report.set("missing", missing);
    report.set("duplicates", duplicates);
    report.set(
        "bad_bodies",
        wrong + counts.bad_bodies.load(std::sync::atomic::Ordering::Relaxed),
    );
    report.set("unexpected_deliveries", unexpected as u64);
    report.set("all_arrived", all_arrived);
    report.set("concurrency", p.concurrency as u64);
    if let Some(rate) = p.rate {
        report.set_f("rate", rate, 1);
        report.set_f("max_pace_lag_ms", load.max_lag_ms, 3);
    }
    report.set("endpoints", u64::from(endpoint));
    if shape.hanging_teams > 0 {
        report.set("hanging_endpoints", shape.hanging_teams as u64);
        report.set(
            "hang_arrivals",
            counts.hang_arrivals.load(std::sync::atomic::Ordering::Relaxed),
        );
    }
    load_fields(&mut report, &load);
    report.set_f("delivery_span_s", span, 3);
    if let Some(fail_s) = shape.fail_s {
        report.set_f("fail_s", fail_s, 1);
        report.set("retried_events", retried_events);
        report.set("retry_gaps", retry_gaps);
        report.set("max_attempts_seen", max_attempts as u64);
        if retry_gaps > 0 {
            report.set_f("retry_max_late_ms", max_late_ms, 1);
            report.set_f("retry_min_late_ms", min_late_ms, 1);
            report.set_f("retry_p50_late_ms", ms(&lateness, 0.5), 1);
            report.set_f("retry_p99_late_ms", ms(&lateness, 0.99), 1);
            let by_gap = lateness_by_gap.iter().map(|h| rounded(ms(h, 0.99), 1)).collect();
            report.set("retry_p99_late_ms_by_retry", Value::Array(by_gap));
            report.set_f("retry_worst_late_due_at_s", worst_late_at_s, 2);
            by_second.report(&mut report);
        }
    }
    report.set_f("server_rss_end_mb", server.rss_mb, 1);
    report.set_f("server_cpu_load_s", server.cpu_s - server_cpu_before, 2);
    report.set_f("bench_cpu_load_s", bench_cpu_after - bench_cpu_before, 2);
    report.set_f("bench_cpu_s", bench_cpu_after - cpu_at_start, 2);
    report.set(
        "server_log_lines",
        nodes.iter().map(|n| n.log_lines() as u64).sum::<u64>(),
    );
    if let Some(bad) = receiver.first_bad() {
        report.set("first_bad_body", bad);
    }
    report.passed = missing == 0 && wrong == 0 && load.failed == 0;
    if missing > 0 {
        report.set("server_log_tail", herald.log_tail());
    }
    receiver.stop().await;
    for node in nodes {
        node.stop().await;
    }
    Ok(report)
}

/// Real-time events: bot `i % bots` gets its `i / bots`-th event.
struct RtJob {
    bot_ids: Vec<String>,
    path: Option<&'static str>,
    sent: Vec<OnceLock<Instant>>,
}

fn transcript_body(bot: u64, seq: u64) -> Bytes {
    Bytes::from(format!(
        concat!(
            r#"{{"event":"transcript.data","data":{{"seq":{seq},"bot":{bot},"#,
            r#""words":[{{"text":"this is line {seq} of the meeting","#,
            r#""start_timestamp":{{"relative":{rel}.0}},"end_timestamp":{{"relative":{rel}.5}}}}],"#,
            r#""participant":{{"id":100,"name":"Alex Rivers","is_host":true,"platform":"desktop","extra_data":{{}}}}}}}}"#
        ),
        seq = seq,
        bot = bot,
        rel = seq / 10
    ))
}

impl Job for RtJob {
    fn request(&self, i: u64) -> (String, Bytes) {
        let bots = self.bot_ids.len() as u64;
        let (bot, seq) = (i % bots, i / bots);
        let path = match self.path {
            Some(path) => path.to_owned(),
            None => format!("/api/v1/bot/{}/events", self.bot_ids[bot as usize]),
        };
        (path, transcript_body(bot, seq))
    }

    fn done(&self, i: u64, sent: Instant, _body: &[u8]) {
        if let Some(slot) = self.sent.get(i as usize) {
            let _ = slot.set(sent);
        }
    }
}

/// A `backlog` run second by second, from the start of publishing: it shows
/// where retries ran late against what was published and attempted then.
#[derive(Default)]
struct BySecond {
    published: Vec<u64>,
    arrived: Vec<u64>,
    /// The lateness (ms) of each retry, by the second it was due in.
    late: Vec<Vec<f64>>,
}

impl BySecond {
    fn at<T: Default + Clone>(v: &mut Vec<T>, s: f64) -> &mut T {
        let i = s.max(0.0) as usize;
        if v.len() <= i {
            v.resize(i + 1, T::default());
        }
        &mut v[i]
    }

    fn published(&mut self, s: f64) {
        *Self::at(&mut self.published, s) += 1;
    }

    fn arrived(&mut self, s: f64) {
        *Self::at(&mut self.arrived, s) += 1;
    }

    fn retried(&mut self, due_s: f64, late_ms: f64) {
        Self::at(&mut self.late, due_s).push(late_ms);
    }

    fn report(mut self, report: &mut Report) {
        let counts = |v: &[u64]| Value::Array(v.iter().map(|&n| n.into()).collect());
        report.set("published_by_s", counts(&self.published));
        report.set("attempts_by_s", counts(&self.arrived));
        let due: Vec<u64> = self.late.iter().map(|l| l.len() as u64).collect();
        report.set("retries_due_by_s", counts(&due));
        let p99 = self
            .late
            .iter_mut()
            .map(|l| {
                l.sort_by(f64::total_cmp);
                let p99 = l.get((l.len() * 99 / 100).min(l.len().saturating_sub(1))).copied();
                rounded(p99.unwrap_or(0.0).max(0.0), 1)
            })
            .collect();
        report.set("retry_p99_late_ms_by_s", Value::Array(p99));
    }
}

pub async fn realtime(p: &Params) -> anyhow::Result<Report> {
    let mut report = Report::new("realtime");
    let herald = Herald::start(&p.herald_bin, None, None, &p.server_env).await?;
    let receiver = Receiver::start().await?;
    let mut api = Api::new(herald.addr);
    let account = field(
        &api.create("/api/v1/accounts", ADMIN_KEY, &json!({"name": "Bench"}))
            .await?,
        "id",
    )?;
    let team = field(
        &api.create(
            &format!("/api/v1/accounts/{account}/teams"),
            ADMIN_KEY,
            &json!({"name": "bots"}),
        )
        .await?,
        "id",
    )?;
    let key = field(
        &api.create(&format!("/api/v1/teams/{team}/keys"), ADMIN_KEY, &json!({}))
            .await?,
        "key",
    )?;
    let bots = p.endpoints.max(1);
    let mut bot_ids = Vec::with_capacity(bots);
    let setup_started = Instant::now();
    for b in 0..bots {
        let body = json!({
            "meeting_url": "https://meet.google.com/abc-defg-hij",
            "metadata": {"bench": b},
            "recording_config": {"realtime_endpoints": [{
                "type": "webhook",
                "url": receiver.url(&format!("/rt/{b}")),
                "events": ["transcript.data"],
            }]},
        });
        let answer = api.create("/api/v1/bot/", &key, &body).await?;
        bot_ids.push(field(&answer, "id")?);
    }
    report.set_f("setup_s", setup_started.elapsed().as_secs_f64(), 3);

    let loop_job = Arc::new(RtJob {
        bot_ids: bot_ids.clone(),
        path: Some("/loop"),
        sent: Vec::new(),
    });
    let limit = loopback_limit(&receiver, p, loop_job).await?;

    let rate = p.rate.unwrap_or(bots as f64 * p.bot_rate);
    let total = if p.events > 0 {
        p.events
    } else {
        (rate * p.duration_s).round() as u64
    };
    let job = Arc::new(RtJob {
        bot_ids,
        path: None,
        sent: (0..total).map(|_| OnceLock::new()).collect(),
    });
    let plan = Plan {
        concurrency: p.concurrency,
        total,
        rate: Some(rate),
        deadline: Instant::now() + secs(p.duration_s * 1.2 + 5.0),
        // One bot's events go through one connection, in order.
        order: Order::ByKey(bots as u64),
        auth: Some(bearer(ADMIN_KEY)?),
        busy_backoff: Duration::from_millis(100),
    };
    let server_cpu_before = herald.stats().cpu_s;
    let bench_cpu_before = own_cpu_s();
    let load = client::run(&[herald.addr], plan, Arc::clone(&job) as Arc<dyn Job>).await;
    let expected = job.sent.iter().filter(|s| s.get().is_some()).count() as u64;
    let counts = receiver.counts();
    let all_arrived = wait_until(Instant::now() + secs(p.wait_s), || {
        counts.rt_delivered.load(std::sync::atomic::Ordering::Relaxed) >= expected
    })
    .await;
    let server = herald.stats();
    let bench_cpu_after = own_cpu_s();

    let (_, mut arrivals) = receiver.take();
    let mut latency = histogram();
    let (mut delivered, mut missing, mut duplicates) = (0u64, 0u64, 0u64);
    let mut last_arrival = load.started;
    let bots_u = bots as u64;
    for (i, slot) in job.sent.iter().enumerate() {
        let Some(sent) = slot.get() else {
            continue;
        };
        let i = i as u64;
        let Some(record) = arrivals.remove(&((i % bots_u) as u32, i / bots_u)) else {
            missing += 1;
            continue;
        };
        delivered += 1;
        duplicates += u64::from(record.count.saturating_sub(1));
        last_arrival = last_arrival.max(record.first);
        let _ = latency.record(record.first.saturating_duration_since(*sent).as_micros() as u64);
    }
    let span = (last_arrival - load.started).as_secs_f64();
    let per_s = if span > 0.0 { delivered as f64 / span } else { 0.0 };
    let out_of_order = counts.rt_out_of_order.load(std::sync::atomic::Ordering::Relaxed);
    let bad = counts.bad_bodies.load(std::sync::atomic::Ordering::Relaxed);
    report.set("events", expected);
    report.set("deliveries", delivered);
    report.set_f("deliveries_per_s", per_s, 1);
    report.set_f("limit_per_s", limit, 1);
    report.set_f("limit_s", p.limit_s, 1);
    report.set_f("ratio", if limit > 0.0 { per_s / limit } else { 0.0 }, 4);
    report.set_f("p50_ms", ms(&latency, 0.5), 3);
    report.set_f("p99_ms", ms(&latency, 0.99), 3);
    report.set_f("max_ms", ms(&latency, 1.0), 3);
    report.set_f("server_rss_mb", server.peak_rss_mb, 1);
    report.set_f("server_cpu_s", server.cpu_s, 2);
    report.set_f("wal_mb", server.wal_mb, 1);
    report.set_f("ready_ms", herald.ready_ms, 1);
    report.set("bots", bots_u);
    report.set_f("rate", rate, 1);
    report.set("planned_events", total);
    report.set("missing", missing);
    report.set("duplicates", duplicates);
    report.set("out_of_order", out_of_order);
    report.set("bad_bodies", bad);
    report.set("unexpected_deliveries", arrivals.len() as u64);
    report.set("all_arrived", all_arrived);
    report.set("concurrency", p.concurrency as u64);
    report.set_f("max_pace_lag_ms", load.max_lag_ms, 3);
    load_fields(&mut report, &load);
    report.set_f("delivery_span_s", span, 3);
    report.set_f("server_rss_end_mb", server.rss_mb, 1);
    report.set_f("server_cpu_load_s", server.cpu_s - server_cpu_before, 2);
    report.set_f("bench_cpu_load_s", bench_cpu_after - bench_cpu_before, 2);
    report.set("server_log_lines", herald.log_lines() as u64);
    if let Some(bad) = receiver.first_bad() {
        report.set("first_bad_body", bad);
    }
    report.passed = missing == 0 && bad == 0 && out_of_order == 0 && load.failed == 0;
    receiver.stop().await;
    herald.stop().await;
    Ok(report)
}

pub async fn idle(p: &Params) -> anyhow::Result<Report> {
    let mut report = Report::new("idle");
    let herald = Herald::start(&p.herald_bin, None, None, &p.server_env).await?;
    tokio::time::sleep(secs(p.idle_s)).await;
    let stats = herald.stats();
    report.set_f("ready_ms", herald.ready_ms, 1);
    report.set_f("idle_s", p.idle_s, 1);
    report.set_f("server_rss_mb", stats.rss_mb, 1);
    report.set_f("server_peak_rss_mb", stats.peak_rss_mb, 1);
    report.set_f("server_cpu_s", stats.cpu_s, 3);
    herald.stop().await;
    Ok(report)
}

/// What a scenario answers when it could not run to the end.
pub fn failed(scenario: &str, error: &anyhow::Error) -> Report {
    let mut report = Report::new(scenario);
    report.set("error", format!("{error:#}"));
    report.passed = false;
    report
}

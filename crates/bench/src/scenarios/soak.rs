//! `soak`: `paced` traffic for a long time against a server with a short
//! retention, sampled as it goes.
//!
//! The other scenarios last seconds: they cannot show a store that keeps
//! growing, a server whose memory creeps up, or a minute whose latency jumps
//! when retention deletes a batch. Here one team with one webhook (`/ep/0`)
//! gets `--rate` events/s (1,000; smoke 200) for `--duration-s` (600 s; smoke
//! 20 s), publish-to-arrival latency measured as in `paced`, from a server
//! started with `HERALD_RETENTION` = `--retention-s` (60 s; smoke 5 s, whole
//! seconds). Every `sample_s` from the first publish the harness reads the
//! store's size (SQLite: the database file and its `-wal`; PostgreSQL:
//! `pg_total_relation_size` of every table in the run's schema) and the
//! server's RSS; after the run it splits the latencies by the interval their
//! events were published in. Two judgements sum it up: `size_levels_off`
//! (the store stopped growing once retention ran) and `p99_worst_ratio` (the
//! worst interval's p99 over the median interval's).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::{
    EndpointCheck, Latencies, MeetingJob, Params, Report, cluster_stats, histogram, load_fields, ms, own_cpu_s,
    rounded, secs, start_nodes, team_with_webhook, wait_until,
};
use crate::client::{self, Api, Job, Order, Plan, bearer, field};
use crate::receiver::Receiver;
use crate::server::{ADMIN_KEY, BenchSchema, Herald};

/// The webhook's receiver endpoint (`/ep/0`).
const ENDPOINT: u32 = 0;
/// The paced rate when `--rate` is not given.
const DEFAULT_RATE: f64 = 1_000.0;
/// The longest sample interval: a minute, as an operator's dashboard would
/// show it.
const MAX_SAMPLE_S: f64 = 60.0;
/// Growth of the store, over the samples after two retention lengths, below
/// which it is judged to have levelled off.
const LEVEL_OFF_GROWTH_PCT: f64 = 20.0;
const MIB: f64 = 1024.0 * 1024.0;

/// Runs `soak` with the server's retention `retention_s` (rounded to whole
/// seconds, at least 1: `HERALD_RETENTION` takes a whole number).
pub async fn soak(p: &Params, retention_s: f64) -> anyhow::Result<Report> {
    let retention_s = retention_s.round().max(1.0) as u64;
    // Holds the SQLite store (so its files can be measured: the server's own
    // temporary directory is private to it).
    let dir = tempfile::Builder::new()
        .prefix("herald-bench-soak-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let Some(base) = &p.postgres_url else {
        let db = dir.path().join("herald.db");
        let url = format!("sqlite://{}", db.display());
        return soak_on(p, retention_s, &url, StoreSize::Sqlite(db)).await;
    };
    let schema = BenchSchema::create(base).await?;
    let report = match StoreSize::postgres(&schema.url).await {
        Ok(size) => soak_on(p, retention_s, &schema.url, size).await,
        Err(e) => Err(e),
    };
    // The servers have stopped (or were killed on drop) and the size
    // connection is closed: nothing holds the schema any more.
    let dropped = schema.drop_schema().await;
    let report = report?;
    dropped?;
    Ok(report)
}

/// Where the store's size is read.
enum StoreSize {
    /// The SQLite database file; its write-ahead log is beside it.
    Sqlite(PathBuf),
    /// A connection into the run's schema.
    Postgres(PgSize),
}

/// A connection to PostgreSQL, closed on drop.
struct PgSize {
    client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for PgSize {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Every table of the schema first on the connection's `search_path` (the
/// run's: [`BenchSchema`]'s URL sets it), with its indexes and TOAST: what
/// retention must keep from growing.
const SCHEMA_SIZE_SQL: &str = "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = current_schema() AND c.relkind = 'r'";

impl StoreSize {
    async fn postgres(url: &str) -> anyhow::Result<Self> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .context("cannot connect to PostgreSQL to measure the store")?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self::Postgres(PgSize { client, driver }))
    }

    /// The store's size now, in MiB.
    async fn mb(&self) -> anyhow::Result<f64> {
        match self {
            Self::Sqlite(db) => Ok((file_len(db)? + file_len(&wal_path(db))?) as f64 / MIB),
            Self::Postgres(pg) => {
                let row = pg
                    .client
                    .query_one(SCHEMA_SIZE_SQL, &[])
                    .await
                    .context("cannot read the schema's size")?;
                let bytes: i64 = row.try_get(0).context("cannot read the schema's size")?;
                Ok(bytes as f64 / MIB)
            }
        }
    }

    /// The SQLite write-ahead log's share of [`StoreSize::mb`], in MiB
    /// (`None` on PostgreSQL). The server lets it grow to its rewind
    /// length before it starts it over, and the file keeps its peak: in a
    /// short run that, not the events, is most of the growth.
    fn wal_mb(&self) -> Option<f64> {
        match self {
            Self::Sqlite(db) => Some(file_len(&wal_path(db)).unwrap_or(0) as f64 / MIB),
            Self::Postgres(_) => None,
        }
    }
}

/// The write-ahead log beside the SQLite database `db`.
fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// A file's length; a file not there (yet) is empty.
fn file_len(path: &Path) -> anyhow::Result<u64> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("cannot read the size of {}", path.display())),
    }
}

/// The sample interval for a run of `length_s`: a quarter of it, so that a
/// short run still has a few samples, at most [`MAX_SAMPLE_S`].
fn sample_interval_s(length_s: f64) -> f64 {
    (length_s / 4.0).clamp(0.1, MAX_SAMPLE_S)
}

/// What one sample read, at the end of its interval.
struct Sample {
    /// `None` when the size could not be read.
    size_mb: Option<f64>,
    /// The SQLite write-ahead log, part of `size_mb`.
    wal_mb: Option<f64>,
    /// The largest node's resident set.
    rss_mb: f64,
}

/// Takes `count` samples, one every `sample_s` from `started`; the first
/// error reading the store's size goes to `size_error`.
async fn sample(
    nodes: &[Herald],
    store: &StoreSize,
    started: Instant,
    sample_s: f64,
    count: usize,
    size_error: &mut Option<String>,
) -> Vec<Sample> {
    let mut samples = Vec::with_capacity(count);
    for k in 1..=count {
        let at_s = sample_s * k as f64;
        tokio::time::sleep_until((started + secs(at_s)).into()).await;
        let rss_mb = cluster_stats(nodes).rss_mb;
        let size_mb = match store.mb().await {
            Ok(mb) => Some(mb),
            Err(e) => {
                size_error.get_or_insert_with(|| format!("{e:#}"));
                None
            }
        };
        // A long run shows it is alive, and how it goes, as it goes.
        eprintln!(
            "herald-bench: soak {at_s:.0} s: store {} MB, RSS {rss_mb:.1} MB",
            size_mb.map_or_else(|| "?".to_owned(), |mb| format!("{mb:.1}"))
        );
        samples.push(Sample {
            size_mb,
            wal_mb: store.wal_mb(),
            rss_mb,
        });
    }
    samples
}

/// The store's growth in percent from the first to the last of the samples
/// taken once two retention lengths have passed (the first fills the
/// store, the second lets retention catch up and the space it frees be
/// reused); `None` with fewer than two such samples. `sizes[k]` was read at
/// `(k + 1) × sample_s`.
fn growth_after_retention_pct(sizes: &[Option<f64>], sample_s: f64, retention_s: f64) -> Option<f64> {
    let settled: Vec<f64> = sizes
        .iter()
        .enumerate()
        .filter(|(k, _)| (*k + 1) as f64 * sample_s >= 2.0 * retention_s - 1e-9)
        .filter_map(|(_, size)| *size)
        .collect();
    let (&first, &last) = (settled.first()?, settled.last()?);
    (settled.len() >= 2 && first > 0.0).then(|| (last - first) / first * 100.0)
}

/// The largest of `p99s` over their median: how far the worst interval's
/// tail stood above a typical one's; `None` without a positive median.
fn worst_over_median(p99s: &[f64]) -> Option<f64> {
    let mut sorted = p99s.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let worst = *sorted.last()?;
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (median > 0.0).then(|| worst / median)
}

fn numbers(values: impl IntoIterator<Item = Option<f64>>, digits: i32) -> Value {
    Value::Array(
        values
            .into_iter()
            .map(|v| v.map_or(Value::Null, |v| rounded(v, digits)))
            .collect(),
    )
}

async fn soak_on(p: &Params, retention_s: u64, database_url: &str, store: StoreSize) -> anyhow::Result<Report> {
    let mut report = Report::new("soak");
    let cpu_at_start = own_cpu_s();
    let mut started_with = p.clone();
    started_with
        .server_env
        .push(("HERALD_RETENTION".to_owned(), format!("{retention_s}s")));
    let nodes = start_nodes(&started_with, Some(database_url)).await?;
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let herald = &nodes[0];
    report.set(
        "store",
        if matches!(store, StoreSize::Postgres(_)) {
            "postgres"
        } else {
            "sqlite"
        },
    );
    report.set("nodes", nodes.len() as u64);
    let receiver = Receiver::start().await?;

    let mut api = Api::new(herald.addr);
    let account = field(
        &api.create("/api/v1/accounts", ADMIN_KEY, &json!({"name": "Bench"}))
            .await?,
        "id",
    )?;
    let team = team_with_webhook(&mut api, &account, "soak", receiver.url(&format!("/ep/{ENDPOINT}"))).await?;

    // Publish, sampling as it goes.
    let rate = p.rate.unwrap_or(DEFAULT_RATE);
    anyhow::ensure!(
        rate > 0.0 && rate.is_finite(),
        "soak paces its events: --rate must be positive"
    );
    let total = if p.events > 0 {
        p.events
    } else {
        (rate * p.duration_s).round() as u64
    };
    let length_s = total as f64 / rate;
    let sample_s = sample_interval_s(length_s);
    let count = ((length_s / sample_s + 1e-9).floor() as usize).max(1);
    let job = Arc::new(MeetingJob {
        account,
        teams: vec![team.id],
        path: "/api/v1/events",
        sent: (0..total).map(|_| OnceLock::new()).collect(),
    });
    let plan = Plan {
        concurrency: p.concurrency,
        total,
        rate: Some(rate),
        // Slack past the nominal length to finish the schedule.
        deadline: Instant::now() + secs(length_s * 1.2 + 5.0),
        order: Order::Shared,
        auth: Some(bearer(ADMIN_KEY)?),
        busy_backoff: Duration::from_millis(100),
    };
    let server_cpu_before = cluster_stats(&nodes).cpu_s;
    let mut size_error = None;
    let started = Instant::now();
    let (load, samples) = tokio::join!(
        client::run(&addrs, plan, Arc::clone(&job) as Arc<dyn Job>),
        sample(&nodes, &store, started, sample_s, count, &mut size_error),
    );
    let events = job.sent.iter().filter(|s| s.get().is_some()).count() as u64;
    let all_arrived = wait_until(Instant::now() + secs(p.wait_s), || {
        receiver.endpoint(ENDPOINT).delivered >= events
    })
    .await;
    let server = cluster_stats(&nodes);
    let store_end_mb = store.mb().await.ok();
    let wal_mb = store.wal_mb();
    let bench_cpu_end = own_cpu_s();

    // Check every delivery, its latency counted in the interval its event
    // was published in (a late publish in the last).
    let (mut arrivals, _) = receiver.take();
    let mut latency = histogram();
    let mut by_sample: Vec<Histogram<u64>> = (0..count).map(|_| histogram()).collect();
    let mut check = EndpointCheck::default();
    let mut last_arrival = load.started;
    let mut latencies = match &p.latencies {
        Some(path) => Some(Latencies::create(path, load.started)?),
        None => None,
    };
    check.take(&job, ENDPOINT, &mut arrivals, |sent, first| {
        last_arrival = last_arrival.max(first);
        let micros = first.saturating_duration_since(sent).as_micros() as u64;
        let _ = latency.record(micros);
        let k = (sent.saturating_duration_since(started).as_secs_f64() / sample_s) as usize;
        if let Some(h) = by_sample.get_mut(k.min(count - 1)) {
            let _ = h.record(micros);
        }
        if let Some(out) = latencies.as_mut() {
            out.write(load.started, sent, first)?;
        }
        Ok(())
    })?;
    let EndpointCheck {
        delivered,
        missing,
        duplicates,
        wrong,
    } = check;
    if let Some(out) = latencies {
        out.finish()?;
    }
    let unexpected = arrivals.values().filter(|r| r.delivered() > 0).count() as u64;
    let span = (last_arrival - load.started).as_secs_f64();
    let per_s = if span > 0.0 { delivered as f64 / span } else { 0.0 };
    let bad = wrong + receiver.counts().bad_bodies.load(std::sync::atomic::Ordering::Relaxed);

    // Per interval, and the judgements.
    let sizes: Vec<Option<f64>> = samples.iter().map(|s| s.size_mb).collect();
    let quantile =
        |q: f64| -> Vec<Option<f64>> { by_sample.iter().map(|h| (!h.is_empty()).then(|| ms(h, q))).collect() };
    let p99s = quantile(0.99);
    let growth = growth_after_retention_pct(&sizes, sample_s, retention_s as f64);
    let worst_ratio = worst_over_median(&p99s.iter().flatten().copied().collect::<Vec<_>>());

    report.set("events", events);
    report.set("deliveries", delivered);
    report.set_f("deliveries_per_s", per_s, 1);
    report.set_f("p50_ms", ms(&latency, 0.5), 3);
    report.set_f("p99_ms", ms(&latency, 0.99), 3);
    report.set_f("max_ms", ms(&latency, 1.0), 3);
    report.set_f("server_rss_mb", server.peak_rss_mb, 1);
    report.set_f("server_cpu_s", server.cpu_s, 2);
    if let Some(mb) = wal_mb {
        report.set_f("wal_mb", mb, 1);
    }
    report.set_f("ready_ms", herald.ready_ms, 1);
    report.set("retention_s", retention_s);
    report.set_f("sample_s", sample_s, 1);
    report.set("size_mb_by_sample", numbers(sizes.iter().copied(), 1));
    if wal_mb.is_some() {
        report.set("wal_mb_by_sample", numbers(samples.iter().map(|s| s.wal_mb), 1));
    }
    report.set("rss_mb_by_sample", numbers(samples.iter().map(|s| Some(s.rss_mb)), 1));
    report.set("p50_ms_by_sample", numbers(quantile(0.5), 3));
    report.set("p99_ms_by_sample", numbers(p99s.iter().copied(), 3));
    report.set(
        "events_by_sample",
        Value::Array(by_sample.iter().map(|h| h.len().into()).collect()),
    );
    report.set("size_levels_off", growth.map(|g| g < LEVEL_OFF_GROWTH_PCT));
    report.set("size_growth_pct", growth.map(|g| rounded(g, 1)));
    report.set("p99_worst_ratio", worst_ratio.map(|r| rounded(r, 2)));
    if let Some(mb) = store_end_mb {
        report.set_f("size_end_mb", mb, 1);
    }
    if let Some(why) = size_error {
        report.set("size_error", why);
    }
    report.set("expected_deliveries", events);
    report.set("missing", missing);
    report.set("duplicates", duplicates);
    report.set("bad_bodies", bad);
    report.set("unexpected_deliveries", unexpected);
    report.set("all_arrived", all_arrived);
    report.set("concurrency", p.concurrency as u64);
    report.set_f("rate", rate, 1);
    report.set_f("duration_s", length_s, 1);
    report.set_f("max_pace_lag_ms", load.max_lag_ms, 3);
    load_fields(&mut report, &load);
    report.set_f("delivery_span_s", span, 3);
    report.set_f("server_rss_end_mb", server.rss_mb, 1);
    report.set_f("server_cpu_load_s", server.cpu_s - server_cpu_before, 2);
    report.set_f("bench_cpu_s", bench_cpu_end - cpu_at_start, 2);
    report.set(
        "server_log_lines",
        nodes.iter().map(|n| n.log_lines() as u64).sum::<u64>(),
    );
    if let Some(first_bad) = receiver.first_bad() {
        report.set("first_bad_body", first_bad);
    }
    report.passed = missing == 0 && duplicates == 0 && bad == 0 && load.failed == 0;
    // Beside the exit status: a ten-minute run's line is often read later.
    report.set("passed", report.passed);
    if missing > 0 {
        report.set("server_log_tail", herald.log_tail());
    }
    receiver.stop().await;
    for node in nodes {
        node.stop().await;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_a_quarter_of_the_run_at_most_a_minute() {
        assert_eq!(sample_interval_s(600.0), 60.0);
        assert_eq!(sample_interval_s(20.0), 5.0);
        assert_eq!(sample_interval_s(120.0), 30.0);
    }

    #[test]
    fn growth_counts_only_samples_after_two_retentions() {
        // 60 s samples, 60 s retention: the first two samples are filling.
        let sizes = [Some(10.0), Some(40.0), Some(50.0), None, Some(55.0)];
        let growth = growth_after_retention_pct(&sizes, 60.0, 60.0).unwrap();
        assert!((growth - 37.5).abs() < 1e-9, "{growth}");
        let flat = [Some(10.0), Some(50.0), Some(52.0), Some(54.0)];
        assert!(growth_after_retention_pct(&flat, 60.0, 60.0).unwrap() < LEVEL_OFF_GROWTH_PCT);
        // Fewer than two samples after two retentions: no judgement.
        assert_eq!(growth_after_retention_pct(&[Some(1.0), Some(2.0)], 60.0, 60.0), None);
        assert_eq!(
            growth_after_retention_pct(&[Some(1.0), Some(2.0), None], 60.0, 60.0),
            None
        );
    }

    #[test]
    fn worst_ratio_is_over_the_median() {
        assert_eq!(worst_over_median(&[2.0, 1.0, 8.0]), Some(4.0));
        assert_eq!(worst_over_median(&[1.0, 2.0, 3.0, 9.0]), Some(3.6));
        assert_eq!(worst_over_median(&[]), None);
        assert_eq!(worst_over_median(&[0.0]), None);
    }
}

//! `recover`: a webhook's failed events delivered again while another
//! webhook takes paced traffic.
//!
//! Two teams, one webhook each: `/ep/0` (team A, the recovered webhook) and
//! `/ep/1` (team B, the paced one). The receiver answers 503 on `/ep/0`
//! while team A's events are published as fast as the server takes them, and
//! until every event has had its five attempts (the standard schedule: the
//! last comes ~30 s after the first; the server has no setting to shorten
//! it) and the webhook's stats count every delivery `failed`. Then `/ep/0`
//! answers 204 and team B gets `paced` traffic twice: once alone (the
//! baseline) and once with `POST /api/v1/webhooks/{id}/recover {"since": 0}`
//! sent just before the first paced publish. The recover's deliveries are
//! counted at the receiver (each event's first 2xx after its failures); the
//! paced webhook's publish-to-arrival latency is compared between the runs.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{
    EndpointCheck, Latencies, MeetingJob, Params, Report, STANDARD_DELAYS_S, cluster_stats, histogram, load_fields,
    loopback_limit, ms, own_cpu_s, secs, start_nodes, team_with_webhook, wait_until,
};
use crate::client::{self, Api, Job, LoadResult, Order, Plan, bearer, field};
use crate::receiver::Receiver;
use crate::server::{ADMIN_KEY, BenchSchema, Herald, host_cpu_ticks, steal_pct};

/// The recovered webhook's receiver endpoint (`/ep/0`).
const RECOVERED: u32 = 0;
/// The paced webhook's receiver endpoint (`/ep/1`).
const PACED: u32 = 1;
/// The paced rate when `--rate` is not given.
const DEFAULT_RATE: f64 = 1_000.0;
/// The server's `HERALD_ENDPOINT_CONCURRENCY` when it is not set.
const DEFAULT_ENDPOINT_CONCURRENCY: u64 = 32;

pub async fn recover(p: &Params) -> anyhow::Result<Report> {
    let Some(base) = &p.postgres_url else {
        return recover_on(p, None).await;
    };
    let schema = BenchSchema::create(base).await?;
    let report = recover_on(p, Some(&schema.url)).await;
    // The servers have stopped (or were killed on drop).
    let dropped = schema.drop_schema().await;
    let report = report?;
    dropped?;
    Ok(report)
}

/// One paced run to the paced webhook.
struct PacedRun {
    job: Arc<MeetingJob>,
    load: LoadResult,
    /// Accepted publishes.
    events: u64,
    all_arrived: bool,
    server_cpu_s: f64,
    steal_pct: Option<f64>,
}

/// Publishes `p.rate` events/s for `p.duration_s` to team `team` and waits
/// (bounded) for their deliveries.
async fn paced_run(
    nodes: &[Herald],
    receiver: &Receiver,
    p: &Params,
    account: &str,
    team: &str,
) -> anyhow::Result<PacedRun> {
    let rate = p.rate.unwrap_or(DEFAULT_RATE);
    let total = (rate * p.duration_s).round() as u64;
    let job = Arc::new(MeetingJob {
        account: account.to_owned(),
        teams: vec![team.to_owned()],
        path: "/api/v1/events",
        sent: (0..total).map(|_| OnceLock::new()).collect(),
    });
    let plan = Plan {
        concurrency: p.concurrency,
        total,
        rate: Some(rate),
        // Slack past the nominal length to finish the schedule.
        deadline: Instant::now() + secs(p.duration_s * 1.2 + 5.0),
        order: Order::Shared,
        auth: Some(bearer(ADMIN_KEY)?),
        busy_backoff: Duration::from_millis(100),
    };
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let delivered_before = receiver.endpoint(PACED).delivered;
    let cpu_before = cluster_stats(nodes).cpu_s;
    let ticks = host_cpu_ticks();
    let load = client::run(&addrs, plan, Arc::clone(&job) as Arc<dyn Job>).await;
    let events = job.sent.iter().filter(|s| s.get().is_some()).count() as u64;
    let all_arrived = wait_until(Instant::now() + secs(p.wait_s), || {
        receiver.endpoint(PACED).delivered >= delivered_before + events
    })
    .await;
    Ok(PacedRun {
        job,
        load,
        events,
        all_arrived,
        server_cpu_s: cluster_stats(nodes).cpu_s - cpu_before,
        steal_pct: steal_pct(ticks, host_cpu_ticks()),
    })
}

/// Records a paced run's deliveries to [`PACED`]: each one's latency in
/// `latency`, and in `during`'s histogram if it was published between
/// `during`'s two instants.
fn check_paced(
    check: &mut EndpointCheck,
    run: &PacedRun,
    arrivals: &mut crate::receiver::TeamTable,
    latency: &mut hdrhistogram::Histogram<u64>,
    mut during: Option<(&mut hdrhistogram::Histogram<u64>, Instant, Instant)>,
    mut latencies: Option<&mut Latencies>,
) -> anyhow::Result<()> {
    check.take(&run.job, PACED, arrivals, |sent, first| {
        let micros = first.saturating_duration_since(sent).as_micros() as u64;
        let _ = latency.record(micros);
        if let Some((h, from, to)) = during.as_mut()
            && sent >= *from
            && sent <= *to
        {
            let _ = h.record(micros);
        }
        if let Some(out) = latencies.as_mut() {
            out.write(run.load.started, sent, first)?;
        }
        Ok(())
    })
}

async fn recover_on(p: &Params, database_url: Option<&str>) -> anyhow::Result<Report> {
    let mut report = Report::new("recover");
    let cpu_at_start = own_cpu_s();
    let nodes = start_nodes(p, database_url).await?;
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let herald = &nodes[0];
    report.set("store", if database_url.is_some() { "postgres" } else { "sqlite" });
    report.set("nodes", nodes.len() as u64);
    let receiver = Receiver::start().await?;

    let mut api = Api::new(herald.addr);
    let account = field(
        &api.create("/api/v1/accounts", ADMIN_KEY, &json!({"name": "Bench"}))
            .await?,
        "id",
    )?;
    let setup_started = Instant::now();
    let failing = team_with_webhook(
        &mut api,
        &account,
        "recovered",
        receiver.url(&format!("/ep/{RECOVERED}")),
    )
    .await?;
    let paced = team_with_webhook(&mut api, &account, "paced", receiver.url(&format!("/ep/{PACED}"))).await?;
    report.set_f("setup_s", setup_started.elapsed().as_secs_f64(), 3);

    let loop_job = Arc::new(MeetingJob {
        account: account.clone(),
        teams: vec![failing.id.clone()],
        path: "/loop",
        sent: Vec::new(),
    });
    let limit = loopback_limit(&receiver, p, loop_job).await?;

    // 1. Team A's events, every attempt refused. Under retry pressure the
    //    server sheds publishes with 503 (retried by the client): about
    //    1,000/s were accepted in `backlog`, hence the long bound.
    receiver.fail_endpoint(RECOVERED, true);
    let job = Arc::new(MeetingJob {
        account: account.clone(),
        teams: vec![failing.id.clone()],
        path: "/api/v1/events",
        sent: (0..p.events).map(|_| OnceLock::new()).collect(),
    });
    let plan = Plan {
        concurrency: p.concurrency,
        total: p.events,
        rate: None,
        deadline: Instant::now() + secs(60.0 + p.events as f64 / 250.0),
        order: Order::Shared,
        auth: Some(bearer(ADMIN_KEY)?),
        busy_backoff: Duration::from_millis(100),
    };
    let load = client::run(&addrs, plan, Arc::clone(&job) as Arc<dyn Job>).await;
    let events = job.sent.iter().filter(|s| s.get().is_some()).count() as u64;
    let attempts = events * (STANDARD_DELAYS_S.len() as u64 + 1);
    let schedule_s: f64 = STANDARD_DELAYS_S.iter().sum();
    let all_attempted = wait_until(Instant::now() + secs(schedule_s + p.wait_s), || {
        receiver.endpoint(RECOVERED).refused >= attempts
    })
    .await;
    let attempted_at = Instant::now();
    // The last attempt's record is written after its answer: wait until the
    // webhook's stats count every delivery failed (two hours in case the
    // run crosses one).
    let stats_path = format!("/api/v1/webhooks/{}/stats?hours=2", failing.webhook);
    let stats_deadline = Instant::now() + secs(p.wait_s);
    let failed_in_stats = loop {
        let stats = api.get(&stats_path, &failing.key).await?;
        let failed: u64 = stats["buckets"]
            .as_array()
            .map(|b| b.iter().filter_map(|h| h["failed"].as_u64()).sum())
            .unwrap_or(0);
        if failed >= events || Instant::now() >= stats_deadline {
            break failed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let failed_at = Instant::now();
    let refused = receiver.endpoint(RECOVERED);
    receiver.fail_endpoint(RECOVERED, false);

    // 2. The paced webhook alone.
    let baseline = paced_run(&nodes, &receiver, p, &account, &paced.id).await?;

    // 3. The same with the recover asked for just before it.
    let recover_path = format!("/api/v1/webhooks/{}/recover", failing.webhook);
    let cpu_before_recover = cluster_stats(&nodes).cpu_s;
    let recover_sent = Instant::now();
    let (status, answer) = api.post(&recover_path, &failing.key, &json!({"since": 0})).await?;
    let recover_answered = Instant::now();
    if status != 202 {
        anyhow::bail!("POST {recover_path} answered {status}: {answer}");
    }
    let count = answer
        .get("count")
        .and_then(Value::as_u64)
        .with_context(|| format!("POST {recover_path}: no `count` in {answer}"))?;
    let with = paced_run(&nodes, &receiver, p, &account, &paced.id).await?;
    let recovered_all = wait_until(Instant::now() + secs(p.wait_s), || {
        receiver.endpoint(RECOVERED).delivered >= count
    })
    .await;
    let recover_server_cpu_s = cluster_stats(&nodes).cpu_s - cpu_before_recover;
    let server = cluster_stats(&nodes);
    let bench_cpu_end = own_cpu_s();

    // Check the recovered webhook: every event refused, then delivered once.
    let (mut arrivals, _) = receiver.take();
    let (mut recovered, mut recover_missing, mut recover_duplicates, mut wrong) = (0u64, 0u64, 0u64, 0u64);
    let (mut min_attempts, mut max_attempts) = (usize::MAX, 0usize);
    let mut first_recovered: Option<Instant> = None;
    let mut last_recovered = recover_sent;
    let mut recovered_by_s: Vec<u64> = Vec::new();
    for (i, slot) in job.sent.iter().enumerate() {
        let Some((id, _)) = slot.get() else {
            continue;
        };
        let Some(record) = arrivals.remove(&(RECOVERED, id.clone())) else {
            recover_missing += 1;
            continue;
        };
        let meeting = format!("mtg_{i}");
        if !record.body_ok || record.meeting_id.as_deref() != Some(meeting.as_str()) {
            wrong += 1;
        }
        let failed_attempts = record.arrivals.iter().filter(|(_, ok)| !ok).count();
        min_attempts = min_attempts.min(failed_attempts);
        max_attempts = max_attempts.max(failed_attempts);
        let Some(first) = record.first_delivery() else {
            recover_missing += 1;
            continue;
        };
        recovered += 1;
        recover_duplicates += record.delivered().saturating_sub(1) as u64;
        first_recovered = Some(first_recovered.map_or(first, |f| f.min(first)));
        last_recovered = last_recovered.max(first);
        let s = first.saturating_duration_since(recover_sent).as_secs_f64() as usize;
        if recovered_by_s.len() <= s {
            recovered_by_s.resize(s + 1, 0);
        }
        recovered_by_s[s] += 1;
    }

    // Check the paced webhook: both runs, and the part of the second
    // published while the recover was delivering.
    let mut paced_check = EndpointCheck::default();
    let mut baseline_latency = histogram();
    check_paced(
        &mut paced_check,
        &baseline,
        &mut arrivals,
        &mut baseline_latency,
        None,
        None,
    )?;
    let mut with_latency = histogram();
    let mut during_latency = histogram();
    let mut latencies = match &p.latencies {
        Some(path) => Some(Latencies::create(path, with.load.started)?),
        None => None,
    };
    check_paced(
        &mut paced_check,
        &with,
        &mut arrivals,
        &mut with_latency,
        Some((&mut during_latency, recover_sent, last_recovered)),
        latencies.as_mut(),
    )?;
    if let Some(out) = latencies {
        out.finish()?;
    }
    let unexpected = arrivals.values().filter(|r| r.delivered() > 0).count() as u64;

    let recover_s = (last_recovered - recover_sent).as_secs_f64();
    let per_s = if recover_s > 0.0 {
        recovered as f64 / recover_s
    } else {
        0.0
    };
    let baseline_p99 = ms(&baseline_latency, 0.99);
    let with_p99 = ms(&with_latency, 0.99);
    let p99_ratio = if baseline_p99 > 0.0 {
        with_p99 / baseline_p99
    } else {
        0.0
    };
    let missing = recover_missing + paced_check.missing;
    let bad = wrong + paced_check.wrong + receiver.counts().bad_bodies.load(std::sync::atomic::Ordering::Relaxed);

    report.set("events", events);
    report.set("recover_count", count);
    report.set("deliveries", recovered);
    report.set_f("deliveries_per_s", per_s, 1);
    report.set_f("limit_per_s", limit, 1);
    report.set_f("limit_s", p.limit_s, 1);
    report.set_f("ratio", if limit > 0.0 { per_s / limit } else { 0.0 }, 4);
    report.set_f("p50_ms", ms(&with_latency, 0.5), 3);
    report.set_f("p99_ms", with_p99, 3);
    report.set_f("max_ms", ms(&with_latency, 1.0), 3);
    report.set_f("baseline_p50_ms", ms(&baseline_latency, 0.5), 3);
    report.set_f("baseline_p99_ms", baseline_p99, 3);
    report.set_f("baseline_max_ms", ms(&baseline_latency, 1.0), 3);
    report.set_f("p99_ratio", p99_ratio, 3);
    report.set("p99_within_2x", baseline_p99 > 0.0 && p99_ratio <= 2.0);
    report.set("during_recover_events", during_latency.len());
    report.set_f("during_recover_p50_ms", ms(&during_latency, 0.5), 3);
    report.set_f("during_recover_p99_ms", ms(&during_latency, 0.99), 3);
    report.set_f("during_recover_max_ms", ms(&during_latency, 1.0), 3);
    report.set_f("server_rss_mb", server.peak_rss_mb, 1);
    report.set_f("server_cpu_s", server.cpu_s, 2);
    report.set_f("wal_mb", server.wal_mb, 1);
    report.set_f("ready_ms", herald.ready_ms, 1);
    report.set("expected_deliveries", events);
    report.set("missing", missing);
    report.set("recover_missing", recover_missing);
    report.set("paced_missing", paced_check.missing);
    report.set("duplicates", recover_duplicates + paced_check.duplicates);
    report.set("bad_bodies", bad);
    report.set("unexpected_deliveries", unexpected);
    report.set("all_arrived", recovered_all && baseline.all_arrived && with.all_arrived);
    report.set("concurrency", p.concurrency as u64);
    // The server inherits the variable; unset, it uses its default.
    let endpoint_concurrency = std::env::var("HERALD_ENDPOINT_CONCURRENCY")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_ENDPOINT_CONCURRENCY);
    report.set("endpoint_concurrency", endpoint_concurrency);
    // The recover.
    report.set_f(
        "recover_post_ms",
        (recover_answered - recover_sent).as_secs_f64() * 1000.0,
        1,
    );
    report.set_f(
        "recover_first_ms",
        first_recovered.map_or(0.0, |f| (f - recover_sent).as_secs_f64() * 1000.0),
        1,
    );
    report.set_f("recover_s", recover_s, 3);
    report.set("recover_within_paced", last_recovered <= with.load.finished);
    report.set(
        "recovered_by_s",
        Value::Array(recovered_by_s.iter().map(|&n| n.into()).collect()),
    );
    report.set_f("recover_server_cpu_s", recover_server_cpu_s, 2);
    report.set_f("baseline_server_cpu_s", baseline.server_cpu_s, 2);
    report.set_f("with_server_cpu_s", with.server_cpu_s, 2);
    if let Some(pct) = baseline.steal_pct {
        report.set_f("baseline_steal_pct", pct, 1);
    }
    if let Some(pct) = with.steal_pct {
        report.set_f("with_steal_pct", pct, 1);
    }
    // The paced runs.
    report.set_f("rate", p.rate.unwrap_or(DEFAULT_RATE), 1);
    report.set_f("paced_s", p.duration_s, 1);
    report.set("paced_events", baseline.events + with.events);
    report.set("paced_deliveries", paced_check.delivered);
    report.set_f("baseline_max_pace_lag_ms", baseline.load.max_lag_ms, 3);
    report.set_f("max_pace_lag_ms", with.load.max_lag_ms, 3);
    report.set(
        "paced_publish_failed",
        baseline.load.failed + with.load.failed + baseline.load.abandoned + with.load.abandoned,
    );
    // The failing phase: the publish of team A's events and their failures.
    load_fields(&mut report, &load);
    report.set("fail_attempts", refused.refused);
    report.set("fail_attempts_expected", attempts);
    report.set("all_attempted", all_attempted);
    report.set(
        "min_failed_attempts_per_event",
        if min_attempts == usize::MAX { 0 } else { min_attempts } as u64,
    );
    report.set("max_failed_attempts_per_event", max_attempts as u64);
    report.set("failed_in_stats", failed_in_stats);
    report.set_f("fail_phase_s", (failed_at - load.started).as_secs_f64(), 3);
    report.set_f("stats_wait_s", (failed_at - attempted_at).as_secs_f64(), 3);
    report.set_f("bench_cpu_s", bench_cpu_end - cpu_at_start, 2);
    report.set(
        "server_log_lines",
        nodes.iter().map(|n| n.log_lines() as u64).sum::<u64>(),
    );
    if let Some(first_bad) = receiver.first_bad() {
        report.set("first_bad_body", first_bad);
    }
    report.passed = missing == 0
        && bad == 0
        && load.failed == 0
        && count == events
        && baseline.load.failed == 0
        && with.load.failed == 0;
    if missing > 0 || count != events {
        report.set("server_log_tail", herald.log_tail());
    }
    receiver.stop().await;
    for node in nodes {
        node.stop().await;
    }
    Ok(report)
}

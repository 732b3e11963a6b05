//! Running Herald for months (contract §7.1): the log format a log
//! pipeline reads (through the real binary), the metrics an operator alerts
//! on, and the sample alert rules.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::process::{post, setup, start_server_with};

/// The value of the unlabelled sample `name` in `/metrics`.
async fn sample(app: &TestApp, name: &str) -> f64 {
    metrics(app)
        .await
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}

async fn metrics(app: &TestApp) -> String {
    reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap()
}

/// `HERALD_LOG_FORMAT=json`: every line is one JSON object, and an
/// attempt's line carries its event and delivery ids as fields.
#[tokio::test]
async fn json_logs_are_one_object_a_line_with_the_attempts_ids() {
    let data = TestData::new().await;
    let env = [
        ("HERALD_LOG_FORMAT", "json"),
        ("HERALD_LOG", "info,herald_engine=debug"),
    ];
    let server = start_server_with(&data, Some(ADMIN_KEY), &env).await;
    let receiver = TestReceiver::start().await;
    let client = reqwest::Client::new();
    let (team, _) = setup(&client, &server.base, &receiver.url("/logs")).await;
    let (status, event) = post(
        &client,
        format!("{}/api/v1/events", server.base),
        ADMIN_KEY,
        &meeting_event(&team, "logged"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{event}");
    let event_id = event["id"].as_str().unwrap();
    receiver.next(Duration::from_secs(10)).await.expect("the delivery");

    let deadline = Instant::now() + Duration::from_secs(10);
    let attempt = loop {
        let lines = server.stderr_lines.lock().unwrap().clone();
        let parsed: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        assert!(parsed.iter().all(Value::is_object), "{lines:?}");
        assert!(
            parsed
                .iter()
                .any(|l| l["message"] == "herald is listening" && l["level"] == "INFO"),
            "{lines:?}"
        );
        if let Some(line) = parsed.iter().find(|l| l["message"] == "attempt made") {
            break line.clone();
        }
        assert!(Instant::now() < deadline, "no attempt line: {lines:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(attempt["span"]["event_id"], event_id, "{attempt}");
    assert!(attempt["span"]["delivery_id"].is_u64(), "{attempt}");
    assert!(
        attempt["span"]["endpoint_id"].as_str().unwrap().starts_with("wh_"),
        "{attempt}"
    );
    assert_eq!(attempt["status"], 204, "{attempt}");
}

on_every_store! {
/// The histograms count each attempt by outcome and each success's
/// latency; the backlog gauges read the store: pending deliveries, and how
/// long the oldest due one of an active webhook has waited (0 once its
/// webhook is deactivated).
async fn metrics_show_latency_attempt_durations_pending_work_and_due_lag() {
    let app = spawn_app_with(|c| {
        c.endpoint_concurrency = 1;
        c.attempt_timeout = Duration::from_secs(5);
    })
    .await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let ok = app.create_webhook(&team, &receiver.url("/ok")).await;
    app.publish(meeting_event(&team, "m")).await;
    app.wait_for_attempts(&team, ok["id"].as_str().unwrap(), 1, Duration::from_secs(10)).await;
    assert!(sample(&app, "herald_delivery_latency_seconds_count").await >= 1.0);
    let text = metrics(&app).await;
    assert!(text.contains("herald_attempt_duration_seconds_count{outcome=\"success\"} 1"), "{text}");
    assert!(text.contains("herald_delivery_latency_seconds_bucket{le=\"+Inf\"} 1"), "{text}");
    assert_eq!(sample(&app, "herald_deliveries_pending").await, 0.0);
    assert_eq!(sample(&app, "herald_due_lag_seconds").await, 0.0);

    // A webhook that hangs, one attempt at a time: three deliveries wait
    // (the first on the wire); the first webhook's are done at once.
    receiver.answer_path("/hang", Answer::Hang);
    let hang = app.create_webhook(&team, &receiver.url("/hang")).await;
    for i in 0..3 {
        app.publish(meeting_event(&team, &format!("h{i}"))).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sample(&app, "herald_deliveries_pending").await, 3.0);
    let lag = sample(&app, "herald_due_lag_seconds").await;
    assert!((1.0..30.0).contains(&lag), "{lag}");

    let (status, answer) = app
        .patch(&format!("/api/v1/webhooks/{}", hang["id"].as_str().unwrap()), &team.key, json!({"status": "deactivated"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(sample(&app, "herald_due_lag_seconds").await, 0.0, "a deactivated webhook's work is not late");
    assert_eq!(sample(&app, "herald_deliveries_pending").await, 3.0);
}
}

/// `docs/alerts.yml` names only metrics `/metrics` serves, and Prometheus's
/// own checker accepts it (`promtool`, from Debian's `prometheus`).
#[tokio::test]
async fn the_sample_alert_rules_name_served_metrics_and_promtool_accepts_them() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/alerts.yml");
    let rules = std::fs::read_to_string(&path).unwrap();
    let app = spawn_app().await;
    let served = metrics(&app).await;
    let mut named = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("herald_") {
            named += 1;
            assert!(
                served
                    .lines()
                    .any(|l| l.starts_with(&format!("{word} ")) || l.starts_with(&format!("{word}{{"))),
                "{word} is not in /metrics"
            );
        }
    }
    assert!(named >= 3, "the rules name Herald's metrics");
    match std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            assert!(
                std::env::var("HERALD_TEST_REQUIRE_ALL").as_deref() != Ok("1"),
                "promtool cannot run ({e}) and HERALD_TEST_REQUIRE_ALL=1"
            );
            eprintln!("skipping promtool check rules: {e} (apt-get install prometheus)");
        }
    }
}

/// `herald backup` (contract §7.1) while a server takes publishes: the
/// publishes go on, and the copy holds every event acknowledged before the
/// backup began, with its deliveries; a server starts on the copy and
/// serves its log.
#[tokio::test]
async fn a_backup_taken_under_load_has_every_event_acknowledged_before_it() {
    let data = TestData::new().await;
    let server = start_server_with(&data, Some(ADMIN_KEY), &[]).await;
    let receiver = TestReceiver::start().await;
    let client = reqwest::Client::new();
    let (team, webhook) = setup(&client, &server.base, &receiver.url("/backup")).await;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = tokio::spawn({
        let (client, base, acked, stop) = (client.clone(), server.base.clone(), acked.clone(), stop.clone());
        let team = team.clone();
        async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut body = meeting_event(&team, "backup");
                body["id"] = json!(format!("evt_backup_{i}"));
                let (status, _) = post(&client, format!("{base}/api/v1/events"), ADMIN_KEY, &body).await;
                assert_eq!(status, StatusCode::ACCEPTED, "a publish during the backup");
                acked.lock().unwrap().push(format!("evt_backup_{i}"));
                i += 1;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<String> = acked.lock().unwrap().clone();
    assert!(!before.is_empty());
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("herald.db");
    let backup = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["backup", "--to"])
            .arg(&copy)
            .current_dir(data.dir.path())
            .env_remove("HERALD_DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = backup();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("backed up to "));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.await.unwrap();
    assert!(
        acked.lock().unwrap().len() > before.len(),
        "publishes went on during the backup"
    );

    // Owner-only, complete for what came before, a store of its own.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777, 0o600);
    let db = rusqlite::Connection::open(&copy).unwrap();
    let list = serde_json::to_string(&before).unwrap();
    let count = |sql: &str| -> i64 { db.query_row(sql, [&list], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT count(*) FROM events WHERE id IN (SELECT value FROM json_each(?1))"),
        before.len() as i64
    );
    assert_eq!(
        count("SELECT count(*) FROM deliveries WHERE event_id IN (SELECT value FROM json_each(?1))"),
        before.len() as i64
    );
    drop(db);

    // A second backup to the same place is refused, changing nothing.
    assert!(!backup().status.success());
    drop(server);

    let restored = TestData {
        dir: copy_dir,
        postgres: None,
    };
    let server = start_server_with(&restored, Some(ADMIN_KEY), &[]).await;
    let (status, log) = crate::process::get(
        &client,
        format!("{}/api/v1/webhooks/{webhook}/attempts?limit=5", server.base),
        &team.key,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    assert!(!log["data"].as_array().unwrap().is_empty(), "{log}");
}

/// `herald migrate-store`: a SQLite store copied into PostgreSQL keeps its
/// teams and keys, webhooks, events and attempt log; the servers on
/// PostgreSQL go on from there (new ids after the copied ones), and a second
/// copy into the now non-empty store is refused.
#[tokio::test]
async fn a_sqlite_store_moved_to_postgres_keeps_its_teams_webhooks_events_and_log() {
    let Some(backend) = crate::stores::Backend::postgres() else {
        return;
    };
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/moved")).await;
    let wh = webhook["id"].as_str().unwrap().to_owned();
    for i in 0..5 {
        let (status, _) = app.publish(meeting_event(&team, &format!("moved{i}"))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    app.wait_for_attempts(&team, &wh, 5, Duration::from_secs(10)).await;
    let log = app.attempts(&team, &wh, "limit=50").await;
    let sqlite = app.stop().await;
    backend
        .run(async move {
            let pg = TestData::new().await;
            let copy = || {
                std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
                    .args([
                        "migrate-store",
                        "--from",
                        &sqlite.database_url(),
                        "--to",
                        &pg.database_url(),
                    ])
                    .output()
                    .unwrap()
            };
            let out = copy();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let printed = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(printed.contains("events: 5 rows"), "{printed}");
            assert!(printed.contains("attempts: 5 rows"), "{printed}");

            let again = copy();
            assert!(!again.status.success());
            assert!(String::from_utf8_lossy(&again.stderr).contains("empty database"));

            let app = spawn_app_in(pg, |_| {}).await;
            assert_eq!(app.attempts(&team, &wh, "limit=50").await, log, "the same log");
            let (status, _) = app.publish(meeting_event(&team, "after")).await;
            assert_eq!(status, StatusCode::ACCEPTED);
            app.wait_for_attempts(&team, &wh, 6, Duration::from_secs(10)).await;
        })
        .await;
}

/// On SIGTERM the server answers `/readyz` with 503 (and keeps answering
/// `/healthz`) while the attempt on the wire finishes, then exits 0; the
/// attempt it let finish is not sent again after a restart.
#[tokio::test]
async fn a_stopping_server_answers_readyz_503_while_its_attempt_finishes() {
    let data = TestData::new().await;
    let mut server = start_server_with(&data, Some(ADMIN_KEY), &[]).await;
    let receiver = TestReceiver::start().await;
    receiver.answer_path("/slow", Answer::Slow(204, Duration::from_secs(2)));
    let client = reqwest::Client::new();
    let (team, _) = setup(&client, &server.base, &receiver.url("/slow")).await;
    let (status, _) = post(
        &client,
        format!("{}/api/v1/events", server.base),
        ADMIN_KEY,
        &meeting_event(&team, "stopping"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    receiver.next(Duration::from_secs(10)).await.expect("the attempt");

    let pid = rustix::process::Pid::from_raw(server.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let signalled = Instant::now();
    let ready = loop {
        let answer = client.get(format!("{}/readyz", server.base)).send().await;
        match answer {
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => break r,
            Ok(r) => assert_eq!(r.status(), StatusCode::OK),
            Err(e) => panic!("the stopping server refused /readyz instead of answering 503: {e}"),
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "/readyz still answers 200"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready.headers()["retry-after"], "1");
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["error"]["code"], "shutting_down", "{body}");
    let health = client.get(format!("{}/healthz", server.base)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let (status, _stopped) = tokio::task::spawn_blocking(move || (server.child.wait().unwrap(), server))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(1500),
        "exited {:?} after SIGTERM, before the attempt on the wire finished",
        signalled.elapsed()
    );
    // The finished attempt was recorded: a restart does not send it again.
    let server = start_server_with(&data, Some(ADMIN_KEY), &[]).await;
    assert!(
        receiver.next(Duration::from_secs(3)).await.is_none(),
        "the attempt let finish was sent again"
    );
    drop(server);
}

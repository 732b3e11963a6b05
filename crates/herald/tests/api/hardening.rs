//! What an adversarial test found, each as a regression test: a hostile
//! receiver's body must not take the dashboard down, bodies nested past the
//! contract's 128 levels are refused, and so on for each rule of contract §2.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dashboard_http::DashSession;
use crate::helpers::*;
use crate::process::{post, setup, start_server};

/// Starts a receiver on 127.0.0.1 that answers every request 200 with `body`.
async fn hostile_receiver(body: &'static str) -> (String, tokio_util::sync::CancellationToken) {
    let app = axum::Router::new().fallback(move || async move { (axum::http::StatusCode::OK, body) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
    });
    (format!("http://{addr}/hook"), stop)
}

/// The peak resident memory of a process, in MB, from `/proc`.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024.0
}

/// `[` × n then `]` × n.
fn nested(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

on_every_store! {
async fn a_deeply_nested_response_body_is_shown_raw_and_quickly() {
    static BRACKETS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body: &'static str = BRACKETS.get_or_init(|| nested(32_000));
    let (url, _stop) = hostile_receiver(body).await;
    let data = TestData::new().await;
    let server = start_server(&data, Some(ADMIN_KEY)).await;
    let client = reqwest::Client::new();
    let (team, webhook) = setup(&client, &server.base, &url).await;
    let (status, event) = post(&client, format!("{}/api/v1/events", server.base), ADMIN_KEY, &meeting_event(&team, "m1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{event}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let attempt_id = loop {
        let page: Value = client
            .get(format!("{}/api/v1/webhooks/{webhook}/attempts", server.base))
            .bearer_auth(&team.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(attempt) = page["data"].as_array().and_then(|a| a.first()) {
            assert_eq!(attempt["status"], "success", "{attempt}");
            break attempt["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no attempt logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let (status, link) = post(
        &client,
        format!("{}/api/v1/teams/{}/dashboard-links", server.base, team.team_id),
        ADMIN_KEY,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let session = DashSession::open(&server.base, link["url"].as_str().unwrap()).await;
    let started = Instant::now();
    let page = session.get(&format!("/webhooks/{webhook}/attempts/{attempt_id}")).await;
    let took = started.elapsed();
    assert_eq!(page.status, StatusCode::OK);
    assert!(took < Duration::from_secs(1), "the Inspect page took {took:?}");
    assert!(page.body.contains(&"[".repeat(32_000)), "the body is shown as sent");
    assert!(page.body.len() < 1_000_000, "{} bytes", page.body.len());
    let rss = peak_rss_mb(server.child.id());
    assert!(rss < 100.0, "peak RSS {rss:.1} MB");
    // The server is still there for everyone.
    let health = client.get(format!("{}/healthz", server.base)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

async fn json_nested_past_128_levels_is_refused_everywhere() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let mut event = meeting_event(&team, "m1");
    let deep = nested(100_000);
    let text = event.to_string().replacen("\"isPrivate\":false", &format!("\"isPrivate\":false,\"x\":{deep}"), 1);
    let (status, answer) = app.raw(reqwest::Method::POST, "/api/v1/events", Some(&format!("Bearer {ADMIN_KEY}")), &text).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "too_deep");
    assert!(answer["error"]["message"].as_str().unwrap().contains("128"), "{answer}");

    // 128 levels in all is still fine.
    event["data"]["x"] = serde_json::from_str(&nested(126)).unwrap();
    let (status, answer) = app.publish(event).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");

    let webhook = format!(r#"{{"name":"n","url":"http://127.0.0.1:9/h","eventTypes":["meeting.completed"],"x":{}}}"#, nested(200));
    let (status, answer) = app.raw(reqwest::Method::POST, "/api/v1/webhooks", Some(&team.key), &webhook).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let bot = format!(
        r#"{{"meeting_url":"https://meet.google.com/a","metadata":{{"m":{}}},"recording_config":{{"realtime_endpoints":[]}}}}"#,
        nested(129)
    );
    let (status, answer) = app.raw(reqwest::Method::POST, "/api/v1/bot/", Some(&team.key), &bot).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (_, webhooks) = app.get("/api/v1/webhooks", &team.key).await;
    assert_eq!(webhooks["data"].as_array().unwrap().len(), 0, "nothing was created");
}
}

on_every_store! {
async fn a_nul_character_is_kept_in_json_and_refused_by_name_in_names_and_urls() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;

    let refused: Vec<(&str, Value, &str)> = vec![
        ("/api/v1/accounts", json!({"name": "a\u{0}b"}), "name"),
        ("/api/v1/webhooks", json!({"name": "n\u{0}", "url": receiver.url("/h"), "eventTypes": ["meeting.completed"]}), "name"),
        ("/api/v1/webhooks", json!({"name": "n", "url": receiver.url("/h\u{0}"), "eventTypes": ["meeting.completed"]}), "url"),
        ("/api/v1/bot/", json!({"meeting_url": "https://meet.google.com/a\u{0}", "recording_config": {"realtime_endpoints": []}}), "meeting_url"),
    ];
    for (path, body, field) in refused {
        let key = if path == "/api/v1/accounts" { ADMIN_KEY } else { team.key.as_str() };
        let (status, answer) = app.post(path, key, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().starts_with(&format!("{field}:")), "{answer}");
    }
    let (status, answer) = app
        .post(&format!("/api/v1/accounts/{}/teams", team.account_id), ADMIN_KEY, json!({"name": "\u{0}"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    let webhook = app.create_webhook(&team, &receiver.url("/h")).await;
    let id = webhook["id"].as_str().unwrap();
    let (status, answer) = app.patch(&format!("/api/v1/webhooks/{id}"), &team.key, json!({"name": "x\u{0}"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // In event data and bot metadata it is kept and delivered byte for byte.
    let mut event = meeting_event(&team, "m\u{0}1");
    event["data"]["meeting"]["name"] = json!("Sync \u{0} end");
    let (status, answer) = app.publish(event).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let received = receiver.next(Duration::from_secs(5)).await.expect("a delivery");
    let body = String::from_utf8(received.body.to_vec()).unwrap();
    assert!(body.contains(r#""name":"Sync \u0000 end""#), "{body}");
    assert!(body.contains(r#""id":"m\u00001""#), "{body}");

    let (status, bot) = app
        .post(
            "/api/v1/bot/",
            &team.key,
            json!({"meeting_url": "https://meet.google.com/a", "metadata": {"k": "v\u{0}w"},
                   "recording_config": {"realtime_endpoints": []}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bot}");
    let (status, read) = app.get(&format!("/api/v1/bot/{}/", bot["id"].as_str().unwrap()), &team.key).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["metadata"]["k"], "v\u{0}w");

    let mut bad_team = meeting_event(&team, "m2");
    bad_team["data"]["organization"]["teamId"] = json!(format!("{}\u{0}", team.team_id));
    let (status, answer) = app.publish(bad_team).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().starts_with("data.organization.teamId:"), "{answer}");
}

async fn teams_and_bots_stop_at_their_limits() {
    let app = spawn_app_with(|c| {
        c.limits.webhooks_per_team = 3;
        c.limits.realtime_endpoints_per_bot = 2;
    })
    .await;
    let team = app.create_team().await;
    for _ in 0..3 {
        app.create_webhook(&team, "http://127.0.0.1:9/h").await;
    }
    let (status, answer) = app
        .post("/api/v1/webhooks", &team.key, json!({"name": "4th", "url": "http://127.0.0.1:9/h", "eventTypes": ["meeting.completed"]}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["code"], "limit_exceeded");
    assert!(answer["error"]["message"].as_str().unwrap().contains('3'), "{answer}");
    let (_, list) = app.get("/api/v1/webhooks", &team.key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    // Another team has its own count.
    let other = app.create_team().await;
    app.create_webhook(&other, "http://127.0.0.1:9/h").await;

    let endpoints = |n: usize| -> Vec<(String, &'static [&'static str])> {
        (0..n).map(|i| (format!("http://127.0.0.1:9/rt{i}"), &["participant_events.join"][..])).collect()
    };
    app.create_bot(&team, &endpoints(2)).await;
    let specs: Vec<Value> = endpoints(3)
        .into_iter()
        .map(|(url, events)| json!({"type": "webhook", "url": url, "events": events}))
        .collect();
    let (status, answer) = app
        .post("/api/v1/bot/", &team.key, json!({"meeting_url": "https://meet.google.com/a", "recording_config": {"realtime_endpoints": specs}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["code"], "limit_exceeded");
    assert!(answer["error"]["message"].as_str().unwrap().contains('2'), "{answer}");
}

async fn every_rejection_answers_the_error_json() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, "http://127.0.0.1:9/h").await;
    let id = webhook["id"].as_str().unwrap();
    let auth = format!("Bearer {}", team.key);
    let cases = [
        (reqwest::Method::GET, format!("/api/v1/webhooks/{id}/attempts?limit=1&limit=2"), String::new(), StatusCode::BAD_REQUEST),
        (reqwest::Method::GET, format!("/api/v1/webhooks/{id}/attempts?limit=x"), String::new(), StatusCode::BAD_REQUEST),
        (reqwest::Method::PATCH, format!("/api/v1/webhooks/{id}"), "[]".to_owned(), StatusCode::BAD_REQUEST),
        (reqwest::Method::PATCH, format!("/api/v1/webhooks/{id}"), "\"name\"".to_owned(), StatusCode::BAD_REQUEST),
        (reqwest::Method::POST, "/api/v1/webhooks".to_owned(), "[{}]".to_owned(), StatusCode::BAD_REQUEST),
        (reqwest::Method::PUT, format!("/api/v1/webhooks/{id}"), "{}".to_owned(), StatusCode::METHOD_NOT_ALLOWED),
        (reqwest::Method::GET, "/api/v1/webhooks/%FF%FE".to_owned(), String::new(), StatusCode::BAD_REQUEST),
    ];
    for (method, path, body, expected) in cases {
        let response = app
            .client
            .request(method.clone(), app.url(&path))
            .header("authorization", &auth)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{method} {path} {body}");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(content_type, "application/json", "{method} {path}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["error"]["code"].is_string() && answer["error"]["message"].is_string(), "{answer}");
    }
    let (_, unchanged) = app.get(&format!("/api/v1/webhooks/{id}"), &team.key).await;
    assert_eq!(unchanged, webhook, "a refused PATCH changes nothing");
}
}

/// Waits until `/readyz` answers `expected`.
async fn wait_ready_status(app: &TestApp, expected: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = app.client.get(app.url("/readyz")).send().await.unwrap().status();
        if status == expected {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz still {status}, not {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_sqlite_file_deleted_or_replaced_under_the_server_is_not_ready_and_takes_no_publish() {
    for replace in [false, true] {
        let app = spawn_app().await;
        let team = app.create_team().await;
        wait_ready_status(&app, StatusCode::OK).await;
        let path = app.data().dir.path().join("herald.db");
        std::fs::remove_file(&path).unwrap();
        if replace {
            std::fs::write(&path, b"").unwrap();
        }
        wait_ready_status(&app, StatusCode::SERVICE_UNAVAILABLE).await;
        let (status, answer) = app.publish(meeting_event(&team, "m1")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "replace {replace}: {answer}");
        let health = app.client.get(app.url("/healthz")).send().await.unwrap().status();
        assert_eq!(health, StatusCode::OK);
    }
}

/// Reads from `stream` until the server closes it; returns how long that took.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Duration {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection was still open after {limit:?}"),
        }
    }
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_and_healthz_answers_at_the_cap() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|c| {
        c.serve_limits.header_timeout = Duration::from_millis(500);
        c.serve_limits.max_connections = 40;
    })
    .await;
    // Headers trickling in are cut off at the header timeout.
    let mut trickle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut trickle, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(400), "closed after {took:?}");
    // A keep-alive connection that sits idle after its request is closed too.
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    closed_within(&mut idle, Duration::from_secs(3)).await;

    // 200 connections that never send a byte, five times the cap: the server
    // keeps answering /healthz on a new connection.
    let mut held = Vec::new();
    for _ in 0..200 {
        if let Ok(stream) = tokio::net::TcpStream::connect(app.addr).await {
            held.push(stream);
        }
    }
    for _ in 0..5 {
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let response = tokio::time::timeout(Duration::from_secs(2), client.get(app.url("/healthz")).send())
            .await
            .expect("/healthz answered in time")
            .expect("/healthz answered");
        assert_eq!(response.status(), StatusCode::OK);
    }
    drop(held);
}

on_every_store! {
async fn team_keys_are_listed_without_the_secret_and_revoked_at_once() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let keys_path = format!("/api/v1/teams/{}/keys", team.team_id);
    let (status, named) = app.post(&keys_path, ADMIN_KEY, json!({"name": "CI deploys"})).await;
    assert_eq!(status, StatusCode::CREATED, "{named}");
    let secret = named["key"].as_str().unwrap().to_owned();
    assert!(named["id"].as_str().unwrap().starts_with("key_"), "{named}");
    assert_eq!(named["name"], "CI deploys");
    assert!(secret.starts_with(named["prefix"].as_str().unwrap()), "{named}");

    // The new key works, and its use is noted.
    let (status, _) = app.get("/api/v1/webhooks", &secret).await;
    assert_eq!(status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let (status, listed) = app.get(&keys_path, ADMIN_KEY).await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        let entry = listed["data"].as_array().unwrap().iter().find(|k| k["id"] == named["id"]).cloned().unwrap();
        if entry["lastUsedAt"].is_i64() || Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // No body at all is an unnamed key; a body that is not an object is refused.
    let admin = format!("Bearer {ADMIN_KEY}");
    let (status, unnamed) = app.raw(reqwest::Method::POST, &keys_path, Some(&admin), "").await;
    assert_eq!(status, StatusCode::CREATED, "{unnamed}");
    assert!(unnamed["name"].is_null(), "{unnamed}");
    let (status, refused) = app.raw(reqwest::Method::POST, &keys_path, Some(&admin), "[]").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, _) = app.delete(&format!("{keys_path}/{}", unnamed["id"].as_str().unwrap()), ADMIN_KEY).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{listed}");
    assert!(!listed.to_string().contains(&secret), "the secret is never listed");
    assert!(!listed.to_string().contains(&team.key), "the secret is never listed");
    let entry = data.iter().find(|k| k["id"] == named["id"]).unwrap();
    assert!(entry["lastUsedAt"].is_i64(), "{entry}");
    assert!(entry["createdAt"].is_i64(), "{entry}");
    for key in data {
        for field in ["id", "name", "prefix", "createdAt", "lastUsedAt"] {
            assert!(key.get(field).is_some(), "{field} missing in {key}");
        }
    }

    // Revoked: 401 from the next request on; the other key still works.
    let (status, _) = app.delete(&format!("{keys_path}/{}", named["id"].as_str().unwrap()), ADMIN_KEY).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get("/api/v1/webhooks", &secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app.get("/api/v1/webhooks", &team.key).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.delete(&format!("{keys_path}/{}", named["id"].as_str().unwrap()), ADMIN_KEY).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "already revoked");

    // Only the admin key manages keys, and another team's key ids are unknown here.
    let (status, _) = app.get(&keys_path, &team.key).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let other = app.create_team().await;
    let (_, other_keys) = app.get(&format!("/api/v1/teams/{}/keys", other.team_id), ADMIN_KEY).await;
    let other_id = other_keys["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = app.delete(&format!("{keys_path}/{other_id}"), ADMIN_KEY).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/api/v1/teams/team_nonexistent/keys", ADMIN_KEY).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
}

/// Rate limits per team key (contract §7.1): a burst of twice the limit
/// goes through, the next request answers 429 with `Retry-After` in the
/// error shape, another team's key is untouched, and the key works again
/// once the wait has passed.
#[tokio::test]
async fn a_team_key_past_its_rate_limit_gets_429_and_other_teams_do_not() {
    let app = spawn_app_with(|c| c.team_rate_limit = 5).await;
    let (busy, quiet) = (app.create_team().await, app.create_team().await);
    let list = |key: &str| {
        app.client
            .get(app.url("/api/v1/webhooks"))
            .header("authorization", format!("Bearer {key}"))
            .send()
    };
    let mut passed = 0;
    let limited = loop {
        let response = list(&busy.key).await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            break response;
        }
        assert_eq!(response.status(), StatusCode::OK);
        passed += 1;
        assert!(passed <= 12, "no 429 after {passed} requests");
    };
    assert!(passed >= 10, "the burst is twice the limit: {passed} passed");
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HERALD_TEAM_RATE_LIMIT"),
        "{body}"
    );

    assert_eq!(list(&quiet.key).await.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(list(&busy.key).await.unwrap().status(), StatusCode::OK);
}

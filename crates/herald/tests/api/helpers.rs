//! `spawn_app` starts the real Herald (API and engine) on a fresh SQLite file
//! and port 0; `TestReceiver` is a real HTTP endpoint whose answers the test
//! scripts. Tests wait on what arrives, with timeouts, never on fixed sleeps.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use herald::{App, Config, DatabaseLocation};
use herald_domain::retry::RetryPolicy;
use herald_store::sqlite::Durability;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::stores::TestData;

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// The short schedule most tests use; one test checks the real 2/4/8/16 s.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy::Standard {
        delays: [100, 200, 300, 400].map(Duration::from_millis).to_vec(),
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// Keeps the store alive as long as the app.
    data: Option<TestData>,
    stop: CancellationToken,
    stopped: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
pub struct TestTeam {
    pub account_id: String,
    pub team_id: String,
    pub key: String,
}

/// The short real-time schedule most tests use; one test checks 1 s × 60.
pub fn fast_realtime_retry() -> RetryPolicy {
    RetryPolicy::Realtime {
        interval: Duration::from_millis(100),
        max_retries: 60,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_in(TestData::new().await, adjust).await
}

/// Starts Herald on the test's store (which may hold a previous run's data).
pub async fn spawn_app_in(data: TestData, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let location = match &data.postgres {
        Some(pg) => DatabaseLocation::Postgres { url: pg.url.clone() },
        None => DatabaseLocation::Sqlite {
            path: data.dir.path().join("herald.db"),
            durability: Durability::Normal,
        },
    };
    let mut config = Config::new(location);
    config.admin_key = Some(ADMIN_KEY.into());
    config.allow_insecure_targets = true;
    config.attempt_timeout = Duration::from_millis(1_000);
    config.shutdown_grace = Duration::from_millis(200);
    config.standard_retry = fast_retry();
    config.realtime_retry = fast_realtime_retry();
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = App::build(config, listener).await.expect("build app");
    let addr = app.addr();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let stopped = tokio::spawn(async move {
        app.run_until_stopped(async move { token.cancelled().await })
            .await
            .expect("app run");
    });
    TestApp {
        addr,
        client: reqwest::Client::new(),
        data: Some(data),
        stop,
        stopped: Some(stopped),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestApp {
    /// Shuts the server down as a signal would, and hands back its data.
    pub async fn stop(mut self) -> TestData {
        self.stop.cancel();
        if let Some(stopped) = self.stopped.take() {
            stopped.await.expect("app task");
        }
        self.data.take().expect("test data")
    }

    /// Where this app's data lives.
    pub fn data(&self) -> &TestData {
        self.data.as_ref().expect("test data")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let response = req.send().await.expect("request");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path)).body(body.to_owned());
        if let Some(auth) = authorization {
            req = req.header("authorization", auth);
        }
        let response = req.send().await.expect("request");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(key), Some(&body)).await
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, Some(key), None).await
    }

    pub async fn patch(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::PATCH, path, Some(key), Some(&body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.request(Method::DELETE, path, Some(key), None).await
    }

    pub async fn create_team(&self) -> TestTeam {
        let (status, account) = self.post("/api/v1/accounts", ADMIN_KEY, json!({"name": "Acme"})).await;
        assert_eq!(status, StatusCode::CREATED, "{account}");
        let account_id = account["id"].as_str().expect("account id").to_owned();
        let (status, team) = self
            .post(
                &format!("/api/v1/accounts/{account_id}/teams"),
                ADMIN_KEY,
                json!({"name": "Recruiting"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{team}");
        let team_id = team["id"].as_str().expect("team id").to_owned();
        let (status, key) = self
            .post(&format!("/api/v1/teams/{team_id}/keys"), ADMIN_KEY, json!({}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        TestTeam {
            account_id,
            team_id,
            key: key["key"].as_str().expect("key").to_owned(),
        }
    }

    pub async fn create_webhook(&self, team: &TestTeam, url: &str) -> Value {
        let (status, webhook) = self
            .post(
                "/api/v1/webhooks",
                &team.key,
                json!({"name": "CRM sync", "url": url, "eventTypes": ["meeting.completed"]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{webhook}");
        webhook
    }

    /// Creates a bot whose real-time endpoints are `(url, events)`.
    pub async fn create_bot(&self, team: &TestTeam, endpoints: &[(String, &[&str])]) -> Value {
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|(url, events)| json!({"type": "webhook", "url": url, "events": events}))
            .collect();
        let (status, bot) = self
            .post(
                "/api/v1/bot/",
                &team.key,
                json!({"meeting_url": "https://meet.google.com/hzj-adhd-inu", "metadata": {"customer": "acme"},
                       "recording_config": {"realtime_endpoints": endpoints}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{bot}");
        bot
    }

    /// Publishes bot events as the fleet does, in one batch.
    pub async fn bot_events(&self, bot_id: &str, events: &[(&str, Value)]) -> (StatusCode, Value) {
        let events: Vec<Value> = events
            .iter()
            .map(|(event, data)| json!({"event": event, "data": data}))
            .collect();
        self.post(
            &format!("/api/v1/bot/{bot_id}/events"),
            ADMIN_KEY,
            json!({ "events": events }),
        )
        .await
    }

    pub async fn publish(&self, body: Value) -> (StatusCode, Value) {
        self.post("/api/v1/events", ADMIN_KEY, body).await
    }

    pub async fn attempts(&self, team: &TestTeam, webhook_id: &str, query: &str) -> Vec<Value> {
        let (status, page) = self
            .get(&format!("/api/v1/webhooks/{webhook_id}/attempts?{query}"), &team.key)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["data"].as_array().expect("data").clone()
    }

    /// Waits until the webhook's log holds at least `n` attempts.
    pub async fn wait_for_attempts(&self, team: &TestTeam, webhook_id: &str, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let attempts = self.attempts(team, webhook_id, "limit=250").await;
            if attempts.len() >= n {
                return attempts;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} attempts logged in {within:?}",
                attempts.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A `meeting.completed` publish body for `team`, shaped like the seed's sample.
pub fn meeting_event(team: &TestTeam, meeting_id: &str) -> Value {
    json!({
        "eventType": "meeting.completed",
        "data": {
            "meeting": {
                "id": meeting_id,
                "name": "Project Sync: Q4 Roadmap",
                "startTime": "2025-10-10T10:23:27.000Z",
                "ownerName": "Alex Rivers",
                "participants": ["+12345678900"],
                "atsRecordName": "First Last",
                "isPrivate": false
            },
            "organization": {"accountId": team.account_id, "teamId": team.team_id},
            "assets": {
                "transcriptionUrl": "https://api.provider.com/v1/transcripts/abc123.txt",
                "recordingUrl": "https://api.provider.com/v1/recordings/abc123.mp4",
                "actionItemsUrl": "https://api.provider.com/v1/actions/abc123.json",
                "databaseNotes": [{"name": "Summary", "note": "Discussed budget."}],
                "followUpMaterials": [{"name": "Meeting Recap", "txtUrl": "https://api.provider.com/docs/recap.txt", "pdfUrl": "https://api.provider.com/docs/recap.pdf"}]
            }
        }
    })
}

/// What the receiver does with the next request.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    /// Answer with this status and a `Retry-After` header of this value.
    RetryAfter(u16, String),
    /// Answer with this status after a pause.
    Slow(u16, Duration),
    /// Accept the request and never answer.
    Hang,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// How the receiver answers: per path prefix first, then scripted answers in
/// order, then the default.
struct Script {
    by_path: Vec<(String, Answer)>,
    next: VecDeque<Answer>,
    default: Answer,
}

/// A real HTTP endpoint on 127.0.0.1 that records what it receives.
pub struct TestReceiver {
    pub addr: SocketAddr,
    received: tokio::sync::Mutex<mpsc::Receiver<Received>>,
    script: Arc<Mutex<Script>>,
    stop: CancellationToken,
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestReceiver {
    pub async fn start() -> Self {
        let (tx, rx) = mpsc::channel::<Received>(100_000);
        let script = Arc::new(Mutex::new(Script {
            by_path: Vec::new(),
            next: VecDeque::new(),
            default: Answer::Status(204),
        }));
        let stop = CancellationToken::new();
        let handler_script = Arc::clone(&script);
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            let script = Arc::clone(&handler_script);
            async move {
                let path_and_query = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
                let answer = {
                    let mut s = script.lock().expect("script lock");
                    match s
                        .by_path
                        .iter()
                        .find(|(prefix, _)| path_and_query.starts_with(prefix.as_str()))
                    {
                        Some((_, answer)) => answer.clone(),
                        None => {
                            let default = s.default.clone();
                            s.next.pop_front().unwrap_or(default)
                        }
                    }
                };
                let _ = tx.try_send(Received {
                    path_and_query,
                    headers,
                    body,
                    at: Instant::now(),
                });
                match answer {
                    Answer::Status(code) => {
                        (StatusCode::from_u16(code).expect("status"), "receiver says hi").into_response()
                    }
                    Answer::RetryAfter(code, value) => (
                        StatusCode::from_u16(code).expect("status"),
                        [("retry-after", value)],
                        "not now",
                    )
                        .into_response(),
                    Answer::Slow(code, pause) => {
                        tokio::time::sleep(pause).await;
                        (StatusCode::from_u16(code).expect("status"), "receiver says hi").into_response()
                    }
                    Answer::Hang => std::future::pending::<axum::response::Response>().await,
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        serve_until(listener, app, stop.clone());
        Self {
            addr,
            received: tokio::sync::Mutex::new(rx),
            script,
            stop,
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// Every request from now on gets `answer`, after any scripted ones.
    pub fn answer_always(&self, answer: Answer) {
        self.script.lock().expect("script lock").default = answer;
    }

    /// The next requests get these answers, in order.
    pub fn answer_next(&self, answers: &[Answer]) {
        self.script
            .lock()
            .expect("script lock")
            .next
            .extend(answers.iter().cloned());
    }

    /// Requests whose path starts with `prefix` always get `answer`.
    pub fn answer_path(&self, prefix: &str, answer: Answer) {
        let mut script = self.script.lock().expect("script lock");
        script.by_path.retain(|(p, _)| p != prefix);
        script.by_path.push((prefix.to_owned(), answer));
    }

    pub async fn next(&self, within: Duration) -> Option<Received> {
        tokio::time::timeout(within, self.received.lock().await.recv())
            .await
            .ok()
            .flatten()
    }

    /// Asserts that nothing arrives for `quiet`.
    pub async fn assert_quiet(&self, quiet: Duration) {
        if let Some(r) = self.next(quiet).await {
            panic!("expected no delivery, got one for {}", r.header("webhook-id"));
        }
    }
}

/// The `v1,…` signature `secret` makes of a received delivery, computed
/// independently of Herald's code.
pub fn expected_signature(secret: &str, received: &Received) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("hmac key");
    mac.update(received.header("webhook-id").as_bytes());
    mac.update(b".");
    mac.update(received.header("webhook-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&received.body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Verifies a Standard Webhooks signature independently of Herald's code.
pub fn signature_is_valid(secret: &str, received: &Received) -> bool {
    let expected = expected_signature(secret, received);
    received.header("webhook-signature").split(' ').any(|s| s == expected)
}

impl TestApp {
    /// A one-time dashboard sign-in link for the team, from the admin API.
    pub async fn dashboard_link(&self, team: &TestTeam) -> String {
        let (status, link) = self
            .post(
                &format!("/api/v1/teams/{}/dashboard-links", team.team_id),
                ADMIN_KEY,
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{link}");
        link["url"].as_str().expect("url").to_owned()
    }
}

/// Serves `app` on `listener` in the background until `stop` is cancelled.
pub fn serve_until(listener: tokio::net::TcpListener, app: axum::Router, stop: CancellationToken) {
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
}

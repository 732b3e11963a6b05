//! The receiver kit against a live Herald: a receiver built on the
//! `herald-receiver` crate's axum extractor, and the Python example on the
//! `standardwebhooks` package, verify real deliveries (rotations included)
//! and refuse tampered, stale and wrongly signed ones.
//!
//! The Python test needs `python3` with `standardwebhooks` installed
//! (`examples/python-receiver/requirements.txt`; `HERALD_TEST_PYTHON` names
//! another interpreter). Without them it says why and passes, unless
//! `HERALD_TEST_REQUIRE_ALL=1`, which makes them a failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use herald_receiver::{Event, Secret, VerifiedWebhook, Verifier, VerifyError};
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;
use crate::process::collect_lines;

const WAIT: Duration = Duration::from_secs(10);
/// A valid secret that no webhook in these tests has.
const STRANGER: &str = "whsec_dGhlIG90aGVyIHNlY3JldCwgMzIgYnl0ZXMgbG9uZyE=";

/// One delivery that passed the extractor, with the request as it came.
struct Captured {
    headers: HeaderMap,
    webhook: VerifiedWebhook<Event>,
}

#[derive(Clone)]
struct KitState {
    verifier: Verifier,
    captured: mpsc::Sender<Captured>,
}

impl FromRef<KitState> for Verifier {
    fn from_ref(state: &KitState) -> Self {
        state.verifier.clone()
    }
}

/// A receiver as a customer would write it with the crate: the extractor
/// verifies and parses, the handler only sees genuine deliveries.
async fn receive(State(state): State<KitState>, headers: HeaderMap, webhook: VerifiedWebhook<Event>) -> AxumStatus {
    let _ = state.captured.try_send(Captured { headers, webhook });
    AxumStatus::NO_CONTENT
}

struct KitReceiver {
    addr: SocketAddr,
    captured: tokio::sync::Mutex<mpsc::Receiver<Captured>>,
    stop: CancellationToken,
}

impl Drop for KitReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl KitReceiver {
    /// Binds first, so the URL can be given to Herald before the secret it
    /// answers with is known.
    async fn bind() -> tokio::net::TcpListener {
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
    }

    async fn serve(listener: tokio::net::TcpListener, secret: &str) -> Self {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(100);
        let state = KitState {
            verifier: Verifier::new(secret).unwrap(),
            captured: tx,
        };
        let app = Router::new().route("/herald", post(receive)).with_state(state);
        let stop = CancellationToken::new();
        serve_until(listener, app, stop.clone());
        Self {
            addr,
            captured: tokio::sync::Mutex::new(rx),
            stop,
        }
    }

    async fn next(&self) -> Captured {
        tokio::time::timeout(WAIT, self.captured.lock().await.recv())
            .await
            .expect("a verified delivery within the wait")
            .expect("the receiver is running")
    }

    fn url(&self) -> String {
        format!("http://{}/herald", self.addr)
    }
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A request signed by the test itself with `secret`, as Herald signs.
fn signed(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> reqwest::RequestBuilder {
    let secret: Secret = secret.parse().unwrap();
    client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", secret.sign(id, timestamp, body))
}

on_every_store! {
async fn a_receiver_on_the_crate_verifies_and_parses_a_real_delivery_and_refuses_altered_copies() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let listener = KitReceiver::bind().await;
    let url = format!("http://{}/herald", listener.local_addr().unwrap());
    let webhook = app.create_webhook(&team, &url).await;
    let webhook_id = webhook["id"].as_str().unwrap();
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    let receiver = KitReceiver::serve(listener, &secret).await;

    let (status, published) = app.publish(meeting_event(&team, "mtg_kit")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{published}");
    let event_id = published["id"].as_str().unwrap();
    let got = receiver.next().await;

    // The extractor verified it and typed it as meeting.completed.
    assert_eq!(got.webhook.id, event_id);
    let Event::MeetingCompleted(event) = &got.webhook.payload else {
        panic!("not a meeting.completed: {:?}", got.webhook.payload);
    };
    assert_eq!(event.id, event_id);
    assert_eq!(event.event_type, "meeting.completed");
    assert_eq!(event.created_at, published["createdAt"].as_i64().unwrap());
    assert_eq!(event.data.meeting.id, "mtg_kit");
    assert_eq!(event.data.meeting.name.as_deref(), Some("Project Sync: Q4 Roadmap"));
    assert_eq!(event.data.meeting.is_private, Some(false));
    assert_eq!(event.data.organization.team_id, team.team_id);
    assert_eq!(event.data.organization.account_id, team.account_id);
    let assets = event.data.assets.as_ref().expect("assets");
    assert_eq!(assets.follow_up_materials.as_ref().unwrap()[0].name.as_deref(), Some("Meeting Recap"));
    // Herald saw the receiver's 204 as a success.
    let attempts = app.wait_for_attempts(&team, webhook_id, 1, WAIT).await;
    assert_eq!(attempts[0]["status"], "success", "{}", attempts[0]);

    // The captured request, verified again off the wire, then altered.
    let (headers, body) = (&got.headers, &got.webhook.body);
    let verifier = Verifier::new(&secret).unwrap();
    assert_eq!(verifier.verify(headers, body).unwrap().id, event_id);
    let mut tampered = body.to_vec();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'x' { b'y' } else { b'x' };
    assert_eq!(verifier.verify(headers, &tampered), Err(VerifyError::NoMatchingSignature));
    let later = SystemTime::now() + Duration::from_secs(10 * 60);
    assert_eq!(verifier.verify_at(headers, body, later), Err(VerifyError::TooOld));
    let stranger = Verifier::new(STRANGER).unwrap();
    assert_eq!(stranger.verify(headers, body), Err(VerifyError::NoMatchingSignature));

    // The same refusals over HTTP, through the extractor: the handler never
    // runs, and the answer says why.
    let client = reqwest::Client::new();
    let replay = |body: Vec<u8>, drop_header: Option<&str>| {
        let mut request = client.post(receiver.url()).body(body);
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature", "content-type"] {
            if Some(name) != drop_header {
                request = request.header(name, headers[name].to_str().unwrap());
            }
        }
        request.send()
    };
    let answer = replay(tampered.clone(), None).await.unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(answer.text().await.unwrap(), "no signature matches");
    let answer = replay(body.to_vec(), Some("webhook-signature")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let stale = now_s() - 600;
    let answer = signed(&client, &receiver.url(), &secret, event_id, stale, body).body(body.clone()).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(answer.text().await.unwrap(), "the webhook-timestamp is too old");
    let answer = signed(&client, &receiver.url(), STRANGER, event_id, now_s(), body).body(body.clone()).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    // Replaying the genuine request as it came passes, which shows the
    // refusals above are the alterations' doing.
    let answer = replay(body.to_vec(), None).await.unwrap();
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    assert_eq!(receiver.next().await.webhook.id, event_id);
}
}

on_every_store! {
async fn during_a_rotation_the_old_and_the_new_secret_each_verify_the_delivery() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let listener = KitReceiver::bind().await;
    let url = format!("http://{}/herald", listener.local_addr().unwrap());
    let webhook = app.create_webhook(&team, &url).await;
    let webhook_id = webhook["id"].as_str().unwrap();
    let old = webhook["secret"].as_str().unwrap().to_owned();
    // The receiver keeps the old secret throughout, as a customer who has
    // not switched yet would.
    let receiver = KitReceiver::serve(listener, &old).await;

    let (status, _) = app.publish(meeting_event(&team, "before")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let before = receiver.next().await;
    assert_eq!(before.headers["webhook-signature"].to_str().unwrap().split(' ').count(), 1);

    let (status, rotated) = app
        .post(
            &format!("/api/v1/webhooks/{webhook_id}/secret/rotate"),
            &team.key,
            json!({"graceSeconds": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);

    let (status, published) = app.publish(meeting_event(&team, "after")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let after = receiver.next().await;
    assert_eq!(after.webhook.id, published["id"].as_str().unwrap());
    let Event::MeetingCompleted(event) = &after.webhook.payload else {
        panic!("not a meeting.completed");
    };
    assert_eq!(event.data.meeting.id, "after");

    let (headers, body) = (&after.headers, &after.webhook.body);
    let signatures: Vec<&str> = headers["webhook-signature"].to_str().unwrap().split(' ').collect();
    assert_eq!(signatures.len(), 2, "two signatures during the grace: {signatures:?}");
    for (name, secret) in [("new", &new), ("old", &old)] {
        let verifier = Verifier::new(secret).unwrap();
        assert!(verifier.verify(headers, body).is_ok(), "a verifier with only the {name} secret accepts it");
    }
    let both = Verifier::with_secrets([&new, &old]).unwrap();
    assert!(both.verify(headers, body).is_ok());
    // The new signature comes first.
    let new_only = Verifier::new(&new).unwrap();
    let id = headers["webhook-id"].to_str().unwrap();
    let timestamp = headers["webhook-timestamp"].to_str().unwrap();
    assert!(new_only.verify_parts(id, timestamp, signatures[0], body, SystemTime::now()).is_ok());
    assert!(new_only.verify_parts(id, timestamp, signatures[1], body, SystemTime::now()).is_err());
    assert_eq!(
        Verifier::new(STRANGER).unwrap().verify(headers, body),
        Err(VerifyError::NoMatchingSignature)
    );
    let mut tampered = body.to_vec();
    tampered.push(b' ');
    assert_eq!(both.verify(headers, &tampered), Err(VerifyError::NoMatchingSignature));
}
}

on_every_store! {
async fn a_real_time_delivery_verifies_with_the_endpoint_secret_and_parses_as_the_envelope() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let listener = KitReceiver::bind().await;
    let url = format!("http://{}/herald?token=abc", listener.local_addr().unwrap());
    let bot = app.create_bot(&team, &[(url, &["participant_events.join"])]).await;
    let bot_id = bot["id"].as_str().unwrap();
    let endpoint = &bot["recording_config"]["realtime_endpoints"][0];
    let receiver = KitReceiver::serve(listener, endpoint["secret"].as_str().unwrap()).await;

    let data = json!({"participant": {"id": 7, "name": "Ada", "is_host": true, "platform": "zoom",
                                      "extra_data": {}, "email": "ada@example.com"},
                      "timestamp": {"absolute": "2025-10-10T10:23:27.000Z", "relative": 1.5},
                      "new_field": [1]});
    let (status, answer) = app.bot_events(bot_id, &[("participant_events.join", data)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let got = receiver.next().await;
    let Event::Realtime(event) = &got.webhook.payload else {
        panic!("not a real-time envelope: {:?}", got.webhook.payload);
    };
    assert_eq!(event.event, "participant_events.join");
    assert_eq!(event.data.bot.id, bot_id);
    assert_eq!(event.data.bot.metadata["customer"], "acme");
    assert_eq!(event.data.realtime_endpoint.id, endpoint["id"].as_str().unwrap());
    assert!(event.data.participant_events.is_some() && event.data.transcript.is_none());
    let participant_data = event.participant_data().unwrap();
    assert_eq!(participant_data.participant.unwrap().name.as_deref(), Some("Ada"));
    assert_eq!(participant_data.extra["new_field"], json!([1]));
}
}

/// A child process, killed when the test ends however it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The interpreter to run the Python example with, if it has
/// `standardwebhooks`; otherwise why not (the test skips, or fails under
/// `HERALD_TEST_REQUIRE_ALL=1`).
fn python_with_standardwebhooks() -> Result<String, String> {
    let python = std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let check = Command::new(&python)
        .args(["-c", "from standardwebhooks.webhooks import Webhook"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match check {
        Err(e) => Err(format!("{python} cannot be run ({e})")),
        Ok(out) if !out.status.success() => Err(format!(
            "{python} has no standardwebhooks module (pip install -r examples/python-receiver/requirements.txt): {}",
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()
        )),
        Ok(_) => Ok(python),
    }
}

#[tokio::test]
async fn the_python_example_verifies_real_deliveries_and_refuses_altered_ones() {
    let python = match python_with_standardwebhooks() {
        Ok(python) => python,
        Err(why) => {
            if std::env::var("HERALD_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
                panic!("the Python receiver test: {why}, and HERALD_TEST_REQUIRE_ALL=1");
            }
            eprintln!("skipping the Python receiver test: {why}");
            return;
        }
    };
    let app = spawn_app().await;
    let team = app.create_team().await;
    // The webhook's secret is known only once it exists: create it first,
    // start the receiver with the secret, then point the webhook at it.
    let webhook = app.create_webhook(&team, "http://127.0.0.1:9/not-yet").await;
    let webhook_id = webhook["id"].as_str().unwrap();
    let secret = webhook["secret"].as_str().unwrap().to_owned();

    let script = repository_root().join("examples/python-receiver/receiver.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg("0")
        .env("HERALD_WEBHOOK_SECRET", &secret)
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python receiver");
    let lines = collect_lines(child.stdout.take().expect("stdout"));
    let log = collect_lines(child.stderr.take().expect("stderr"));
    let child = ChildGuard(child);
    let base = wait_for_line(&lines, &log, |l| l.strip_prefix("listening on ").map(str::to_owned)).await;
    let (status, patched) = app
        .patch(
            &format!("/api/v1/webhooks/{webhook_id}"),
            &team.key,
            json!({"url": base}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");

    let (status, published) = app.publish(meeting_event(&team, "mtg_python")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{published}");
    let event_id = published["id"].as_str().unwrap().to_owned();
    wait_for_line(&lines, &log, |l| (l == event_id).then(|| l.to_owned())).await;
    let attempts = app.wait_for_attempts(&team, webhook_id, 1, WAIT).await;
    assert_eq!(attempts[0]["status"], "success", "{}", attempts[0]);
    assert_eq!(attempts[0]["response"]["status"], 204, "{}", attempts[0]);

    // Requests the test signs itself: the genuine one passes, and each
    // alteration is refused with a 4xx and prints nothing.
    let client = reqwest::Client::new();
    let body = serde_json::to_vec(
        &json!({"id": "evt_by_test", "eventType": "meeting.completed", "createdAt": 1,
        "data": {"meeting": {"id": "m"}, "organization": {"accountId": "a", "teamId": "t"}}}),
    )
    .unwrap();
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let cases: [(&str, reqwest::RequestBuilder, StatusCode); 4] = [
        (
            "a tampered body",
            signed(&client, &base, &secret, "evt_tampered", now_s(), &body).body(tampered),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a stale timestamp",
            signed(&client, &base, &secret, "evt_stale", now_s() - 600, &body).body(body.clone()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a wrong secret",
            signed(&client, &base, STRANGER, "evt_stranger", now_s(), &body).body(body.clone()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a malformed signature header",
            client
                .post(&base)
                .header("webhook-id", "evt_malformed")
                .header("webhook-timestamp", now_s().to_string())
                .header("webhook-signature", "garbage")
                .body(body.clone()),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, request, expected) in cases {
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), expected, "{what}");
    }
    let answer = signed(&client, &base, &secret, "evt_by_test", now_s(), &body)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NO_CONTENT, "the genuine request passes");
    wait_for_line(&lines, &log, |l| (l == "evt_by_test").then(|| l.to_owned())).await;
    // A retry may print an id twice; nothing else may be printed.
    let printed = lines.lock().unwrap().clone();
    assert!(
        printed[1..].iter().all(|l| *l == event_id || l == "evt_by_test"),
        "only verified deliveries are printed: {printed:?}"
    );
    drop(child);
}

/// Waits until a line the child printed gives `want` an answer.
async fn wait_for_line(
    lines: &Mutex<Vec<String>>,
    log: &Mutex<Vec<String>>,
    want: impl Fn(&str) -> Option<String>,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = lines.lock().unwrap().iter().find_map(|l| want(l)) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "not printed within {WAIT:?}; printed: {:?}; its log: {:?}",
            lines.lock().unwrap(),
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

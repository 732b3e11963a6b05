//! `herald demo`: the whole product in one process, with no settings. A
//! server on a fresh SQLite store in a new temporary directory, allowed to
//! deliver to development targets; a built-in receiver on a free port of
//! 127.0.0.1 with a healthy path, a failing one and a real-time one; a demo
//! account, team, team key, two webhooks and a bot; and a round of sample
//! events every few seconds, until Ctrl-C or SIGTERM stop the server as
//! `serve` stops and the directory is deleted.
//!
//! The server is the one `serve` runs ([`App::build`] on a [`Config`]), and the
//! demo makes everything through its HTTP API with the admin and team keys, as
//! a platform and its customers would: what it shows is what they get. It
//! reads no setting but the listen address, and nothing it makes outlives it.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::post;
use herald_dashboard::iso_time;
use herald_domain::keys::constant_time_eq;
use herald_domain::signing::{Secret, Signer, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
use herald_engine::now_ms;
use herald_store::sqlite::Durability;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{App, Config, DatabaseLocation};

/// `herald demo` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Address the server listens on; if it is taken, a free port on the same address.
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
}

/// How often a round of sample events is published.
const PUBLISH_EVERY: Duration = Duration::from_secs(5);

/// The receiver's paths: the healthy webhook's (answers 200), the failing
/// webhook's (answers 500, so every delivery to it is retried until it
/// fails), and the bot's real-time endpoint's (answers 200).
const HEALTHY: &str = "/healthy";
const FAILING: &str = "/failing";
const REALTIME: &str = "/realtime";

/// Runs the demo until Ctrl-C or SIGTERM, then stops the server and deletes
/// its store.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // Polled once before anything is made, the signal future installs its
    // handlers: from then on a Ctrl-C, even during setup, ends in the
    // cleanup below instead of killing the process.
    let stop = CancellationToken::new();
    let mut signal = Box::pin(crate::shutdown_signal());
    tokio::select! {
        biased;
        () = &mut signal => stop.cancel(),
        () = std::future::ready(()) => {}
    }
    tokio::spawn({
        let stop = stop.clone();
        async move {
            signal.await;
            stop.cancel();
        }
    });
    let store = TempStore::create()?;
    let outcome = run_on(&args, &store, &stop).await;
    store.wait_until_closed().await;
    let dir = store.dir.clone();
    drop(store);
    if !dir.exists() {
        println!("deleted {}", dir.display());
    }
    outcome
}

async fn run_on(args: &DemoArgs, store: &TempStore, stop: &CancellationToken) -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let listener = bind(&args.listen).await?;
    let mut config = Config::new(DatabaseLocation::Sqlite {
        path: store.database(),
        durability: Durability::Normal,
    });
    config.listen = listener.local_addr().context("the listener has no address")?;
    config.allow_insecure_targets = true;
    let app = App::build(config, listener).await?;
    let admin_key = app
        .generated_admin_key()
        .context("a new store generates its admin key")?
        .to_owned();
    let api = Api::new(format!("http://{}", app.addr()), admin_key);
    // The server stops on the signal; should it stop on its own, the demo stops with it.
    let server = tokio::spawn({
        let stop = stop.clone();
        async move {
            let served = app.run_until_stopped(stop.clone().cancelled_owned()).await;
            stop.cancel();
            served
        }
    });
    let shown = show(&api, &receiver, store, stop).await;
    stop.cancel();
    println!("stopping: attempts in flight may finish");
    let served = match server.await {
        Ok(served) => served,
        Err(e) => Err(anyhow::Error::new(e).context("the server task failed")),
    };
    // The receiver stops last, so that attempts in flight get their answers.
    receiver.stop().await;
    shown.and(served)
}

/// Makes the demo's account, team, webhooks and bot, prints how to try them,
/// and publishes sample events until `stop`.
async fn show(api: &Api, receiver: &Receiver, store: &TempStore, stop: &CancellationToken) -> anyhow::Result<()> {
    // Stopping comes first: once it has begun, the server refuses the
    // requests still under way, and that is no error.
    let demo = tokio::select! {
        biased;
        () = stop.cancelled() => return Ok(()),
        demo = set_up(api, receiver) => demo?,
    };
    print!("{}", intro(api, &demo, receiver, store));
    publish_until(api, &demo, stop).await;
    Ok(())
}

/// The demo's directory under the system's temporary directory, deleted when
/// dropped: on every way out of [`run`], an error included.
struct TempStore {
    dir: PathBuf,
}

impl TempStore {
    fn create() -> anyhow::Result<Self> {
        let suffix: [u8; 6] = herald_domain::random_bytes();
        let dir = std::env::temp_dir().join(format!("herald-demo-{}", hex(&suffix)));
        std::fs::create_dir(&dir).with_context(|| format!("cannot create the demo's directory {}", dir.display()))?;
        Ok(Self { dir })
    }

    fn database(&self) -> PathBuf {
        self.dir.join("herald.db")
    }

    /// Waits, a little at most, until this process has no file open in the
    /// directory any more. The stopped store's threads close theirs as they
    /// notice it is gone, and one that found its database file deleted first
    /// would report it as an error. (Where `/proc` is missing, at once.)
    async fn wait_until_closed(&self) {
        let dir = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        let open_here = || {
            std::fs::read_dir("/proc/self/fd").is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|file| file.starts_with(&dir)))
            })
        };
        let deadline = tokio::time::Instant::now() + STORE_CLOSE_WAIT;
        while open_here() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The longest the demo waits for its stopped store to close its files.
const STORE_CLOSE_WAIT: Duration = Duration::from_secs(2);

impl Drop for TempStore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("cannot delete the demo's store {}: {e}", self.dir.display());
        }
    }
}

/// Binds `listen`; if that address is taken (by a `herald serve` on 8080,
/// say), a free port on the same address, so that the demo starts anyway.
async fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("HERALD_LISTEN / --listen: `{listen}` is not an address like 127.0.0.1:8080"))?;
    match TcpListener::bind(addr).await {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 => {
            println!("{addr} is in use; the demo listens on a free port instead");
            let any_port = SocketAddr::new(addr.ip(), 0);
            TcpListener::bind(any_port)
                .await
                .with_context(|| format!("cannot listen on {any_port}"))
        }
        bound => bound.with_context(|| format!("cannot listen on {addr}")),
    }
}

/// What the demo made, with the ids the API answered.
struct Demo {
    account_id: String,
    team_id: String,
    team_key: String,
    healthy_id: String,
    failing_id: String,
    bot_id: String,
    sign_in_url: String,
    /// Whole minutes the sign-in link works for.
    link_minutes: i64,
}

/// Makes an account, a team and its key as the platform (admin key), the
/// webhooks and the bot as the team (team key), and a dashboard sign-in link.
async fn set_up(api: &Api, receiver: &Receiver) -> anyhow::Result<Demo> {
    let admin = api.admin_key.as_str();
    let account = api
        .post("/api/v1/accounts", admin, &json!({"name": "Demo Account"}))
        .await?;
    let account_id = field(&account, "id")?;
    let team = api
        .post(
            &format!("/api/v1/accounts/{account_id}/teams"),
            admin,
            &json!({"name": "Demo Team"}),
        )
        .await?;
    let team_id = field(&team, "id")?;
    let key = api
        .post(
            &format!("/api/v1/teams/{team_id}/keys"),
            admin,
            &json!({"name": "herald demo"}),
        )
        .await?;
    let team_key = field(&key, "key")?;

    let healthy_id = create_webhook(api, &team_key, receiver, "Healthy receiver", HEALTHY).await?;
    let failing_id = create_webhook(api, &team_key, receiver, "Failing receiver", FAILING).await?;
    let bot = api
        .post(
            "/api/v1/bot/",
            &team_key,
            &json!({
                "meeting_url": "https://meet.google.com/hzj-adhd-inu",
                "metadata": {"source": "herald demo"},
                "recording_config": {"realtime_endpoints": [{
                    "type": "webhook",
                    "url": receiver.realtime_url(),
                    "events": ["participant_events.join", "transcript.data"],
                }]},
            }),
        )
        .await?;
    let endpoint = &bot["recording_config"]["realtime_endpoints"][0];
    receiver.trust(REALTIME, &field(endpoint, "secret")?)?;

    let link = api
        .post(&format!("/api/v1/teams/{team_id}/dashboard-links"), admin, &json!({}))
        .await?;
    let expires_at = link["expiresAt"]
        .as_i64()
        .context("the dashboard link has no `expiresAt`")?;
    Ok(Demo {
        account_id,
        team_id,
        team_key,
        healthy_id,
        failing_id,
        bot_id: field(&bot, "id")?,
        sign_in_url: field(&link, "url")?,
        link_minutes: (expires_at - now_ms() + 30_000) / 60_000,
    })
}

/// Creates a `meeting.completed` webhook posting to the receiver's `path`,
/// whose signatures the receiver then checks; answers its id.
async fn create_webhook(
    api: &Api,
    team_key: &str,
    receiver: &Receiver,
    name: &str,
    path: &'static str,
) -> anyhow::Result<String> {
    let webhook = api
        .post(
            "/api/v1/webhooks",
            team_key,
            &json!({"name": name, "url": receiver.url(path), "eventTypes": ["meeting.completed"]}),
        )
        .await?;
    receiver.trust(path, &field(&webhook, "secret")?)?;
    field(&webhook, "id")
}

/// What the demo prints once it is set up: where everything is, the keys,
/// and requests to try with them filled in.
fn intro(api: &Api, demo: &Demo, receiver: &Receiver, store: &TempStore) -> String {
    let base = &api.base;
    let admin = &api.admin_key;
    let Demo {
        account_id,
        team_id,
        team_key,
        healthy_id,
        failing_id,
        bot_id,
        sign_in_url,
        link_minutes,
    } = demo;
    let store = store.dir.display();
    let receiver = receiver.url("");
    let publish = format!(
        r#"{{"eventType":"meeting.completed","data":{{"meeting":{{"id":"my-meeting"}},"organization":{{"accountId":"{account_id}","teamId":"{team_id}"}}}}}}"#
    );
    format!(
        "
Herald demo: a server, a receiver and sample events, all in this process.
Ctrl-C stops it and deletes its store.

  server      {base}
  dashboard   {sign_in_url}
              (signs in to Demo Team's dashboard; works once, for {link_minutes} minutes)
  admin key   {admin}
  team key    {team_key}
  store       {store}
  receiver    {receiver}  ({HEALTHY} answers 200, {FAILING} 500, {REALTIME} 200)
  webhooks    {healthy_id} to {HEALTHY}
              {failing_id} to {FAILING} (retried 2, 4, 8 and 16 s apart, then failed)
  bot         {bot_id}, its real-time endpoint to {REALTIME}

Try:
  curl -s {base}/api/v1/webhooks -H 'Authorization: Bearer {team_key}'
  curl -s '{base}/api/v1/webhooks/{failing_id}/attempts?limit=5' -H 'Authorization: Bearer {team_key}'
  curl -s -X POST {base}/api/v1/events -H 'Authorization: Bearer {admin}' -d '{publish}'
  curl -s -X POST {base}/api/v1/teams/{team_id}/dashboard-links -H 'Authorization: Bearer {admin}' -d '{{}}'

Every {every} s, a round of events; each delivery the receiver gets is a line:
",
        every = PUBLISH_EVERY.as_secs(),
    )
}

/// Publishes a round of sample events every [`PUBLISH_EVERY`], the first at
/// once, until `stop`. A refused round (a 429 or 503 from a busy machine) is
/// shown, and the next one comes on time.
async fn publish_until(api: &Api, demo: &Demo, stop: &CancellationToken) {
    let started = now_ms();
    let mut every = tokio::time::interval(PUBLISH_EVERY);
    for round in 1u64.. {
        let published = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            published = async {
                every.tick().await;
                println!("round {round}: publishing meeting.completed (team) and two real-time events (bot)");
                publish_round(api, demo, round, started).await
            } => published,
        };
        if let Err(e) = published {
            println!("round {round}: a publish failed: {e:#}");
        }
    }
}

/// One `meeting.completed` for the team and a batch of two real-time events
/// for the bot, published as the platform (admin key).
async fn publish_round(api: &Api, demo: &Demo, round: u64, started_ms: i64) -> anyhow::Result<()> {
    let now = now_ms();
    api.post("/api/v1/events", &api.admin_key, &meeting_completed(demo, round, now))
        .await?;
    api.post(
        &format!("/api/v1/bot/{}/events", demo.bot_id),
        &api.admin_key,
        &bot_events(round, now, started_ms),
    )
    .await?;
    Ok(())
}

/// The sample meetings' participants: name and email.
const PEOPLE: [(&str, &str); 4] = [
    ("Ada Lovelace", "ada@example.com"),
    ("Grace Hopper", "grace@example.com"),
    ("Alan Turing", "alan@example.com"),
    ("Katherine Johnson", "katherine@example.com"),
];

/// What the sample participants say.
const LINES: [&str; 4] = [
    "Shall we start with the roadmap?",
    "The release is on track for Friday.",
    "I will send the notes after the call.",
    "Any questions before we wrap up?",
];

/// A `meeting.completed` publish body shaped like the team-webhook seed's sample.
fn meeting_completed(demo: &Demo, round: u64, now: i64) -> Value {
    let meeting = format!("demo-meeting-{round}");
    json!({
        "eventType": "meeting.completed",
        "data": {
            "meeting": {
                "id": meeting,
                "name": format!("Demo sync #{round}"),
                "startTime": iso_time(now - 30 * 60_000),
                "ownerName": PEOPLE[0].0,
                "participants": PEOPLE.iter().map(|(_, email)| email).collect::<Vec<_>>(),
                "isPrivate": false,
            },
            "organization": {"accountId": demo.account_id, "teamId": demo.team_id},
            "assets": {
                "transcriptionUrl": format!("https://files.example.com/{meeting}/transcript.txt"),
                "recordingUrl": format!("https://files.example.com/{meeting}/recording.mp4"),
                "databaseNotes": [{"name": "Summary", "note": "The release is on track."}],
            },
        },
    })
}

/// A batch of real-time events: a participant joins, then speaks.
fn bot_events(round: u64, now: i64, started_ms: i64) -> Value {
    let n = (round % PEOPLE.len() as u64) as usize;
    let (name, email) = PEOPLE[n];
    let participant = json!({
        "id": n + 1,
        "name": name,
        "is_host": n == 0,
        "platform": "desktop",
        "extra_data": {},
        "email": email,
    });
    let timestamp = json!({"absolute": iso_time(now), "relative": (now - started_ms) as f64 / 1000.0});
    json!({"events": [
        {"event": "participant_events.join", "data": {"participant": participant, "timestamp": timestamp}},
        {"event": "transcript.data", "data": {
            "participant": participant,
            "words": [{"text": LINES[n], "start_timestamp": timestamp, "end_timestamp": timestamp}],
        }},
    ]})
}

/// The demo's client for its own server's API.
struct Api {
    client: Client<HttpConnector, Body>,
    base: String,
    admin_key: String,
}

/// The largest answer the demo reads; its own server's answers are small.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

impl Api {
    fn new(base: String, admin_key: String) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            client,
            base,
            admin_key,
        }
    }

    /// POSTs `body` with `key`; answers the JSON of a 2xx, and an error
    /// naming the route otherwise.
    async fn post(&self, path: &str, key: &str, body: &Value) -> anyhow::Result<Value> {
        let request = Request::post(format!("{}{path}", self.base))
            .header(AUTHORIZATION, format!("Bearer {key}"))
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .with_context(|| format!("POST {path}: cannot build the request"))?;
        let response = self
            .client
            .request(request)
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let answer = axum::body::to_bytes(Body::new(response.into_body()), MAX_ANSWER_BYTES)
            .await
            .with_context(|| format!("POST {path}: cannot read the answer"))?;
        if !status.is_success() {
            bail!("POST {path} answered {status}: {}", String::from_utf8_lossy(&answer));
        }
        serde_json::from_slice(&answer).with_context(|| format!("POST {path}: the answer is not JSON"))
    }
}

/// A text field of an API answer.
fn field(answer: &Value, name: &str) -> anyhow::Result<String> {
    answer[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("an answer of the API has no `{name}`"))
}

/// The built-in receiver: a small axum server on a free port of 127.0.0.1
/// that prints each delivery it answers. It checks their signatures as a
/// customer's receiver would, with the secrets the API answered when the
/// endpoints were made, and the real-time endpoint's token in its URL.
struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

struct ReceiverState {
    /// The signer of the endpoint posting to each path.
    signers: Mutex<HashMap<&'static str, Signer>>,
    /// The token in the real-time endpoint's URL: the real-time seed's way
    /// for a receiver to know its sender.
    token: String,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("cannot start the demo's receiver")?;
        let addr = listener.local_addr().context("the receiver has no address")?;
        let state = Arc::new(ReceiverState {
            signers: Mutex::new(HashMap::new()),
            token: hex(&herald_domain::random_bytes::<8>()),
        });
        let router = Router::new()
            .route(HEALTHY, post(healthy))
            .route(FAILING, post(failing))
            .route(REALTIME, post(realtime))
            .with_state(Arc::clone(&state));
        let stop = CancellationToken::new();
        let serve = axum::serve(listener, router).with_graceful_shutdown(stop.clone().cancelled_owned());
        let task = tokio::spawn(serve.into_future());
        Ok(Self {
            addr,
            state,
            stop,
            task,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn realtime_url(&self) -> String {
        format!("{}?token={}", self.url(REALTIME), self.state.token)
    }

    /// Checks the deliveries to `path` with `secret` from now on.
    fn trust(&self, path: &'static str, secret: &str) -> anyhow::Result<()> {
        let secret = Secret::parse(secret).context("the API answered a secret that is not `whsec_…`")?;
        self.state
            .signers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path, Signer::new(&secret));
        Ok(())
    }

    /// Stops accepting, lets requests in progress finish, and returns.
    async fn stop(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the demo's receiver failed"),
            Err(e) => tracing::warn!(error = %e, "the demo's receiver task failed"),
        }
    }
}

async fn healthy(State(state): State<Arc<ReceiverState>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    state.answer(HEALTHY, StatusCode::OK, &headers, &body)
}

async fn failing(State(state): State<Arc<ReceiverState>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    state.answer(FAILING, StatusCode::INTERNAL_SERVER_ERROR, &headers, &body)
}

async fn realtime(
    State(state): State<Arc<ReceiverState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let expected = format!("token={}", state.token);
    let status = match query {
        Some(query) if constant_time_eq(&query, &expected) => StatusCode::OK,
        _ => StatusCode::UNAUTHORIZED,
    };
    state.answer(REALTIME, status, &headers, &body)
}

impl ReceiverState {
    /// Prints one delivery to `path` and answers `status`.
    fn answer(&self, path: &'static str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> StatusCode {
        let payload: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let event_type = payload["eventType"]
            .as_str()
            .or_else(|| payload["event"].as_str())
            .unwrap_or("?");
        let id = header(headers, WEBHOOK_ID).unwrap_or("?");
        println!(
            "  {path:<9} {} {event_type:<23} {id}  {}",
            status.as_u16(),
            self.check_signature(path, headers, body)
        );
        status
    }

    /// Whether the delivery carries a `webhook-signature` made with the
    /// secret of the endpoint posting to `path` (Standard Webhooks).
    fn check_signature(&self, path: &'static str, headers: &HeaderMap, body: &[u8]) -> &'static str {
        let (Some(id), Some(timestamp), Some(signatures)) = (
            header(headers, WEBHOOK_ID),
            header(headers, WEBHOOK_TIMESTAMP).and_then(|t| t.parse::<i64>().ok()),
            header(headers, WEBHOOK_SIGNATURE),
        ) else {
            return "unsigned";
        };
        let signers = self.signers.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(signer) = signers.get(path) else {
            return "signature not checked";
        };
        let expected = signer.sign(id, timestamp, body);
        if signatures.split(' ').any(|s| constant_time_eq(s, &expected)) {
            "signature ok"
        } else {
            "signature WRONG"
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

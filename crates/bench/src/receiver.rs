//! The fast receiver: a small hyper HTTP/1.1 keep-alive server on 127.0.0.1
//! that stands for every customer endpoint of a run.
//!
//! The URL path says which endpoint a request is for:
//!
//! - `/ep/{n}`: team webhook `n`. Answers 204, or 503 while a failure window
//!   set by [`Receiver::fail_until`] is open or while [`Receiver::fail_endpoint`]
//!   has `n` failing. Every arrival instant is kept
//!   per (endpoint, `webhook-id`), and the body must be JSON whose `id` is the
//!   `webhook-id` header; its `data.meeting.id` is kept for the caller to check.
//! - `/hang/{n}`: accepts the request and never answers (until the receiver
//!   stops): an endpoint that hangs.
//! - `/rt/{n}`: the real-time endpoint of bot `n`. The body must be the
//!   real-time envelope around `{"seq","bot",…}`; arrivals are kept per
//!   (bot, seq) and a per-endpoint order check counts a `seq` lower than one
//!   already delivered.
//! - `/loop`: the loopback-limit target; parses the body like `/ep/` and
//!   answers 204, recording only a count.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Arrivals of one event at one team endpoint.
#[derive(Debug, Clone)]
pub struct TeamRecord {
    /// Every arrival, with whether it was answered 2xx.
    pub arrivals: Vec<(Instant, bool)>,
    /// `data.meeting.id` of the first arrival's body.
    pub meeting_id: Option<Box<str>>,
    /// Whether every body parsed and carried `id` equal to `webhook-id`.
    pub body_ok: bool,
}

impl TeamRecord {
    /// Arrivals answered 2xx.
    pub fn delivered(&self) -> usize {
        self.arrivals.iter().filter(|(_, ok)| *ok).count()
    }

    /// The first arrival answered 2xx.
    pub fn first_delivery(&self) -> Option<Instant> {
        self.arrivals.iter().find(|(_, ok)| *ok).map(|(t, _)| *t)
    }
}

/// Arrivals of one real-time event at its bot's endpoint.
#[derive(Debug, Clone, Copy)]
pub struct RtRecord {
    pub first: Instant,
    pub count: u32,
}

/// Team arrivals by (endpoint, `webhook-id`).
pub type TeamTable = HashMap<(u32, Box<str>), TeamRecord>;
/// Real-time arrivals by (bot, seq).
pub type RtTable = HashMap<(u32, u64), RtRecord>;

/// What one team endpoint (`/ep/{n}`) has seen so far; [`Receiver::take`]
/// leaves these counts in place.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointCounts {
    /// Every request.
    pub attempts: u64,
    /// Requests answered 503.
    pub refused: u64,
    /// Distinct events answered 2xx.
    pub delivered: u64,
}

#[derive(Default)]
struct Tables {
    team: TeamTable,
    rt: RtTable,
    rt_last_seq: HashMap<u32, u64>,
    endpoints: HashMap<u32, EndpointCounts>,
}

#[derive(Default)]
pub struct Counts {
    /// Distinct (endpoint, event) pairs answered 2xx on `/ep/`.
    pub team_delivered: AtomicU64,
    /// Distinct (bot, seq) pairs on `/rt/`.
    pub rt_delivered: AtomicU64,
    /// Real-time events that came after a later one of the same endpoint.
    pub rt_out_of_order: AtomicU64,
    /// Requests to `/hang/`.
    pub hang_arrivals: AtomicU64,
    /// Requests to `/loop`.
    pub loop_requests: AtomicU64,
    /// Bodies that did not parse or did not match their headers or path.
    pub bad_bodies: AtomicU64,
    /// Requests without a `webhook-id` header or to an unknown path.
    pub unexpected: AtomicU64,
}

struct State {
    tables: Mutex<Tables>,
    counts: Counts,
    fail_until: Mutex<Option<Instant>>,
    /// Team endpoints answering 503 until they are taken out again.
    failing: Mutex<HashSet<u32>>,
    stop: watch::Receiver<bool>,
    first_bad: Mutex<Option<String>>,
}

/// A running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let state = Arc::new(State {
            tables: Mutex::new(Tables::default()),
            counts: Counts::default(),
            fail_until: Mutex::new(None),
            failing: Mutex::new(HashSet::new()),
            stop: stop_rx,
            first_bad: Mutex::new(None),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Ok(Self {
            addr,
            state,
            stop,
            accept,
        })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Team endpoints answer 503 until `until`.
    pub fn fail_until(&self, until: Instant) {
        if let Ok(mut f) = self.state.fail_until.lock() {
            *f = Some(until);
        }
    }

    /// Team endpoint `n` answers 503 (`true`) or 204 (`false`) from now on.
    pub fn fail_endpoint(&self, n: u32, failing: bool) {
        let mut set = self.state.failing.lock().unwrap_or_else(|e| e.into_inner());
        if failing {
            set.insert(n);
        } else {
            set.remove(&n);
        }
    }

    /// What team endpoint `n` has seen so far.
    pub fn endpoint(&self, n: u32) -> EndpointCounts {
        let tables = self.state.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables.endpoints.get(&n).copied().unwrap_or_default()
    }

    pub fn counts(&self) -> &Counts {
        &self.state.counts
    }

    /// The first bad body seen, described.
    pub fn first_bad(&self) -> Option<String> {
        self.state.first_bad.lock().ok().and_then(|b| b.clone())
    }

    /// Takes the recorded tables out (the receiver keeps recording into empty ones).
    pub fn take(&self) -> (TeamTable, RtTable) {
        match self.state.tables.lock() {
            Ok(mut t) => (std::mem::take(&mut t.team), std::mem::take(&mut t.rt)),
            Err(_) => Default::default(),
        }
    }

    /// Answers whatever hangs, closes every connection and stops listening.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        // Let hanging handlers answer before their connections are dropped.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        // Drop aborts the accept loop and with it every connection.
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    // Dropping the set (when this task is aborted) aborts every connection.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&state), req));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

enum Route {
    Team(u32),
    Hang,
    Rt(u32),
    Loop,
    Unknown,
}

fn route(path: &str) -> Route {
    let index = |rest: &str| rest.parse::<u32>().ok();
    if let Some(n) = path.strip_prefix("/ep/").and_then(index) {
        Route::Team(n)
    } else if path.starts_with("/hang/") {
        Route::Hang
    } else if let Some(n) = path.strip_prefix("/rt/").and_then(index) {
        Route::Rt(n)
    } else if path == "/loop" {
        Route::Loop
    } else {
        Route::Unknown
    }
}

#[derive(Deserialize)]
struct TeamBody {
    id: Option<String>,
    data: TeamData,
}

#[derive(Deserialize)]
struct TeamData {
    meeting: Meeting,
}

#[derive(Deserialize)]
struct Meeting {
    id: String,
}

#[derive(Deserialize)]
struct RtBody {
    event: String,
    data: RtOuter,
}

#[derive(Deserialize)]
struct RtOuter {
    data: RtInner,
}

/// What the bot fleet publishes (the loopback target parses this).
#[derive(Deserialize)]
struct RtPublish {
    #[allow(dead_code)]
    event: String,
    #[allow(dead_code)]
    data: RtInner,
}

#[derive(Deserialize)]
struct RtInner {
    seq: u64,
    bot: u32,
}

fn answer(status: StatusCode) -> Result<Response<Empty<Bytes>>, Infallible> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    Ok(response)
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    let arrival = Instant::now();
    let route = route(req.uri().path());
    let webhook_id = req
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(Box::<str>::from);
    if let Route::Hang = route {
        state.counts.hang_arrivals.fetch_add(1, Ordering::Relaxed);
        let mut stop = state.stop.clone();
        let _ = stop.wait_for(|stopped| *stopped).await;
        return answer(StatusCode::SERVICE_UNAVAILABLE);
    }
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return answer(StatusCode::BAD_REQUEST),
    };
    match route {
        Route::Team(n) => {
            let Some(webhook_id) = webhook_id else {
                state.counts.unexpected.fetch_add(1, Ordering::Relaxed);
                return answer(StatusCode::BAD_REQUEST);
            };
            let parsed: Option<TeamBody> = serde_json::from_slice(&body).ok();
            let body_ok = parsed.as_ref().is_some_and(|b| b.id.as_deref() == Some(&*webhook_id));
            if !body_ok {
                state.bad(format!(
                    "/ep/{n} webhook-id {webhook_id}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            let failing = state
                .fail_until
                .lock()
                .ok()
                .and_then(|f| *f)
                .is_some_and(|until| arrival < until)
                || state.failing.lock().is_ok_and(|set| set.contains(&n));
            let ok = !failing;
            let mut tables = state.tables.lock().unwrap_or_else(|e| e.into_inner());
            let record = tables.team.entry((n, webhook_id)).or_insert_with(|| TeamRecord {
                arrivals: Vec::with_capacity(1),
                meeting_id: parsed.map(|b| b.data.meeting.id.into_boxed_str()),
                body_ok: true,
            });
            let first_delivery = ok && record.delivered() == 0;
            if first_delivery {
                state.counts.team_delivered.fetch_add(1, Ordering::Relaxed);
            }
            record.arrivals.push((arrival, ok));
            record.body_ok &= body_ok;
            let counts = tables.endpoints.entry(n).or_default();
            counts.attempts += 1;
            counts.refused += u64::from(!ok);
            counts.delivered += u64::from(first_delivery);
            drop(tables);
            answer(if ok {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            })
        }
        Route::Rt(n) => {
            let parsed: Option<RtBody> = serde_json::from_slice(&body).ok();
            let Some(parsed) = parsed.filter(|b| b.event == "transcript.data" && b.data.data.bot == n) else {
                state.bad(format!("/rt/{n}: {}", String::from_utf8_lossy(&body)));
                return answer(StatusCode::NO_CONTENT);
            };
            let seq = parsed.data.data.seq;
            let mut tables = state.tables.lock().unwrap_or_else(|e| e.into_inner());
            let last = tables.rt_last_seq.entry(n).or_insert(seq);
            if seq < *last {
                state.counts.rt_out_of_order.fetch_add(1, Ordering::Relaxed);
            } else {
                *last = seq;
            }
            let record = tables.rt.entry((n, seq)).or_insert(RtRecord {
                first: arrival,
                count: 0,
            });
            record.count += 1;
            if record.count == 1 {
                state.counts.rt_delivered.fetch_add(1, Ordering::Relaxed);
            }
            drop(tables);
            answer(StatusCode::NO_CONTENT)
        }
        Route::Loop => {
            // The same parse as a team delivery, so the limit is measured on
            // comparable work; the published body has no `id`.
            let parsed: Option<TeamBody> = serde_json::from_slice(&body).ok();
            if parsed.is_none() && serde_json::from_slice::<RtPublish>(&body).is_err() {
                state.bad(format!("/loop: {}", String::from_utf8_lossy(&body)));
            }
            state.counts.loop_requests.fetch_add(1, Ordering::Relaxed);
            answer(StatusCode::NO_CONTENT)
        }
        Route::Hang | Route::Unknown => {
            state.counts.unexpected.fetch_add(1, Ordering::Relaxed);
            answer(StatusCode::NOT_FOUND)
        }
    }
}

impl State {
    fn bad(&self, what: String) {
        self.counts.bad_bodies.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_bad.lock()
            && first.is_none()
        {
            let mut what = what;
            let cut = (0..=what.len().min(500))
                .rev()
                .find(|&i| what.is_char_boundary(i))
                .unwrap_or(0);
            what.truncate(cut);
            *first = Some(what);
        }
    }
}

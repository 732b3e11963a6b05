//! The client side: plain HTTP/1.1 keep-alive connections (hyper), the setup
//! calls of the public API, and the load generator.
//!
//! The load generator ([`run`]) gives each of `concurrency` workers its own
//! keep-alive connection and sends one request at a time on it, either as
//! fast as answers come back or paced to a global rate. The same function,
//! with the same connections and concurrency, measures the loopback limit
//! (posting straight to the receiver), so the two numbers are comparable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// The longest the harness waits for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One keep-alive HTTP/1.1 connection, reopened after an error.
pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection that opens on first use.
    pub fn new(addr: SocketAddr) -> Self {
        let host = HeaderValue::from_str(&addr.to_string()).unwrap_or_else(|_| HeaderValue::from_static("127.0.0.1"));
        Self {
            addr,
            host,
            sender: None,
        }
    }

    /// A connection opened now.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let mut conn = Self::new(addr);
        conn.open().await?;
        Ok(conn)
    }

    async fn open(&mut self) -> anyhow::Result<()> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        // Ends when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends one request and reads the whole answer.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        body: Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.open().await?;
        }
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(auth) = auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let request = builder.body(Full::new(body))?;
        let sender = self.sender.as_mut().context("no connection")?;
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let result = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<(u16, Bytes)> {
        self.request(Method::GET, path, None, Bytes::new()).await
    }
}

/// `Authorization: Bearer <key>`.
pub fn bearer(key: &str) -> anyhow::Result<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {key}")).context("a key that is not a header value")
}

/// Setup calls of the public API, on one connection.
pub struct Api {
    conn: Conn,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Self {
        Self { conn: Conn::new(addr) }
    }

    /// POSTs JSON; answers the status and the parsed body (`null` if empty).
    pub async fn post(&mut self, path: &str, key: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let auth = bearer(key)?;
        let bytes = Bytes::from(serde_json::to_vec(body)?);
        let (status, answer) = self
            .conn
            .request(Method::POST, path, Some(&auth), bytes)
            .await
            .with_context(|| format!("POST {path}"))?;
        let value = if answer.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&answer)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer).into_owned()))
        };
        Ok((status, value))
    }

    /// GETs JSON that must answer 200; answers the parsed body.
    pub async fn get(&mut self, path: &str, key: &str) -> anyhow::Result<Value> {
        let auth = bearer(key)?;
        let (status, answer) = self
            .conn
            .request(Method::GET, path, Some(&auth), Bytes::new())
            .await
            .with_context(|| format!("GET {path}"))?;
        if status != 200 {
            bail!("GET {path} answered {status}: {}", String::from_utf8_lossy(&answer));
        }
        serde_json::from_slice(&answer).with_context(|| format!("GET {path}: an answer that is not JSON"))
    }

    /// POSTs JSON that must answer 201; answers the body.
    pub async fn create(&mut self, path: &str, key: &str, body: &Value) -> anyhow::Result<Value> {
        // A team key may make `HERALD_TEAM_RATE_LIMIT` requests a second
        // (100, bursts of 200): a setup of a thousand bots waits its turn,
        // as any client of the API would (the answer's `Retry-After` is 1 s).
        for _ in 0..120 {
            let (status, value) = self.post(path, key, body).await?;
            match status {
                201 => return Ok(value),
                429 => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
                _ => bail!("POST {path} answered {status}: {value}"),
            }
        }
        bail!("POST {path} answered 429 for two minutes")
    }
}

/// A string field of an API answer.
pub fn field(value: &Value, name: &str) -> anyhow::Result<String> {
    value
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("no `{name}` in {value}"))
}

/// What the load generator sends, and what it does with each success.
pub trait Job: Send + Sync + 'static {
    /// Path and body of request `i`.
    fn request(&self, i: u64) -> (String, Bytes);
    /// Request `i`, whose accepted attempt was sent at `sent`, answered 2xx with `body`.
    fn done(&self, i: u64, sent: Instant, body: &[u8]);
}

/// Which worker sends which request.
#[derive(Debug, Clone, Copy)]
pub enum Order {
    /// Any worker takes the next request.
    Shared,
    /// Request `i` belongs to key `i % keys`, and each key always goes through
    /// the same worker, in order (per-bot order for real-time events).
    ByKey(u64),
}

/// How much to send, how fast, until when.
#[derive(Debug, Clone)]
pub struct Plan {
    pub concurrency: usize,
    pub total: u64,
    /// Requests per second over all workers; `None` is as fast as possible.
    pub rate: Option<f64>,
    /// Nothing is sent after this instant.
    pub deadline: Instant,
    pub order: Order,
    pub auth: Option<HeaderValue>,
    /// Wait after a 503 before sending the same request again.
    pub busy_backoff: Duration,
}

/// What a load run did.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Requests answered 2xx.
    pub ok: u64,
    /// 503 answers (each followed by a retry of the same request).
    pub busy_503: u64,
    /// Requests answered with another status, or that failed on the wire 3 times.
    pub failed: u64,
    /// Connection-level errors (each followed by a reconnect).
    pub conn_errors: u64,
    /// Requests given up because the deadline came while retrying.
    pub abandoned: u64,
    pub first_failure: Option<String>,
    pub started: Instant,
    pub finished: Instant,
    /// How far behind its schedule a paced send went, at most.
    pub max_lag_ms: f64,
}

impl LoadResult {
    pub fn per_s(&self) -> f64 {
        let secs = (self.finished - self.started).as_secs_f64();
        if secs > 0.0 { self.ok as f64 / secs } else { 0.0 }
    }
}

#[derive(Default)]
struct Counters {
    next: AtomicU64,
    ok: AtomicU64,
    busy_503: AtomicU64,
    failed: AtomicU64,
    conn_errors: AtomicU64,
    abandoned: AtomicU64,
    max_lag_us: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Counters {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_failure.lock()
            && first.is_none()
        {
            *first = Some(why);
        }
    }
}

/// Runs `plan` against `addrs`, one keep-alive connection per worker, the
/// workers spread round-robin over the addresses (the nodes of a cluster).
pub async fn run(addrs: &[SocketAddr], plan: Plan, job: Arc<dyn Job>) -> LoadResult {
    let counters = Arc::new(Counters::default());
    let plan = Arc::new(plan);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..plan.concurrency.max(1) {
        let addr = addrs[w % addrs.len()];
        let plan = Arc::clone(&plan);
        let job = Arc::clone(&job);
        let counters = Arc::clone(&counters);
        workers.spawn(async move {
            let mut worker = Worker {
                w,
                conn: Conn::new(addr),
                plan,
                job,
                counters,
                started,
            };
            worker.run().await;
        });
    }
    while workers.join_next().await.is_some() {}
    let finished = Instant::now();
    let first_failure = counters.first_failure.lock().ok().and_then(|f| f.clone());
    LoadResult {
        ok: counters.ok.load(Ordering::Relaxed),
        busy_503: counters.busy_503.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        conn_errors: counters.conn_errors.load(Ordering::Relaxed),
        abandoned: counters.abandoned.load(Ordering::Relaxed),
        first_failure,
        started,
        finished,
        max_lag_ms: counters.max_lag_us.load(Ordering::Relaxed) as f64 / 1000.0,
    }
}

struct Worker {
    w: usize,
    conn: Conn,
    plan: Arc<Plan>,
    job: Arc<dyn Job>,
    counters: Arc<Counters>,
    started: Instant,
}

impl Worker {
    async fn run(&mut self) {
        match self.plan.order {
            Order::Shared => loop {
                let i = self.counters.next.fetch_add(1, Ordering::Relaxed);
                if i >= self.plan.total || !self.send(i).await {
                    return;
                }
            },
            Order::ByKey(keys) => {
                let keys = keys.max(1);
                let workers = self.plan.concurrency.max(1) as u64;
                let mine: Vec<u64> = (0..keys).filter(|k| k % workers == self.w as u64).collect();
                if mine.is_empty() {
                    return;
                }
                let mut round = 0u64;
                while round * keys < self.plan.total {
                    for &k in &mine {
                        let i = round * keys + k;
                        if i >= self.plan.total || !self.send(i).await {
                            return;
                        }
                    }
                    round += 1;
                }
            }
        }
    }

    /// Sends request `i` until it is answered (retrying 503s); false once the
    /// deadline has passed.
    async fn send(&mut self, i: u64) -> bool {
        let plan = Arc::clone(&self.plan);
        if let Some(rate) = plan.rate {
            let at = self.started + Duration::from_secs_f64(i as f64 / rate);
            if at >= plan.deadline {
                return false;
            }
            tokio::time::sleep_until(at.into()).await;
            let lag = Instant::now().saturating_duration_since(at).as_micros() as u64;
            self.counters.max_lag_us.fetch_max(lag, Ordering::Relaxed);
        }
        if Instant::now() >= plan.deadline {
            return false;
        }
        let (path, body) = self.job.request(i);
        let mut wire_errors = 0;
        loop {
            let sent = Instant::now();
            match self
                .conn
                .request(Method::POST, &path, plan.auth.as_ref(), body.clone())
                .await
            {
                Ok((status, answer)) if (200..300).contains(&status) => {
                    self.counters.ok.fetch_add(1, Ordering::Relaxed);
                    self.job.done(i, sent, &answer);
                    return true;
                }
                Ok((503, _)) => {
                    self.counters.busy_503.fetch_add(1, Ordering::Relaxed);
                }
                Ok((status, answer)) => {
                    self.counters.fail(format!(
                        "POST {path} answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    ));
                    return true;
                }
                Err(e) => {
                    self.counters.conn_errors.fetch_add(1, Ordering::Relaxed);
                    wire_errors += 1;
                    if wire_errors >= 3 {
                        self.counters.fail(format!("POST {path}: {e:#}"));
                        return true;
                    }
                }
            }
            if Instant::now() + plan.busy_backoff >= plan.deadline {
                self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            tokio::time::sleep(plan.busy_backoff).await;
        }
    }
}

//! Makes one attempt: signs the stored bytes, checks the target, sends with a
//! timeout, and turns whatever happened into an [`AttemptOutcome`].
//!
//! One pooled keep-alive HTTP/1.1 client (hyper-util's, over rustls with the
//! platform's trust store) serves every endpoint. It is used bare, without
//! reqwest's layers: those parsed every request's URL twice (its redirect
//! policy and its response) and cloned its headers; without them the server
//! spends 20 % less CPU in `herald-bench fanout` (7.5-8.0 s -> 6.2-6.3 s for
//! 200,000 deliveries). It follows no redirects (each hop would be an
//! unchecked URL) and knows no proxies (a proxy would resolve the target
//! itself). When the target rules are on, the client resolves names through
//! [`Resolver`] in its guarded form, which hands it only public addresses, so
//! the address actually connected to is always one that passed the check;
//! hosts written as IP literals never reach a resolver, and the URL rules
//! (`check_url`, run here once per URL before it is sent to) refuse the
//! internal ones.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::HashMap;
use herald_domain::attempt::{AttemptOutcome, CUT_HEADERS_MARK, MAX_RESPONSE_BODY, MAX_RESPONSE_HEADERS};
use herald_domain::signing::{self, Secret, Signer};
use herald_domain::target::{TargetPolicy, is_public_ip};
use herald_store::{ClaimedDelivery, ResponseRecord};
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The Standard Webhooks headers, named once rather than parsed per attempt.
const WEBHOOK_ID: HeaderName = HeaderName::from_static(signing::WEBHOOK_ID);
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static(signing::WEBHOOK_TIMESTAMP);
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static(signing::WEBHOOK_SIGNATURE);

type Client = hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector<Resolver>>, Full<Bytes>>;
type BoxError = Box<dyn StdError + Send + Sync>;

/// The result of one attempt, ready to be recorded.
#[derive(Debug)]
pub struct SentAttempt {
    pub outcome: AttemptOutcome,
    pub started_ms: i64,
    pub duration: Duration,
    pub request_headers: Vec<(String, String)>,
    pub response: Option<ResponseRecord>,
}

pub struct Sender {
    client: Client,
    timeout: Duration,
    policy: TargetPolicy,
    user_agent: HeaderValue,
    /// Target URLs already parsed and checked (see [`Sender::target`]).
    /// Emptied when it grows past [`PARSED_URLS`].
    parsed: Mutex<HashMap<String, Uri>>,
    /// Signers already keyed, by endpoint secret (see [`Sender::signer`]).
    /// Emptied when it grows past [`PARSED_URLS`].
    signers: Mutex<HashMap<String, Signer>>,
    /// TLS failures belong in the attempt log; the server log says at most
    /// once a minute how many there were.
    tls_failures: SparseLog,
}

/// Counts events and lets one log line through per period, carrying the
/// count since the last line: a team whose endpoint fails TLS on every
/// attempt cannot fill the operator's log.
#[derive(Debug)]
pub struct SparseLog {
    period: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl SparseLog {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one event at `now`; returns the count to log, if a line is due.
    pub fn note(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.1 += 1;
        let due = state
            .0
            .is_none_or(|last| now.saturating_duration_since(last) >= self.period);
        if !due {
            return None;
        }
        let count = state.1;
        *state = (Some(now), 0);
        Some(count)
    }
}

/// How long an idle connection to an endpoint is kept for its next
/// attempt: past the 16 s of the last standard retry gap, so a retrying
/// endpoint keeps its connection.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// How many parsed target URLs (and keyed signers) the sender keeps.
const PARSED_URLS: usize = 4096;

/// Why the guard refused an address; found again in the error chain.
#[derive(Debug)]
struct BlockedTarget(String);

impl std::fmt::Display for BlockedTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} resolves only to internal addresses", self.0)
    }
}

impl std::error::Error for BlockedTarget {}

/// The name did not resolve; found again in the error chain, so that the
/// outcome is told from the error's type, not from its text.
#[derive(Debug)]
struct DnsFailure {
    host: String,
    cause: std::io::Error,
}

impl std::fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} does not resolve: {}", self.host, self.cause)
    }
}

impl std::error::Error for DnsFailure {}

/// Resolves names with the system resolver; `guarded`, it keeps only public
/// addresses and refuses a name that has none.
#[derive(Debug, Clone, Copy)]
struct Resolver {
    guarded: bool,
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guarded = self.guarded;
        Box::pin(async move {
            let host = name.as_str();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
                .await
                .map_err(|cause| {
                    Box::new(DnsFailure {
                        host: host.to_owned(),
                        cause,
                    }) as BoxError
                })?
                .collect();
            if !guarded {
                return Ok(found.into_iter());
            }
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public_ip(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(BlockedTarget(host.to_owned())) as BoxError);
            }
            Ok(public.into_iter())
        })
    }
}

impl Sender {
    /// `max_in_flight` is the most attempts the engine runs at once: the pool
    /// keeps that many idle connections per host, since endpoints often share
    /// one (ten webhooks on one receiver each have 32 attempts in flight). A
    /// smaller pool closed the connections past it whenever they fell idle
    /// and opened new ones a moment later: 3,000 connects a second in
    /// `herald-bench fanout`.
    pub fn new(
        timeout: Duration,
        policy: TargetPolicy,
        user_agent: String,
        max_in_flight: usize,
    ) -> Result<Self, rustls::Error> {
        // The user agent is Herald's own name and version: visible ASCII.
        let user_agent = HeaderValue::try_from(user_agent).unwrap_or(HeaderValue::from_static("herald"));
        let guarded = policy == TargetPolicy::PublicHttpsOnly;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new(Arc::clone(&provider))?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(Resolver { guarded });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let https = if guarded {
            https.https_only()
        } else {
            https.https_or_http()
        };
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(max_in_flight)
            .build(https.enable_http1().wrap_connector(http));
        Ok(Self {
            client,
            timeout,
            policy,
            user_agent,
            parsed: Mutex::default(),
            signers: Mutex::default(),
            tls_failures: SparseLog::new(Duration::from_secs(60)),
        })
    }

    /// Makes one attempt of `job`. Never fails: every way it can end is an outcome.
    #[tracing::instrument(level = "debug", skip_all, fields(event_id = %job.event_id, delivery_id = job.id.0, endpoint_id = %job.endpoint_id, attempt = job.attempt))]
    pub async fn attempt(&self, job: &ClaimedDelivery, now_ms: i64) -> SentAttempt {
        let timestamp_s = now_ms / 1000;
        let mut signature = self
            .signer(&job.secret)
            .sign(job.event_id.as_str(), timestamp_s, &job.body);
        // During a rotation's grace, the old secret signs too, after the new
        // one (contract §4.2): receivers that know either verify.
        if let Some(previous) = job.previous_secret.as_ref().filter(|p| p.in_grace(now_ms)) {
            signature.push(' ');
            signature.push_str(
                &self
                    .signer(&previous.secret)
                    .sign(job.event_id.as_str(), timestamp_s, &job.body),
            );
        }
        let headers = self.headers(job.event_id.as_str(), timestamp_s, signature);
        let request_headers = headers.as_ref().map(header_pairs).unwrap_or_default();
        let started = Instant::now();
        let result = match (self.target(&job.url), headers) {
            (Err(outcome), _) | (_, Err(outcome)) => Err(outcome),
            (Ok(target), Ok(headers)) => self.send(target, headers, job.body.clone()).await,
        };
        let duration = started.elapsed();
        let (outcome, response) = match result {
            Ok(response) => {
                let outcome = if (200..300).contains(&response.status) {
                    AttemptOutcome::Success(response.status)
                } else {
                    AttemptOutcome::Status(response.status)
                };
                (outcome, Some(response))
            }
            Err(outcome) => {
                if let AttemptOutcome::Tls(why) = &outcome
                    && let Some(count) = self.tls_failures.note(Instant::now())
                {
                    tracing::warn!(
                        count,
                        last_endpoint = %job.endpoint_id,
                        last_error = %why,
                        "attempts failed their TLS handshake since the last such line (each is in its attempt log)"
                    );
                }
                (outcome, None)
            }
        };
        tracing::debug!(
            status = outcome.status(),
            error = outcome.error_text().as_deref(),
            duration_ms = duration.as_millis() as u64,
            "attempt made"
        );
        SentAttempt {
            outcome,
            started_ms: now_ms,
            duration,
            request_headers,
            response,
        }
    }

    /// The URL to send to, parsed and checked against the target rules once
    /// per endpoint URL: every attempt to an endpoint names the same one, and
    /// parsing it (IDNA and all) was a visible share of an attempt's cost.
    /// Refusals are not kept, so a refused URL is checked each time.
    fn target(&self, url: &str) -> Result<Uri, AttemptOutcome> {
        kept(&self.parsed, url, || self.check_target(url))
    }

    /// The signer keyed with `secret`. Every attempt to an endpoint signs
    /// with the same secret, and decoding it and keying HMAC-SHA256 (two
    /// hash blocks) was a sixth of the cost of signing; a rotated secret is
    /// simply another key here.
    fn signer(&self, secret: &Secret) -> Signer {
        kept(&self.signers, secret.reveal(), || {
            Ok::<_, std::convert::Infallible>(Signer::new(secret))
        })
        .unwrap_or_else(|never| match never {})
    }

    /// The request's headers, which the attempt log also shows. Event ids and
    /// signatures are made of id characters and base64, so a refusal here
    /// means a bad stored id.
    fn headers(&self, event_id: &str, timestamp_s: i64, signature: String) -> Result<HeaderMap, AttemptOutcome> {
        let refused = |what: String| AttemptOutcome::Other(format!("{what} cannot be a header value"));
        let id = HeaderValue::from_str(event_id).map_err(|_| refused(format!("`{event_id}`")))?;
        let signature = HeaderValue::try_from(signature).map_err(|_| refused("the signature".into()))?;
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(signing::CONTENT_TYPE));
        headers.insert(USER_AGENT, self.user_agent.clone());
        headers.insert(WEBHOOK_ID, id);
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp_s));
        headers.insert(WEBHOOK_SIGNATURE, signature);
        Ok(headers)
    }

    /// The URL rules, again at send time: hosts written as IP literals never
    /// reach the guarded resolver, and `check_url` refuses the internal ones.
    /// The scheme and host are the checked URL's (hosts in punycode); the
    /// path and query go byte for byte as the endpoint's URL writes them
    /// (contract §5: no dot-segment removal, no re-encoding).
    fn check_target(&self, url: &str) -> Result<Uri, AttemptOutcome> {
        let parsed = if self.policy == TargetPolicy::AllowInsecure {
            url::Url::parse(url).map_err(|e| AttemptOutcome::Other(format!("invalid URL: {e}")))?
        } else {
            herald_domain::target::check_url(url, self.policy)
                .map_err(|e| AttemptOutcome::RefusedTarget(format!("the URL {e}")))?
        };
        let origin = &parsed[..url::Position::BeforePath];
        let exact = format!("{origin}{}", herald_domain::target::path_and_query(url));
        Uri::try_from(exact).map_err(|e| AttemptOutcome::Other(format!("invalid URL: {e}")))
    }

    async fn send(&self, target: Uri, headers: HeaderMap, body: Bytes) -> Result<ResponseRecord, AttemptOutcome> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = target;
        *request.headers_mut() = headers;
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status().as_u16();
            let headers = kept_headers(response.headers());
            let mut incoming = response.into_body();
            let mut body = Vec::new();
            while body.len() < MAX_RESPONSE_BODY {
                match incoming.frame().await.transpose()? {
                    Some(frame) => {
                        if let Some(chunk) = frame.data_ref() {
                            body.extend_from_slice(chunk);
                        }
                    }
                    None => break,
                }
            }
            body.truncate(MAX_RESPONSE_BODY);
            Ok::<_, BoxError>(ResponseRecord { status, headers, body })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(AttemptOutcome::Timeout),
            Ok(Err(e)) => Err(classify(e.as_ref())),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// The value kept in `map` under `key`, made by `make` the first time (an
/// error is not kept, so it is made again next time). The map is emptied
/// when it grows past [`PARSED_URLS`].
fn kept<V: Clone, E>(map: &Mutex<HashMap<String, V>>, key: &str, make: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = map.get(key) {
        return Ok(known.clone());
    }
    let fresh = make()?;
    if map.len() >= PARSED_URLS {
        map.clear();
    }
    map.insert(key.to_owned(), fresh.clone());
    Ok(fresh)
}

/// Headers as the attempt log keeps them: names and (lossily) text values,
/// in order.
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// A response's headers as the log keeps them: whole headers, in order,
/// while they fit in [`MAX_RESPONSE_HEADERS`] bytes (name and value); past
/// that, one last pair says how many were cut, as a body is cut at
/// `MAX_RESPONSE_BODY`. A receiver could otherwise put 90 headers of 4,000
/// bytes into every row of the log.
fn kept_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut kept = Vec::with_capacity(headers.len().min(64));
    let mut size = 0usize;
    let mut cut = 0usize;
    for (name, value) in headers {
        size += name.as_str().len() + value.len();
        if size > MAX_RESPONSE_HEADERS {
            cut += 1;
            continue;
        }
        kept.push((
            name.as_str().to_owned(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ));
    }
    if cut > 0 {
        kept.push((
            CUT_HEADERS_MARK.to_owned(),
            format!("{cut} more headers not kept (the log keeps {MAX_RESPONSE_HEADERS} bytes of headers)"),
        ));
    }
    kept
}

/// Sorts a client error into the outcome the retry policy and the log use.
/// The log shows the chain of causes, leaving out the client's own outermost
/// wrapper ("client error (Connect)") when it has a cause.
fn classify(error: &(dyn StdError + 'static)) -> AttemptOutcome {
    let mut chain = Vec::new();
    let mut timed_out = false;
    let mut tls = false;
    let mut dns = false;
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(blocked) = e.downcast_ref::<BlockedTarget>() {
            return AttemptOutcome::RefusedTarget(blocked.to_string());
        }
        dns |= e.is::<DnsFailure>();
        // rustls reports through `io::Error`s (nested), whose `source`
        // skips the error they wrap.
        let mut wrapped = Some(e);
        while let Some(io) = wrapped.and_then(|w| w.downcast_ref::<std::io::Error>()) {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
            let inner = io.get_ref().map(|inner| inner as &(dyn StdError + 'static));
            tls |= inner.is_some_and(|inner| inner.is::<rustls::Error>());
            wrapped = inner;
        }
        chain.push(e.to_string());
        source = e.source();
    }
    if chain.len() > 1 && error.is::<hyper_util::client::legacy::Error>() {
        chain.remove(0);
    }
    chain.dedup();
    let text = chain.join(": ");
    if timed_out {
        AttemptOutcome::Timeout
    } else if dns {
        AttemptOutcome::Dns(text)
    } else if tls {
        AttemptOutcome::Tls(text)
    } else {
        AttemptOutcome::Connect(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_domain::event::EventType;
    use herald_domain::ids::{DeliveryId, EndpointId, EndpointKind, EventId, TeamId};
    use std::str::FromStr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tower_service::Service;

    fn sender(policy: TargetPolicy) -> Sender {
        Sender::new(Duration::from_secs(5), policy, "Herald/test".into(), 4).expect("client")
    }

    fn job(url: String, secret: Secret, body: &'static [u8]) -> ClaimedDelivery {
        ClaimedDelivery {
            id: DeliveryId(1),
            team_id: TeamId::generate(0),
            event_id: EventId::generate(0),
            event_type: EventType::MeetingCompleted,
            body: Bytes::from_static(body),
            endpoint_id: EndpointId::generate(EndpointKind::Webhook, 0),
            url,
            secret,
            previous_secret: None,
            attempt: 1,
            due_ms: 0,
            created_ms: 0,
        }
    }

    /// Accepts one connection, reads one request with a `content-length`
    /// body and answers `response`; returns the request's bytes.
    async fn serve_once(listener: TcpListener, response: Vec<u8>) -> Vec<u8> {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "the client closed before a whole request");
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map(|v| v.trim().parse().expect("length"))
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break;
                }
            }
        }
        socket.write_all(&response).await.expect("write");
        request
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_a_dns_outcome_by_its_type() {
        let job = job("http://no-such-host.invalid:9/h".into(), Secret::generate(), b"{}");
        let sent = sender(TargetPolicy::AllowInsecure)
            .attempt(&job, 1_700_000_000_123)
            .await;
        assert!(
            matches!(sent.outcome, AttemptOutcome::Dns(ref why) if why.contains("no-such-host.invalid does not resolve")),
            "{:?}",
            sent.outcome
        );
    }

    #[test]
    fn a_sparse_log_lets_one_line_a_period_through_with_the_count() {
        let log = SparseLog::new(Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(log.note(start), Some(1));
        let through: Vec<u64> = (1..=1_000)
            .filter_map(|i| log.note(start + Duration::from_millis(i * 10)))
            .collect();
        assert!(through.is_empty(), "{through:?}");
        assert_eq!(log.note(start + Duration::from_secs(61)), Some(1_001));
    }

    #[tokio::test]
    async fn response_headers_are_kept_up_to_16_kib_and_marked_as_cut() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut response = String::from("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n");
        for i in 0..90 {
            response.push_str(&format!("x-pad{i:02}: {}\r\n", "v".repeat(4_000)));
        }
        response.push_str("\r\n");
        let server = tokio::spawn(serve_once(listener, response.into_bytes()));
        let job = job(format!("http://127.0.0.1:{port}/h"), Secret::generate(), b"{}");

        let sent = sender(TargetPolicy::AllowInsecure)
            .attempt(&job, 1_700_000_000_123)
            .await;
        server.await.expect("server");

        let headers = sent.response.expect("a response").headers;
        let size: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(size <= MAX_RESPONSE_HEADERS + 200, "{size} bytes kept");
        let (last_name, last_value) = headers.last().expect("headers");
        assert_eq!(last_name, CUT_HEADERS_MARK);
        let cut: usize = last_value
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a count");
        let kept = headers.iter().filter(|(k, _)| k.starts_with("x-pad")).count();
        assert_eq!((kept, cut), (4, 86), "{last_value}");
        assert!(headers.contains(&("content-length".into(), "0".into())));
    }

    #[tokio::test]
    async fn the_url_goes_byte_for_byte() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(serve_once(listener, b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()));
        let job = job(
            format!("http://127.0.0.1:{port}/ok/./a/../b?token=a%7Cb&x=%zz"),
            Secret::generate(),
            b"{}",
        );
        let sent = sender(TargetPolicy::AllowInsecure)
            .attempt(&job, 1_700_000_000_123)
            .await;
        assert_eq!(sent.outcome, AttemptOutcome::Success(204));
        let request = String::from_utf8(server.await.expect("server")).expect("text");
        assert!(
            request.starts_with("POST /ok/./a/../b?token=a%7Cb&x=%zz HTTP/1.1\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn an_attempt_posts_the_signed_body_and_records_the_answer_cut_to_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let long = vec![b'x'; MAX_RESPONSE_BODY + 100];
        let mut response = format!(
            "HTTP/1.1 201 Created\r\nx-reply: yes\r\ncontent-length: {}\r\n\r\n",
            long.len()
        )
        .into_bytes();
        response.extend_from_slice(&long);
        let server = tokio::spawn(serve_once(listener, response));
        let secret = Secret::generate();
        let job = job(
            format!("http://127.0.0.1:{port}/hook?a=1"),
            secret.clone(),
            br#"{"ok":true}"#,
        );

        let sent = sender(TargetPolicy::AllowInsecure)
            .attempt(&job, 1_700_000_000_123)
            .await;

        assert_eq!(sent.outcome, AttemptOutcome::Success(201));
        let response = sent.response.expect("a response");
        assert_eq!(response.body.len(), MAX_RESPONSE_BODY);
        assert!(response.headers.contains(&("x-reply".into(), "yes".into())));
        let request = String::from_utf8(server.await.expect("server")).expect("text");
        assert!(request.starts_with("POST /hook?a=1 HTTP/1.1\r\n"), "{request}");
        let lower = request.to_ascii_lowercase();
        let signature = Signer::new(&secret).sign(job.event_id.as_str(), 1_700_000_000, &job.body);
        for header in [
            format!("host: 127.0.0.1:{port}"),
            "content-type: application/json".into(),
            "user-agent: herald/test".into(),
            format!("webhook-id: {}", job.event_id.as_str()).to_ascii_lowercase(),
            "webhook-timestamp: 1700000000".into(),
            format!("webhook-signature: {signature}").to_ascii_lowercase(),
            "content-length: 11".into(),
        ] {
            assert!(
                lower.contains(&format!("\r\n{header}\r\n")),
                "no `{header}` in {request}"
            );
        }
        assert!(request.ends_with("\r\n\r\n{\"ok\":true}"), "{request}");
        assert_eq!(sent.request_headers.len(), 5, "{:?}", sent.request_headers);
    }

    #[test]
    fn kept_signers_sign_with_their_own_secret_only() {
        let sender = sender(TargetPolicy::AllowInsecure);
        let (a, rotated) = (Secret::generate(), Secret::generate());
        let expected = |secret: &Secret| Signer::new(secret).sign("evt_1", 1_700_000_000, b"{}");
        for _ in 0..2 {
            assert_eq!(sender.signer(&a).sign("evt_1", 1_700_000_000, b"{}"), expected(&a));
            assert_eq!(
                sender.signer(&rotated).sign("evt_1", 1_700_000_000, b"{}"),
                expected(&rotated)
            );
        }
        assert_ne!(expected(&a), expected(&rotated));
    }

    #[tokio::test]
    async fn the_guarded_resolver_refuses_names_with_only_internal_addresses() {
        let refused = Resolver { guarded: true }
            .call(Name::from_str("localhost").expect("name"))
            .await
            .expect_err("localhost is internal");
        assert!(refused.is::<BlockedTarget>(), "{refused}");
        let found: Vec<SocketAddr> = Resolver { guarded: false }
            .call(Name::from_str("localhost").expect("name"))
            .await
            .expect("resolves")
            .collect();
        assert!(found.iter().any(|a| a.ip().is_loopback()), "{found:?}");
    }

    #[tokio::test]
    async fn with_the_target_rules_on_the_client_connects_only_through_the_guard() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let guarded = sender(TargetPolicy::PublicHttpsOnly);
        // An IP literal never reaches a resolver: the URL check refuses it.
        let literal = guarded
            .attempt(&job(format!("https://127.0.0.1:{port}/"), Secret::generate(), b"{}"), 0)
            .await;
        assert!(
            matches!(literal.outcome, AttemptOutcome::RefusedTarget(ref why) if why.contains("internal address (127.0.0.1)")),
            "{:?}",
            literal.outcome
        );
        // A name reaches the client's resolver, past the URL rules (which
        // would refuse `localhost` by name already).
        let target = Uri::try_from(format!("https://localhost:{port}/")).expect("uri");
        let by_name = guarded.send(target, HeaderMap::new(), Bytes::new()).await;
        assert_eq!(
            by_name.expect_err("refused"),
            AttemptOutcome::RefusedTarget("localhost resolves only to internal addresses".into())
        );
        // And plain http is refused before any connection is made.
        let target = Uri::try_from(format!("http://127.0.0.1:{port}/")).expect("uri");
        let plain = guarded.send(target, HeaderMap::new(), Bytes::new()).await;
        assert!(
            matches!(plain, Err(AttemptOutcome::Connect(ref why)) if why.contains("unsupported scheme http")),
            "{plain:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_and_a_tls_failure_are_told_apart() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let open = sender(TargetPolicy::AllowInsecure);
        let refused = open
            .attempt(&job(format!("http://{closed}/"), Secret::generate(), b"{}"), 0)
            .await;
        assert!(
            matches!(refused.outcome, AttemptOutcome::Connect(ref why) if why.starts_with("tcp connect error")),
            "{:?}",
            refused.outcome
        );
        // A server that answers a TLS hello with plain HTTP.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        let tls = open
            .attempt(&job(format!("https://127.0.0.1:{port}/"), Secret::generate(), b"{}"), 0)
            .await;
        assert!(matches!(tls.outcome, AttemptOutcome::Tls(_)), "{:?}", tls.outcome);
    }

    #[test]
    fn fragments_and_unicode_hosts_become_a_sendable_uri() {
        let sender = sender(TargetPolicy::PublicHttpsOnly);
        let uri = sender
            .check_target("https://bücher.example/a b?x=1#frag")
            .expect("sendable");
        assert_eq!(uri.to_string(), "https://xn--bcher-kva.example/a%20b?x=1");
    }
}

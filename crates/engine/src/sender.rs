//! Makes one attempt: signs the stored bytes, checks the target, sends with a
//! timeout, and turns whatever happened into an [`AttemptOutcome`].
//!
//! One pooled keep-alive [`reqwest::Client`] serves every endpoint. It follows
//! no redirects (each hop would be an unchecked URL) and ignores proxy
//! variables (a proxy would resolve the target itself). When the target rules
//! are on, the client resolves names through [`GuardedResolver`], which hands
//! it only public addresses, so the address actually connected to is always
//! one that passed the check; hosts written as IP literals never reach a
//! resolver and are checked here, once per URL, before it is sent to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_domain::attempt::{AttemptOutcome, MAX_RESPONSE_BODY};
use herald_domain::signing::Signer;
use herald_domain::target::{TargetPolicy, is_public_ip, literal_ip};
use herald_store::{ClaimedDelivery, ResponseRecord};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};

/// The Standard Webhooks headers, named once rather than parsed per attempt.
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const JSON: &str = "application/json";

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
    client: reqwest::Client,
    timeout: Duration,
    policy: TargetPolicy,
    user_agent: HeaderValue,
    /// Target URLs already parsed and checked (see [`Sender::target`]).
    /// Emptied when it grows past [`PARSED_URLS`].
    parsed: Mutex<HashMap<String, reqwest::Url>>,
}

/// How many parsed target URLs the sender keeps.
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

/// Resolves with the system resolver and keeps only public addresses.
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public_ip(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(BlockedTarget(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
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
    ) -> Result<Self, reqwest::Error> {
        // The user agent is Herald's own name and version: visible ASCII.
        let user_agent = HeaderValue::try_from(user_agent).unwrap_or(HeaderValue::from_static("herald"));
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(max_in_flight)
            .tcp_nodelay(true)
            .connect_timeout(timeout);
        if policy == TargetPolicy::PublicHttpsOnly {
            builder = builder
                .dns_resolver(std::sync::Arc::new(GuardedResolver))
                .https_only(true);
        }
        Ok(Self {
            client: builder.build()?,
            timeout,
            policy,
            user_agent,
            parsed: Mutex::default(),
        })
    }

    /// Makes one attempt of `job`. Never fails: every way it can end is an outcome.
    #[tracing::instrument(level = "debug", skip_all, fields(event_id = %job.event_id, endpoint_id = %job.endpoint_id, attempt = job.attempt))]
    pub async fn attempt(&self, job: &ClaimedDelivery, now_ms: i64) -> SentAttempt {
        let timestamp_s = now_ms / 1000;
        let signature = Signer::new(&job.secret).sign(job.event_id.as_str(), timestamp_s, &job.body);
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
            Err(outcome) => (outcome, None),
        };
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
    fn target(&self, url: &str) -> Result<reqwest::Url, AttemptOutcome> {
        let mut parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = parsed.get(url) {
            return Ok(known.clone());
        }
        let fresh = self.check_target(url)?;
        if parsed.len() >= PARSED_URLS {
            parsed.clear();
        }
        parsed.insert(url.to_owned(), fresh.clone());
        Ok(fresh)
    }

    /// The request's headers, which the attempt log also shows. Event ids and
    /// signatures are made of id characters and base64, so a refusal here
    /// means a bad stored id.
    fn headers(&self, event_id: &str, timestamp_s: i64, signature: String) -> Result<HeaderMap, AttemptOutcome> {
        let refused = |what: String| AttemptOutcome::Other(format!("{what} cannot be a header value"));
        let id = HeaderValue::from_str(event_id).map_err(|_| refused(format!("`{event_id}`")))?;
        let signature = HeaderValue::try_from(signature).map_err(|_| refused("the signature".into()))?;
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
        headers.insert(USER_AGENT, self.user_agent.clone());
        headers.insert(WEBHOOK_ID, id);
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp_s));
        headers.insert(WEBHOOK_SIGNATURE, signature);
        Ok(headers)
    }

    /// Hosts written as IP literals never reach the guarded resolver, so
    /// they are checked here.
    fn check_target(&self, url: &str) -> Result<reqwest::Url, AttemptOutcome> {
        if self.policy == TargetPolicy::AllowInsecure {
            return reqwest::Url::parse(url).map_err(|e| AttemptOutcome::Other(format!("invalid URL: {e}")));
        }
        let parsed = herald_domain::target::check_url(url, self.policy)
            .map_err(|e| AttemptOutcome::RefusedTarget(format!("the URL {e}")))?;
        match literal_ip(&parsed).filter(|ip| !is_public_ip(*ip)) {
            Some(ip) => Err(AttemptOutcome::RefusedTarget(format!("{ip} is an internal address"))),
            None => Ok(parsed),
        }
    }

    async fn send(
        &self,
        target: reqwest::Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<ResponseRecord, AttemptOutcome> {
        let request = self.client.post(target).headers(headers).body(body);
        let exchange = async {
            let mut response = request.send().await?;
            let status = response.status().as_u16();
            let headers = header_pairs(response.headers());
            let mut body = Vec::new();
            while body.len() < MAX_RESPONSE_BODY {
                match response.chunk().await? {
                    Some(chunk) => body.extend_from_slice(&chunk),
                    None => break,
                }
            }
            body.truncate(MAX_RESPONSE_BODY);
            Ok::<_, reqwest::Error>(ResponseRecord { status, headers, body })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(AttemptOutcome::Timeout),
            Ok(Err(e)) => Err(classify(&e)),
            Ok(Ok(response)) => Ok(response),
        }
    }
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

/// Sorts a client error into the outcome the retry policy and the log use.
fn classify(error: &reqwest::Error) -> AttemptOutcome {
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(blocked) = e.downcast_ref::<BlockedTarget>() {
            return AttemptOutcome::RefusedTarget(blocked.to_string());
        }
        chain.push(e.to_string());
        source = e.source();
    }
    chain.dedup();
    let text = chain.join(": ");
    let lower = text.to_ascii_lowercase();
    if error.is_timeout() {
        AttemptOutcome::Timeout
    } else if lower.contains("dns error")
        || lower.contains("failed to lookup address")
        || lower.contains("name or service not known")
    {
        AttemptOutcome::Dns(text)
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        AttemptOutcome::Tls(text)
    } else if error.is_connect() || error.is_request() || error.is_body() {
        AttemptOutcome::Connect(text)
    } else {
        AttemptOutcome::Other(text)
    }
}

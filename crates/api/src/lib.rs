//! The REST API of the contract: one axum router, one module per resource.
//!
//! A handler extracts its input (the key through [`auth`], the body through
//! [`extract::JsonBody`]), validates it into domain types, calls one store
//! function, signals the engine when there is new work, and maps the result to
//! a response. [`error::ApiError`] is the only place that produces the error
//! JSON and its status code. Nothing here sends a delivery: the API commits,
//! then hands the leased deliveries to the engine.

pub mod accounts;
pub mod attempts;
pub mod auth;
pub mod bots;
pub mod dashboard_links;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod rate;
pub mod stats;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use herald_domain::keys::KeyHash;
use herald_domain::limits::Limits;
use herald_domain::target::TargetPolicy;
use herald_engine::Engine;
use herald_store::Store;

pub use error::ApiError;

/// What every handler can reach. Every request's extractors clone it, so it
/// is one `Arc`: one reference count to touch, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The parts of [`AppState`].
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub engine: Engine,
    pub auth: auth::Keys,
    pub rate: rate::RateLimiter,
    pub settings: ApiSettings,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub target_policy: TargetPolicy,
    /// Request bodies above this answer 413.
    pub max_body_bytes: usize,
    /// Where people reach this server (no trailing slash): dashboard links
    /// are built under it.
    pub public_url: String,
    /// How long a dashboard sign-in link works.
    pub dashboard_link_ttl: Duration,
    /// What one team or bot may hold.
    pub limits: Limits,
    /// The wall clock dashboard links expire by.
    pub clock: herald_engine::Clock,
    /// Requests a second one team key may make (bursts of twice that).
    pub team_rate_limit: u32,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, engine: Engine, admin_key: KeyHash, settings: ApiSettings) -> Self {
        Self(Arc::new(Shared {
            store,
            engine,
            auth: auth::Keys::new(admin_key),
            rate: rate::RateLimiter::new(settings.team_rate_limit),
            settings,
        }))
    }
}

/// The whole HTTP surface of Herald's API.
pub fn router(state: AppState) -> Router {
    let max_body = state.settings.max_body_bytes;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/accounts", post(accounts::create_account))
        .route("/api/v1/accounts/{account_id}/teams", post(accounts::create_team))
        .route(
            "/api/v1/teams/{team_id}/keys",
            post(accounts::create_team_key).get(accounts::list_team_keys),
        )
        .route(
            "/api/v1/teams/{team_id}/keys/{key_id}",
            axum::routing::delete(accounts::delete_team_key),
        )
        .route("/api/v1/teams/{team_id}/dashboard-links", post(dashboard_links::create))
        .route("/api/v1/events", post(events::publish))
        .route("/api/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/api/v1/webhooks/{webhook_id}",
            get(webhooks::get_one).patch(webhooks::update).delete(webhooks::delete),
        )
        .route(
            "/api/v1/webhooks/{webhook_id}/attempts",
            get(attempts::list_for_webhook),
        )
        .route(
            "/api/v1/webhooks/{webhook_id}/events/{event_id}/resend",
            post(webhooks::resend),
        )
        .route(
            "/api/v1/webhooks/{webhook_id}/secret/rotate",
            post(webhooks::rotate_secret),
        )
        .route("/api/v1/webhooks/{webhook_id}/stats", get(stats::for_webhook))
        .route("/api/v1/webhooks/{webhook_id}/recover", post(webhooks::recover))
        .route("/api/v1/attempts/{attempt_id}", get(attempts::get_one))
        .route("/api/v1/bot", post(bots::create).get(bots::list))
        .route("/api/v1/bot/", post(bots::create).get(bots::list))
        .route("/api/v1/bot/{bot_id}", get(bots::get_one))
        .route("/api/v1/bot/{bot_id}/", get(bots::get_one))
        .route("/api/v1/bot/{bot_id}/events", post(bots::publish))
        .route("/api/v1/bot/{bot_id}/events/", post(bots::publish))
        .route(
            "/api/v1/bot/{bot_id}/realtime_endpoints/{endpoint_id}/attempts",
            get(bots::list_attempts),
        )
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let path = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                tracing::debug_span!("request", method = %req.method(), path)
            })
            // A 503 is load shedding the client is told to retry (or a store
            // outage, logged where it is found), not a server fault: a retry
            // storm would otherwise write one error line per refused publish.
            .on_failure(
                |class: tower_http::classify::ServerErrorsFailureClass, latency: std::time::Duration, _: &tracing::Span| {
                    if !matches!(class, tower_http::classify::ServerErrorsFailureClass::StatusCode(code) if code == axum::http::StatusCode::SERVICE_UNAVAILABLE) {
                        tracing::error!(classification = %class, latency_ms = latency.as_millis() as u64, "response failed");
                    }
                },
            ),
        )
        .with_state(state)
}

//! The team dashboard: server-rendered HTML pages served by `herald serve`
//! under `/`, for the people of a team.
//!
//! A person arrives with a one-time sign-in link (minted by the operator
//! through the API or `herald dashboard-link`), which opens a session for one
//! team; every page reads through the [`Store`] with that team's id, so
//! another team's ids answer 404 exactly like missing ones. Pages are built
//! with `maud`, which escapes everything it interpolates; the small script in
//! `assets/dashboard.js` only ever writes data with `textContent`. Every
//! state-changing request goes through [`session::Protected`], which checks
//! the request's origin and the session's CSRF token before anything else.
//!
//! What it leaves out on purpose: SQL (all of it lives in `herald-store`),
//! sending deliveries (new ones are handed to the engine with
//! [`Engine::enqueue`], edits are signalled with [`Engine::endpoint_changed`],
//! exactly as the API does), and editing real-time endpoints, which belong to
//! the Create Bot request.

mod assets;
mod bots;
mod error;
mod extract;
mod format;
mod health;
mod log;
mod lookup;
mod recover;
mod session;
mod views;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use herald_domain::target::TargetPolicy;
use herald_engine::Engine;
use herald_store::Store;

pub use error::DashboardError;
pub use format::{PRETTY_MAX_BYTES, iso_time, pretty_body};

/// What every dashboard handler can reach.
#[derive(Clone)]
pub struct DashboardState {
    pub store: Arc<dyn Store>,
    pub engine: Engine,
    pub settings: Arc<DashboardSettings>,
}

#[derive(Debug, Clone)]
pub struct DashboardSettings {
    /// Where people reach this server, without a trailing slash. Its origin is
    /// the one state-changing requests must come from, and an `https` URL
    /// makes the session cookie `Secure`.
    pub public_url: String,
    /// The rules a new webhook's URL must follow, as in the API.
    pub target_policy: TargetPolicy,
    /// How long a session lasts after sign-in.
    pub session_ttl: Duration,
    /// What one team may hold, as in the API.
    pub limits: herald_domain::limits::Limits,
    /// The wall clock sign-in links and sessions expire by.
    pub clock: herald_engine::Clock,
}

impl DashboardState {
    pub fn new(store: Arc<dyn Store>, engine: Engine, settings: DashboardSettings) -> Self {
        Self {
            store,
            engine,
            settings: Arc::new(settings),
        }
    }
}

/// The dashboard's routes. It has no fallback of its own, so that it can be
/// merged with the API's router, whose fallback answers unknown paths.
pub fn router(state: DashboardState) -> Router {
    Router::new()
        .route("/", get(session::home))
        .route("/sign-in", get(session::sign_in))
        .route("/sign-out", post(session::sign_out))
        .route("/signed-out", get(session::signed_out))
        .route("/assets/dashboard.css", get(assets::css))
        .route("/assets/dashboard.js", get(assets::js))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/webhooks/new", get(webhooks::new_form))
        .route("/webhooks/{webhook_id}", get(webhooks::detail))
        .route("/webhooks/{webhook_id}/status", post(webhooks::set_status))
        .route("/webhooks/{webhook_id}/secret", post(webhooks::reveal_secret))
        .route("/webhooks/{webhook_id}/secret/rotate", post(webhooks::rotate_secret))
        .route(
            "/webhooks/{webhook_id}/recover",
            get(recover::preview).post(recover::start),
        )
        .route("/webhooks/{webhook_id}/test-event", post(webhooks::send_test_event))
        .route("/webhooks/{webhook_id}/resend", post(webhooks::resend))
        .route("/webhooks/{webhook_id}/attempts.json", get(webhooks::attempts_json))
        .route("/webhooks/{webhook_id}/attempts/{attempt_id}", get(webhooks::inspect))
        .route("/bots", get(bots::list))
        .route("/bots/{bot_id}/endpoints/{endpoint_id}", get(bots::endpoint))
        .route(
            "/bots/{bot_id}/endpoints/{endpoint_id}/attempts.json",
            get(bots::attempts_json),
        )
        .route(
            "/bots/{bot_id}/endpoints/{endpoint_id}/attempts/{attempt_id}",
            get(bots::inspect),
        )
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Headers every dashboard response carries. The content security policy
/// allows only this server's own script and style files, so even markup that
/// slipped past escaping could not run a script; pages are never cached, as
/// they show a team's data.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

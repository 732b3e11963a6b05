//! A webhook receiver built on `herald-receiver`: it verifies every delivery,
//! answers a repeat of an event it already handled with 204 without handling
//! it again, and prints one line per event.
//!
//! ```sh
//! HERALD_WEBHOOK_SECRET=whsec_… \
//!   cargo run -p herald-receiver --features axum --example receiver -- 127.0.0.1:3000
//! ```
//!
//! The address is the first argument, else `HERALD_RECEIVER_LISTEN`, else
//! `127.0.0.1:3000`. `HERALD_WEBHOOK_SECRET` may hold several secrets
//! separated by spaces, to accept both while a rotation rolls out.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::post;
use herald_receiver::{Deduplicator, Event, VerifiedWebhook, Verifier};

#[derive(Clone)]
struct AppState {
    verifier: Verifier,
    seen: Arc<Deduplicator>,
}

/// How `VerifiedWebhook` finds the verifier.
impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secrets = std::env::var("HERALD_WEBHOOK_SECRET")
        .map_err(|_| "set HERALD_WEBHOOK_SECRET to the webhook's secret (whsec_…)")?;
    let verifier =
        Verifier::with_secrets(secrets.split_whitespace()).map_err(|e| format!("HERALD_WEBHOOK_SECRET: {e}"))?;
    let listen = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("HERALD_RECEIVER_LISTEN").ok())
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());

    let state = AppState {
        verifier,
        seen: Arc::new(Deduplicator::default()),
    };
    let app = Router::new().route("/", post(receive)).with_state(state);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    println!("listening on http://{}/", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// Runs only for verified deliveries: the extractor has already answered
/// 401 or 400 to anything else.
async fn receive(State(state): State<AppState>, webhook: VerifiedWebhook<Event>) -> StatusCode {
    if !state.seen.insert(&webhook.id) {
        println!("{} repeat, already handled", webhook.id);
        return StatusCode::NO_CONTENT;
    }
    match &webhook.payload {
        Event::MeetingCompleted(event) => println!(
            "{} meeting.completed meeting={} team={}",
            webhook.id, event.data.meeting.id, event.data.organization.team_id
        ),
        Event::Realtime(event) => println!("{} {} bot={}", webhook.id, event.event, event.data.bot.id),
        other => println!("{} {}", webhook.id, other.event_type()),
    }
    StatusCode::NO_CONTENT
}

//! Publishing team events (`POST /api/v1/events`, admin key).
//!
//! The event and its deliveries are committed (in a group commit shared with
//! other publishes) before the 202; only then are the leased deliveries handed
//! to the engine. A publisher-given id is an idempotency key.

use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use herald_domain::event::{EventType, check_meeting_completed, team_event_body};
use herald_domain::ids::EventId;
use herald_store::{NewEvent, PublishOutcome, StoredEvent};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::auth::Admin;
use crate::extract::JsonBody;
use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishBody {
    #[serde(default)]
    id: Option<String>,
    event_type: String,
    data: Box<RawValue>,
}

#[tracing::instrument(level = "debug", skip_all, fields(event_id))]
pub async fn publish(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let event = new_event(body, herald_engine::now_ms())?;
    tracing::Span::current().record("event_id", event.id.as_str());
    if !state.engine.has_room() || !state.engine.retries_admit_publish() {
        state.engine.metrics().publishes_shed.fetch_add(1, Relaxed);
        return Err(ApiError::Overloaded { retry_after_s: 1 });
    }
    match state.store.publish(event, &state.engine.new_lease()).await? {
        PublishOutcome::Created { event, deliveries } => {
            let metrics = state.engine.metrics();
            metrics.events_published.fetch_add(1, Relaxed);
            metrics.deliveries_created.fetch_add(deliveries.len() as u64, Relaxed);
            state.engine.enqueue(deliveries).await;
            Ok((StatusCode::ACCEPTED, Json(event_json(&event))))
        }
        PublishOutcome::Existing(event) => Ok((StatusCode::OK, Json(event_json(&event)))),
        PublishOutcome::Conflict => Err(ApiError::Conflict(
            "an event with this id was already published with a different body".into(),
        )),
        PublishOutcome::UnknownTeam => Err(ApiError::Unprocessable {
            code: "unknown_team",
            message: "data.organization.teamId: no such team".into(),
        }),
        PublishOutcome::AccountMismatch => Err(ApiError::Unprocessable {
            code: "account_mismatch",
            message: "data.organization.accountId: the team belongs to another account".into(),
        }),
    }
}

/// A publish body as bytes, parsed and checked into the event to store: what
/// `POST /api/v1/events` does before it touches the store (and what the
/// fuzz target `publish_body` drives).
pub fn parse_publish(bytes: &[u8], now: i64) -> Result<NewEvent, ApiError> {
    crate::extract::parse(bytes).and_then(|body| new_event(body, now))
}

/// The event a publish body makes at `now`, or the error that answers it.
fn new_event(body: PublishBody, now: i64) -> Result<NewEvent, ApiError> {
    let event_type = EventType::parse(&body.event_type).ok_or_else(|| ApiError::BadRequest {
        code: "unknown_event_type",
        message: format!("eventType: unknown event type `{}`", body.event_type),
    })?;
    if !event_type.is_team_webhook_type() {
        return Err(ApiError::BadRequest {
            code: "unknown_event_type",
            message: format!(
                "eventType: `{}` is a real-time bot event; publish it to /api/v1/bot/{{botId}}/events",
                body.event_type
            ),
        });
    }
    let routing = check_meeting_completed(&body.data)?;
    let (id, id_given) = match &body.id {
        Some(raw) => (
            EventId::parse(raw).map_err(|why| ApiError::BadRequest {
                code: "invalid_field",
                message: format!("id: {why}"),
            })?,
            true,
        ),
        None => (EventId::generate(now), false),
    };
    Ok(NewEvent {
        body: Bytes::from(team_event_body(id.as_str(), event_type, now, &body.data)),
        id,
        id_given,
        team_id: routing.team_id,
        account_id: routing.account_id,
        event_type,
        created_at: now,
        data: body.data.get().to_owned(),
    })
}

fn event_json(event: &StoredEvent) -> Value {
    json!({ "id": event.id, "eventType": event.event_type.as_str(), "createdAt": event.created_at })
}

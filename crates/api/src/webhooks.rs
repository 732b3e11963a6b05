//! Team webhooks: create, list, read, update, delete (team key), and resend
//! one of the team's events to a webhook.
//!
//! Any change to a webhook is signalled to the engine, which drops what it had
//! queued for it; deactivation therefore stops delivery at once, pending
//! retries included, and reactivation lets the scheduler pick them up again.
//! A resend is a new delivery of the stored event (same id, same bytes) with
//! its own series of attempts, marked `manual` in the log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use herald_domain::ValidationError;
use herald_domain::ids::{EndpointId, EndpointKind, EventId};
use herald_domain::signing::{DEFAULT_ROTATION_GRACE_S, MAX_ROTATION_GRACE_S, Secret, may_rotate};
use herald_domain::target::TargetError;
use herald_domain::webhook::{
    EndpointStatus, UrlRefused, check_event_types, check_name, check_status, check_webhook_url,
};
use herald_store::{Endpoint, ManualOutcome, RecoverOutcome, RecoverWindow, WebhookPatch};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::TeamCaller;
use crate::extract::{JsonBody, OptionalJsonBody, Path};
use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    name: String,
    url: String,
    event_types: Vec<String>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    status: Option<String>,
}

#[tracing::instrument(skip_all, fields(team_id = %team))]
pub async fn create(
    State(state): State<AppState>,
    TeamCaller(team): TeamCaller,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = check_name(&body.name)?;
    let url = check_webhook_url(&body.url, state.settings.target_policy).map_err(url_error)?;
    let event_types = check_event_types(&body.event_types)?;
    let status = body
        .status
        .as_deref()
        .map(check_status)
        .transpose()?
        .unwrap_or(EndpointStatus::Active);
    let now = herald_engine::now_ms();
    let webhook = Endpoint {
        id: EndpointId::generate(EndpointKind::Webhook, now),
        team_id: team,
        bot_id: None,
        metadata: "{}".into(),
        name,
        url,
        event_types,
        status,
        secret: Secret::generate(),
        previous_secret: None,
        deactivated_reason: None,
        failing_since: None,
        created_at: now,
    };
    let limit = state.settings.limits.webhooks_per_team;
    if !state.store.create_endpoint(&webhook, limit).await? {
        return Err(ApiError::limit_exceeded(
            "a team's number of webhooks",
            limit,
            "HERALD_MAX_WEBHOOKS_PER_TEAM",
        ));
    }
    Ok((StatusCode::CREATED, Json(webhook_json(&webhook))))
}

pub async fn list(State(state): State<AppState>, TeamCaller(team): TeamCaller) -> Result<Json<Value>, ApiError> {
    let webhooks = state.store.list_webhooks(&team).await?;
    Ok(Json(
        json!({ "data": webhooks.iter().map(webhook_json).collect::<Vec<_>>() }),
    ))
}

pub async fn get_one(
    State(state): State<AppState>,
    TeamCaller(team): TeamCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let webhook = state.store.get_endpoint(&team, &id).await.map_err(not_found)?;
    Ok(Json(webhook_json(&webhook)))
}

#[tracing::instrument(skip_all, fields(team_id = %team, endpoint_id = %id))]
pub async fn update(
    State(state): State<AppState>,
    TeamCaller(team): TeamCaller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PatchBody>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let patch = WebhookPatch {
        name: body.name.as_deref().map(check_name).transpose()?,
        url: body
            .url
            .as_deref()
            .map(|u| check_webhook_url(u, state.settings.target_policy))
            .transpose()
            .map_err(url_error)?,
        event_types: body.event_types.as_deref().map(check_event_types).transpose()?,
        status: body.status.as_deref().map(check_status).transpose()?,
    };
    let webhook = state
        .store
        .update_webhook(&team, &id, &patch)
        .await
        .map_err(not_found)?;
    state.engine.endpoint_changed(&id).await;
    Ok(Json(webhook_json(&webhook)))
}

#[tracing::instrument(skip_all, fields(team_id = %team, endpoint_id = %id))]
pub async fn delete(
    State(state): State<AppState>,
    TeamCaller(team): TeamCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    state.store.delete_endpoint(&team, &id).await.map_err(not_found)?;
    state.engine.endpoint_changed(&id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[tracing::instrument(skip_all, fields(team_id = %team, endpoint_id = %webhook_id, event_id = %event_id))]
pub async fn resend(
    State(state): State<AppState>,
    TeamCaller(team): TeamCaller,
    Path((webhook_id, event_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let webhook = parse_id(&webhook_id)?;
    let event = EventId::parse(&event_id).map_err(|_| ApiError::NotFound("event"))?;
    if !state.engine.has_room() {
        return Err(ApiError::Overloaded { retry_after_s: 1 });
    }
    let outcome = state
        .store
        .resend(
            &team,
            &webhook,
            &event,
            &state.engine.new_lease(),
            herald_engine::now_ms(),
        )
        .await?;
    let delivery = manual_delivery(outcome)?;
    state.engine.enqueue(vec![delivery]).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "webhookId": webhook, "eventId": event, "manual": true })),
    ))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateBody {
    #[serde(default)]
    grace_seconds: Option<i64>,
}

/// `POST /api/v1/webhooks/{id}/secret/rotate` (contract §4.2): a new
/// secret; the old one keeps signing, after the new, for the grace period.
#[tracing::instrument(skip_all, fields(team_id = %team, endpoint_id = %id))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    TeamCaller(team): TeamCaller,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<RotateBody>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let grace = body.grace_seconds.unwrap_or(DEFAULT_ROTATION_GRACE_S);
    if !(0..=MAX_ROTATION_GRACE_S).contains(&grace) {
        return Err(ApiError::invalid(ValidationError::new(
            "graceSeconds",
            format!("must be from 0 to {MAX_ROTATION_GRACE_S} (7 days)"),
        )));
    }
    let now = herald_engine::now_ms();
    let current = state.store.get_endpoint(&team, &id).await.map_err(not_found)?;
    if let Err(until) = may_rotate(current.previous_secret.as_ref(), grace, now) {
        return Err(ApiError::Conflict(format!(
            "the previous secret still signs until {until}; rotate again after that, or with graceSeconds 0 to drop every old secret now"
        )));
    }
    let expires_at = now + grace * 1000;
    let webhook = state
        .store
        .rotate_secret(&team, &id, &Secret::generate(), expires_at)
        .await
        .map_err(not_found)?;
    // Every node drops what it queued with the old secret and claims it
    // again with both.
    state.engine.endpoint_changed(&id).await;
    Ok(Json(json!({
        "secret": webhook.secret.reveal(),
        "previousSecretExpiresAt": expires_at,
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecoverBody {
    since: i64,
    #[serde(default)]
    until: Option<i64>,
}

/// `POST /api/v1/webhooks/{id}/recover` (contract §4.1): every event whose
/// latest delivery to this webhook failed, created in `[since, until)`, is
/// delivered again. The work is stored and answered at once with its count;
/// the engine makes the deliveries at the webhook's pace.
#[tracing::instrument(skip_all, fields(team_id = %team, endpoint_id = %id))]
pub async fn recover(
    State(state): State<AppState>,
    TeamCaller(team): TeamCaller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RecoverBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let now = herald_engine::now_ms();
    let window = RecoverWindow::new(body.since, body.until.unwrap_or(now))
        .map_err(|(field, why)| ApiError::invalid(ValidationError::new(field, why)))?;
    match state.store.recover(&team, &id, window, now).await? {
        RecoverOutcome::Created(recovery) => {
            state.engine.recover_requested();
            Ok((StatusCode::ACCEPTED, Json(json!({ "count": recovery.total }))))
        }
        RecoverOutcome::UnknownWebhook => Err(ApiError::NotFound("webhook")),
        RecoverOutcome::Deactivated => Err(ApiError::Conflict(
            "the webhook is deactivated; activate it before recovering".into(),
        )),
        RecoverOutcome::Running => Err(ApiError::Conflict(
            "a recover of this webhook is still running; wait for it to finish".into(),
        )),
    }
}

/// The delivery of a manual outcome, or the error that answers it.
pub(crate) fn manual_delivery(outcome: ManualOutcome) -> Result<herald_store::ClaimedDelivery, ApiError> {
    match outcome {
        ManualOutcome::Created(delivery) => Ok(delivery),
        ManualOutcome::UnknownWebhook => Err(ApiError::NotFound("webhook")),
        ManualOutcome::UnknownEvent => Err(ApiError::NotFound("event")),
        ManualOutcome::NotAWebhookEvent => Err(ApiError::Unprocessable {
            code: "not_a_webhook_event",
            message: "eventId: this is a real-time bot event; webhooks only take meeting.completed".into(),
        }),
        ManualOutcome::Deactivated => Err(ApiError::Conflict(
            "the webhook is deactivated; activate it before resending".into(),
        )),
    }
}

/// An id that cannot be a webhook's names no webhook: 404, as for a missing one.
pub(crate) fn parse_id(raw: &str) -> Result<EndpointId, ApiError> {
    EndpointId::parse(EndpointKind::Webhook, raw).ok_or(ApiError::NotFound("webhook"))
}

fn not_found(e: herald_store::StoreError) -> ApiError {
    crate::accounts::not_found_as(e, "webhook")
}

/// A URL that does not parse is a bad field (400); one that parses but may not
/// be a target is refused with 422 and the reason.
pub(crate) fn url_error(e: UrlRefused) -> ApiError {
    match e.reason {
        TargetError::Invalid | TargetError::TooLong => {
            ApiError::invalid(ValidationError::new(e.field, e.reason.to_string()))
        }
        _ => ApiError::Unprocessable {
            code: "target_not_allowed",
            message: e.to_string(),
        },
    }
}

pub(crate) fn webhook_json(w: &Endpoint) -> Value {
    json!({
        "id": w.id,
        "name": w.name,
        "url": w.url,
        "eventTypes": w.event_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        "status": w.status.as_str(),
        "createdAt": w.created_at,
        "secret": w.secret.reveal(),
        "deactivatedReason": w.deactivated_reason,
    })
}

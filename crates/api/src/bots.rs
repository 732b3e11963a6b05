//! Bots and their real-time endpoints (the real-time seed).
//!
//! A team creates a bot with its real-time endpoints (`POST /api/v1/bot/`);
//! the platform's bot fleet publishes the bot's participant and transcript
//! events (`POST /api/v1/bot/{id}/events`, admin key), one or a batch in
//! production order. Each endpoint gets its own envelope, in order. Real-time
//! endpoints are not edited through the API: the engine alone changes their
//! status, to `failed`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use herald_domain::ValidationError;
use herald_domain::bot::{check_meeting_url, check_realtime_events, check_realtime_url};
use herald_domain::event::EventType;
use herald_domain::ids::{BotId, EndpointId, EndpointKind, EventId, ParticipantEventsId, RecordingId, TranscriptId};
use herald_domain::signing::Secret;
use herald_domain::webhook::EndpointStatus;
use herald_store::{Bot, BotPublishOutcome, Endpoint, NewBotEvent};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::attempts::ListQuery;
use crate::auth::{Admin, TeamCaller};
use crate::extract::{JsonBody, Path, Query};
use crate::{ApiError, AppState};

/// The most events one batch may carry.
const MAX_BATCH: usize = 1000;

#[derive(Deserialize)]
pub struct CreateBotBody {
    meeting_url: String,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    recording_config: Option<RecordingConfig>,
}

#[derive(Deserialize)]
pub struct RecordingConfig {
    #[serde(default, alias = "real_time_endpoints")]
    realtime_endpoints: Vec<EndpointBody>,
}

#[derive(Deserialize)]
pub struct EndpointBody {
    #[serde(rename = "type")]
    kind: String,
    url: String,
    events: Vec<String>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
pub struct BotEventsBody {
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    events: Option<Vec<OneEvent>>,
}

#[derive(Deserialize)]
pub struct OneEvent {
    event: String,
    data: Box<RawValue>,
}

#[tracing::instrument(skip_all, fields(team_id = %team))]
pub async fn create(
    State(state): State<AppState>,
    TeamCaller(team): TeamCaller,
    JsonBody(body): JsonBody<CreateBotBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let meeting_url = check_meeting_url(&body.meeting_url)?;
    let now = herald_engine::now_ms();
    let id = BotId::generate(now);
    let specs = body.recording_config.map(|c| c.realtime_endpoints).unwrap_or_default();
    let limit = state.settings.limits.realtime_endpoints_per_bot;
    if specs.len() > limit {
        return Err(ApiError::limit_exceeded(
            "recording_config.realtime_endpoints: a bot's number of real-time endpoints",
            limit,
            "HERALD_MAX_REALTIME_ENDPOINTS_PER_BOT",
        ));
    }
    let mut endpoints = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let at = format!("recording_config.realtime_endpoints[{i}]");
        if spec.kind != "webhook" {
            return Err(ValidationError::new(format!("{at}.type"), "must be `webhook`").into());
        }
        let url = check_realtime_url(&spec.url, &format!("{at}.url"), state.settings.target_policy)
            .map_err(crate::webhooks::url_error)?;
        let event_types = check_realtime_events(&spec.events, &format!("{at}.events"))?;
        endpoints.push(Endpoint {
            id: EndpointId::generate(EndpointKind::Realtime, now),
            team_id: team.clone(),
            bot_id: Some(id.clone()),
            name: String::new(),
            url,
            event_types,
            status: EndpointStatus::Active,
            secret: Secret::generate(),
            previous_secret: None,
            deactivated_reason: None,
            failing_since: None,
            metadata: Value::Object(spec.metadata.clone().unwrap_or_default()).to_string(),
            created_at: now,
        });
    }
    let bot = Bot {
        id,
        team_id: team,
        meeting_url,
        metadata: Value::Object(body.metadata.unwrap_or_default()).to_string(),
        recording_id: RecordingId::generate(now).to_string(),
        participant_events_id: ParticipantEventsId::generate(now).to_string(),
        transcript_id: TranscriptId::generate(now).to_string(),
        created_at: now,
        endpoints,
    };
    state.store.create_bot(&bot).await?;
    Ok((StatusCode::CREATED, Json(bot_json(&bot))))
}

pub async fn list(State(state): State<AppState>, TeamCaller(team): TeamCaller) -> Result<Json<Value>, ApiError> {
    let bots = state.store.list_bots(&team).await?;
    Ok(Json(json!({ "data": bots.iter().map(bot_json).collect::<Vec<_>>() })))
}

pub async fn get_one(
    State(state): State<AppState>,
    TeamCaller(team): TeamCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let bot = load_bot(&state, &team, &id).await?;
    Ok(Json(bot_json(&bot)))
}

#[tracing::instrument(level = "debug", skip_all, fields(bot_id = %id))]
pub async fn publish(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<BotEventsBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let bot = BotId::parse(&id).ok_or(ApiError::NotFound("bot"))?;
    let events = bot_events(body, herald_engine::now_ms())?;
    if !state.engine.has_room() {
        state
            .engine
            .metrics()
            .publishes_shed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::Overloaded { retry_after_s: 1 });
    }
    match state
        .store
        .publish_bot_events(&bot, events, state.engine.ordered_publish_lease().as_ref())
        .await?
    {
        BotPublishOutcome::UnknownBot => Err(ApiError::NotFound("bot")),
        BotPublishOutcome::Created { events, deliveries } => {
            let metrics = state.engine.metrics();
            metrics
                .events_published
                .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
            metrics
                .deliveries_created
                .fetch_add(deliveries.len() as u64, std::sync::atomic::Ordering::Relaxed);
            state.engine.enqueue(deliveries).await;
            let data: Vec<Value> = events
                .iter()
                .map(|e| json!({ "id": e.id, "event": e.event_type.as_str(), "createdAt": e.created_at }))
                .collect();
            Ok((StatusCode::ACCEPTED, Json(json!({ "data": data }))))
        }
    }
}

/// A bot-events body as bytes, parsed and checked into the events to store:
/// what `POST /api/v1/bot/{botId}/events` does before it touches the store
/// (and what the fuzz target `bot_events` drives).
pub fn parse_bot_events(bytes: &[u8], now: i64) -> Result<Vec<NewBotEvent>, ApiError> {
    crate::extract::parse(bytes).and_then(|body| bot_events(body, now))
}

/// The events a bot-events body makes at `now` (one, or a batch in
/// production order), or the error that answers it.
fn bot_events(body: BotEventsBody, now: i64) -> Result<Vec<NewBotEvent>, ApiError> {
    let batch: Vec<(String, Box<RawValue>, String)> = match (body.events, body.event, body.data) {
        (Some(events), None, None) => {
            if events.is_empty() || events.len() > MAX_BATCH {
                return Err(ValidationError::new("events", format!("must hold 1 to {MAX_BATCH} events")).into());
            }
            events
                .into_iter()
                .enumerate()
                .map(|(i, e)| (e.event, e.data, format!("events[{i}]")))
                .collect()
        }
        (None, Some(event), Some(data)) => vec![(event, data, String::new())],
        (None, Some(_), None) => return Err(ValidationError::new("data", "missing field `data`").into()),
        (None, None, _) => {
            return Err(ValidationError::new("event", "send either `event` and `data`, or `events`").into());
        }
        (Some(_), _, _) => {
            return Err(ValidationError::new("events", "send either `event` and `data`, or `events`, not both").into());
        }
    };
    let mut events = Vec::with_capacity(batch.len());
    for (name, data, at) in batch {
        let field = if at.is_empty() {
            "event".to_owned()
        } else {
            format!("{at}.event")
        };
        let event_type = EventType::parse(&name)
            .filter(|t| t.is_realtime())
            .ok_or_else(|| ApiError::BadRequest {
                code: "unknown_event_type",
                message: format!("{field}: unknown real-time event `{name}`"),
            })?;
        events.push(NewBotEvent {
            id: EventId::generate(now),
            event_type,
            created_at: now,
            data: data.get().to_owned(),
        });
    }
    Ok(events)
}

pub async fn list_attempts(
    State(state): State<AppState>,
    TeamCaller(team): TeamCaller,
    Path((bot_id, endpoint_id)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let bot = load_bot(&state, &team, &bot_id).await?;
    let endpoint = bot
        .endpoints
        .iter()
        .find(|e| e.id.as_str() == endpoint_id)
        .ok_or(ApiError::NotFound("real-time endpoint"))?;
    crate::attempts::page(&state, &team, &endpoint.id, &query).await
}

async fn load_bot(state: &AppState, team: &herald_domain::ids::TeamId, raw: &str) -> Result<Bot, ApiError> {
    let id = BotId::parse(raw).ok_or(ApiError::NotFound("bot"))?;
    state
        .store
        .get_bot(team, &id)
        .await
        .map_err(|e| crate::accounts::not_found_as(e, "bot"))
}

fn raw_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

pub(crate) fn bot_json(bot: &Bot) -> Value {
    let endpoints: Vec<Value> = bot
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "type": "webhook",
                "url": e.url,
                "events": e.event_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                "status": e.status.as_str(),
                "secret": e.secret.reveal(),
                "metadata": raw_json(&e.metadata),
            })
        })
        .collect();
    json!({
        "id": bot.id,
        "meeting_url": bot.meeting_url,
        "metadata": raw_json(&bot.metadata),
        "recording_config": { "realtime_endpoints": endpoints },
        "recording": { "id": bot.recording_id },
        "participant_events": { "id": bot.participant_events_id },
        "transcript": { "id": bot.transcript_id },
        "created_at": bot.created_at,
    })
}

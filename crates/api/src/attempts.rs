//! The delivery log: a webhook's attempts, newest first, and one attempt in
//! full. Reads only; the log is written by the engine.

use axum::Json;
use axum::extract::State;
use herald_domain::attempt::AttemptStatus;
use herald_domain::cursor::Cursor;
use herald_domain::ids::{AttemptId, EndpointId, EndpointKind, EventId, TeamId};
use herald_store::{Attempt, AttemptFilter};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::TeamCaller;
use crate::extract::{Path, Query};
use crate::{ApiError, AppState};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 250;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    status: Option<String>,
    event_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

pub async fn list_for_webhook(
    State(state): State<AppState>,
    TeamCaller(team): TeamCaller,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let endpoint = crate::webhooks::parse_id(&id)?;
    state
        .store
        .get_endpoint(&team, &endpoint)
        .await
        .map_err(|e| crate::accounts::not_found_as(e, "webhook"))?;
    page(&state, &team, &endpoint, &query).await
}

/// One page of an endpoint's attempts, newest first, with the cursor of the next.
pub(crate) async fn page(
    state: &AppState,
    team: &TeamId,
    endpoint: &EndpointId,
    query: &ListQuery,
) -> Result<Json<Value>, ApiError> {
    let filter = parse_filter(query)?;
    let (page, next_cursor) = herald_store::attempt_page(state.store.as_ref(), team, endpoint, &filter).await?;
    Ok(Json(json!({
        "data": page.iter().map(|a| attempt_json(a, false)).collect::<Vec<_>>(),
        "nextCursor": next_cursor,
    })))
}

pub async fn get_one(
    State(state): State<AppState>,
    TeamCaller(team): TeamCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = AttemptId::parse(&id).ok_or(ApiError::NotFound("attempt"))?;
    let attempt = state
        .store
        .get_attempt(&team, &id)
        .await
        .map_err(|e| crate::accounts::not_found_as(e, "attempt"))?;
    Ok(Json(attempt_json(&attempt, true)))
}

fn bad(message: String) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_query",
        message,
    }
}

pub(crate) fn parse_filter(query: &ListQuery) -> Result<AttemptFilter, ApiError> {
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(AttemptStatus::parse(raw).ok_or_else(|| {
            bad(format!(
                "status: must be success, retrying, failed or dropped, not `{raw}`"
            ))
        })?),
    };
    let event_id = match query.event_id.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(EventId::parse(raw).map_err(|why| bad(format!("eventId: {why}")))?),
    };
    let limit = match query.limit.as_deref().filter(|s| !s.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(bad(format!("limit: must be a whole number from 1 to {MAX_LIMIT}")));
            }
        },
    };
    let before = match query.cursor.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(Cursor::decode(raw).ok_or_else(|| bad("cursor: not a cursor from this API".into()))?),
    };
    Ok(AttemptFilter {
        status,
        event_id,
        before,
        limit,
    })
}

fn headers_object(headers: &[(String, String)]) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        match map.get_mut(name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                map.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    Value::Object(map)
}

/// The contract's attempt shape. Bodies only with `detail`: lists leave them out.
pub(crate) fn attempt_json(a: &Attempt, detail: bool) -> Value {
    let mut request = json!({ "url": a.request_url, "headers": headers_object(&a.request_headers) });
    let response = a.response.as_ref().map(|r| {
        let mut response = json!({ "status": r.status, "headers": headers_object(&r.headers) });
        if detail {
            response["body"] = Value::String(String::from_utf8_lossy(&r.body).into_owned());
        }
        response
    });
    if detail {
        request["body"] = a
            .request_body
            .as_ref()
            .map(|b| Value::String(String::from_utf8_lossy(b).into_owned()))
            .unwrap_or(Value::Null);
    }
    let owner_key = match a.endpoint_id.kind() {
        EndpointKind::Webhook => "webhookId",
        EndpointKind::Realtime => "endpointId",
    };
    json!({
        "id": a.id,
        owner_key: a.endpoint_id,
        "eventId": a.event_id,
        "eventType": a.event_type.as_str(),
        "attempt": a.attempt,
        "timestamp": a.timestamp_ms,
        "status": a.status.as_str(),
        "durationMs": a.duration_ms,
        "request": request,
        "response": response,
        "error": a.error,
        "manual": a.manual,
    })
}

//! A webhook's health (contract §4.3): `GET /api/v1/webhooks/{id}/stats`,
//! one bucket per hour, oldest first, from the per-hour counters the store
//! keeps as attempts are recorded.

use axum::Json;
use axum::extract::State;
use herald_domain::ValidationError;
use herald_store::HourStats;
use herald_store::health::{fill_hours, first_hour, quantile_ms};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::TeamCaller;
use crate::extract::{Path, Query};
use crate::webhooks::parse_id;
use crate::{ApiError, AppState};

/// The most hours one request may ask for: a week.
pub const MAX_HOURS: i64 = 168;
const DEFAULT_HOURS: i64 = 24;

#[derive(Deserialize)]
pub struct StatsQuery {
    #[serde(default)]
    hours: Option<i64>,
}

/// `GET /api/v1/webhooks/{id}/stats?hours=1..168`
pub async fn for_webhook(
    State(state): State<AppState>,
    TeamCaller(team): TeamCaller,
    Path(id): Path<String>,
    Query(query): Query<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let hours = query.hours.unwrap_or(DEFAULT_HOURS);
    if !(1..=MAX_HOURS).contains(&hours) {
        return Err(ApiError::invalid(ValidationError::new(
            "hours",
            format!("must be from 1 to {MAX_HOURS}"),
        )));
    }
    let buckets = hourly(&state, &team, &id, hours, herald_engine::now_ms()).await?;
    Ok(Json(json!({
        "buckets": buckets.iter().map(bucket_json).collect::<Vec<_>>(),
    })))
}

/// The webhook's last `hours` hours up to the one `now_ms` is in, oldest
/// first, hours without attempts included as zeros.
pub async fn hourly(
    state: &AppState,
    team: &herald_domain::ids::TeamId,
    id: &herald_domain::ids::EndpointId,
    hours: i64,
    now_ms: i64,
) -> Result<Vec<HourStats>, ApiError> {
    let from = first_hour(now_ms, hours);
    let stored = state
        .store
        .webhook_stats(team, id, from)
        .await
        .map_err(|e| crate::accounts::not_found_as(e, "webhook"))?;
    Ok(fill_hours(stored, from, hours))
}

fn bucket_json(h: &HourStats) -> Value {
    json!({
        "start": h.start_ms,
        "success": h.success,
        "retrying": h.retrying,
        "failed": h.failed,
        "p50Ms": quantile_ms(h, 0.50),
        "p95Ms": quantile_ms(h, 0.95),
    })
}

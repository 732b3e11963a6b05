//! A webhook's health (contract §4.3): `GET /api/v1/webhooks/{id}/stats`,
//! one bucket per hour, oldest first, from the per-hour counters the store
//! keeps as attempts are recorded.

use axum::Json;
use axum::extract::State;
use herald_domain::ValidationError;
use herald_store::HourStats;
use herald_store::health::{hour_of, quantile_ms};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::TeamCaller;
use crate::extract::{Path, Query};
use crate::webhooks::parse_id;
use crate::{ApiError, AppState};

const HOUR_MS: i64 = 3_600_000;
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
    let from = hour_of(now_ms) - (hours - 1) * HOUR_MS;
    let stored = state
        .store
        .webhook_stats(team, id, from)
        .await
        .map_err(|e| crate::accounts::not_found_as(e, "webhook"))?;
    Ok(fill_hours(stored, from, hours))
}

/// `stored` (oldest first, some hours missing) as exactly `hours` buckets
/// from `from`.
pub fn fill_hours(stored: Vec<HourStats>, from: i64, hours: i64) -> Vec<HourStats> {
    let mut stored = stored.into_iter().peekable();
    (0..hours)
        .map(|i| {
            let start = from + i * HOUR_MS;
            while stored.peek().is_some_and(|s| s.start_ms < start) {
                stored.next();
            }
            match stored.peek() {
                Some(s) if s.start_ms == start => stored.next().unwrap_or_default(),
                _ => HourStats {
                    start_ms: start,
                    ..HourStats::default()
                },
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_hours_are_zeros_and_the_buckets_run_oldest_first() {
        let from = 10 * HOUR_MS;
        let at = |hour: i64, success: i64| HourStats {
            start_ms: from + hour * HOUR_MS,
            success,
            ..HourStats::default()
        };
        let filled = fill_hours(vec![at(-1, 9), at(1, 3), at(3, 5)], from, 3);
        let got: Vec<(i64, i64)> = filled.iter().map(|h| (h.start_ms, h.success)).collect();
        assert_eq!(got, vec![(from, 0), (from + HOUR_MS, 3), (from + 2 * HOUR_MS, 0)]);
    }
}

//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::{ApiError, AppState};

/// 200 while the process runs.
pub async fn healthz() -> &'static str {
    "ok"
}

/// 200 once the store answers; 503 while it does not, and from the moment
/// the server was told to stop (it still serves while attempts in flight
/// finish, so that a load balancer sees the 503 and moves traffic away).
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if state.engine.is_stopping() {
        return Err(ApiError::ShuttingDown);
    }
    state.store.ping().await?;
    Ok("ready")
}

/// Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.engine.render_metrics().await,
    )
}

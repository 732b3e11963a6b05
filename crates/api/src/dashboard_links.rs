//! One-time dashboard sign-in links (`POST /api/v1/teams/{teamId}/dashboard-links`,
//! admin key).
//!
//! The operator asks for a link on behalf of a team and hands it to a person.
//! Only the hash of the link's token is stored; the link works once, until it
//! expires, and opens a dashboard session for that team alone. [`mint`] is
//! shared with `herald dashboard-link`, which opens the store directly.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use herald_domain::dashboard::{Token, sign_in_url};
use herald_domain::ids::TeamId;
use herald_store::{Sessions, StoreResult};
use serde_json::{Value, json};

use crate::auth::Admin;
use crate::extract::Path;
use crate::{ApiError, AppState};

/// A minted link: the absolute URL to hand to a person, and when it expires
/// (Unix milliseconds).
#[derive(Debug, Clone)]
pub struct DashboardLink {
    pub url: String,
    pub expires_at: i64,
}

/// Stores a new one-time link for `team` and returns it. `NotFound` if the
/// team does not exist.
pub async fn mint(
    store: &dyn Sessions,
    team: &TeamId,
    public_url: &str,
    ttl: Duration,
    now_ms: i64,
) -> StoreResult<DashboardLink> {
    let token = Token::generate();
    let expires_at = now_ms + ttl.as_millis() as i64;
    store
        .create_dashboard_link(team, &token.hash(), expires_at, now_ms)
        .await?;
    Ok(DashboardLink {
        url: sign_in_url(public_url, &token),
        expires_at,
    })
}

#[tracing::instrument(skip_all, fields(team_id = %team_id))]
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    Path(team_id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let team = TeamId::parse(&team_id).ok_or(ApiError::NotFound("team"))?;
    let link = mint(
        state.store.as_ref(),
        &team,
        &state.settings.public_url,
        state.settings.dashboard_link_ttl,
        state.settings.clock.now_ms(),
    )
    .await
    .map_err(|e| crate::accounts::not_found_as(e, "team"))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "url": link.url, "expiresAt": link.expires_at })),
    ))
}

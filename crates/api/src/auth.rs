//! Who is calling: the admin (platform operator) or a team.
//!
//! Keys arrive as `Authorization: Bearer|Token <key>` or bare. The admin key
//! is compared by hash; team keys are looked up by hash in the store on every
//! request (team requests are not the hot path: publishing takes the admin
//! key), so a revoked key answers 401 at once on every node. A key's
//! last use is written at most once per [`TOUCH_EVERY_MS`], in the background.
//! A team key's requests are rate limited ([`crate::rate`]) before the
//! store is asked, so a flood from one key costs the store nothing.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use herald_domain::ids::TeamId;
use herald_domain::keys::{ApiKey, KeyHash, KeyKind};

use crate::{ApiError, AppState};

/// How stale a team key's `lastUsedAt` may be: a use within this long of
/// the stored one writes nothing.
pub const TOUCH_EVERY_MS: i64 = 60_000;

pub struct Keys {
    admin: KeyHash,
}

impl Keys {
    pub fn new(admin: KeyHash) -> Self {
        Self { admin }
    }
}

/// The caller holds the admin key.
pub struct Admin;

/// The caller holds a key of this team.
pub struct TeamCaller(pub TeamId);

enum Caller {
    Admin,
    Team(TeamId),
}

async fn identify(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let key = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(ApiKey::from_authorization)
        .ok_or(ApiError::Unauthorized)?;
    let hash = key.hash();
    match key.kind() {
        KeyKind::Team => {
            let per_s = state.settings.team_rate_limit;
            state
                .rate
                .take(hash.as_str(), std::time::Instant::now())
                .map_err(|wait| ApiError::RateLimited {
                    per_s,
                    retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u32,
                })?;
            let used = state.store.team_for_key(&hash).await?.ok_or(ApiError::Unauthorized)?;
            let now = herald_engine::now_ms();
            if used.last_used_at.is_none_or(|at| now - at >= TOUCH_EVERY_MS) {
                let (store, key) = (std::sync::Arc::clone(&state.store), used.key.clone());
                tokio::spawn(async move {
                    if let Err(e) = store.touch_team_key(&key, now).await {
                        tracing::debug!(error = %e, "cannot note a team key's use");
                    }
                });
            }
            Ok(Caller::Team(used.team))
        }
        KeyKind::Other if hash.matches(&state.auth.admin) => Ok(Caller::Admin),
        KeyKind::Other => Err(ApiError::Unauthorized),
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match identify(parts, state).await? {
            Caller::Admin => Ok(Admin),
            Caller::Team(_) => Err(ApiError::Forbidden(
                "this route needs the admin key; a team key was given",
            )),
        }
    }
}

impl FromRequestParts<AppState> for TeamCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match identify(parts, state).await? {
            Caller::Team(team) => Ok(TeamCaller(team)),
            Caller::Admin => Err(ApiError::Forbidden(
                "this route needs a team key; the admin key was given",
            )),
        }
    }
}

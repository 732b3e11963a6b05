//! Who is calling: the admin (platform operator) or a team.
//!
//! Keys arrive as `Authorization: Bearer|Token <key>` or bare. The admin key
//! is compared by hash; team keys are looked up by hash in the store and then
//! remembered, since a key never changes its team.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use herald_domain::ids::TeamId;
use herald_domain::keys::{ApiKey, KeyHash, KeyKind};

use crate::{ApiError, AppState};

pub struct Keys {
    admin: KeyHash,
    teams: Mutex<HashMap<String, TeamId>>,
}

impl Keys {
    pub fn new(admin: KeyHash) -> Self {
        Self {
            admin,
            teams: Mutex::default(),
        }
    }

    fn cached_team(&self, hash: &KeyHash) -> Option<TeamId> {
        self.teams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash.as_str())
            .cloned()
    }

    fn remember(&self, hash: &KeyHash, team: &TeamId) {
        self.teams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash.as_str().to_owned(), team.clone());
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
            if let Some(team) = state.auth.cached_team(&hash) {
                return Ok(Caller::Team(team));
            }
            let team = state.store.team_for_key(&hash).await?.ok_or(ApiError::Unauthorized)?;
            state.auth.remember(&hash, &team);
            Ok(Caller::Team(team))
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

//! The operator's routes: accounts, teams and team keys (admin key).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use herald_domain::ids::{AccountId, KeyId, TeamId};
use herald_domain::keys::ApiKey;
use herald_domain::webhook::check_name;
use herald_store::TeamKey;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Admin;
use crate::extract::{JsonBody, OptionalJsonBody, Path};
use crate::{ApiError, AppState};

#[derive(Deserialize)]
pub struct NameBody {
    name: String,
}

#[tracing::instrument(skip_all)]
pub async fn create_account(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<NameBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = check_name(&body.name)?;
    let account = state.store.create_account(&name, herald_engine::now_ms()).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": account.id, "name": account.name })),
    ))
}

#[tracing::instrument(skip_all, fields(account_id = %account_id))]
pub async fn create_team(
    State(state): State<AppState>,
    _: Admin,
    Path(account_id): Path<String>,
    JsonBody(body): JsonBody<NameBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let account = AccountId::parse(&account_id).ok_or(ApiError::NotFound("account"))?;
    let name = check_name(&body.name)?;
    let team = state
        .store
        .create_team(&account, &name, herald_engine::now_ms())
        .await
        .map_err(|e| not_found_as(e, "account"))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": team.id, "accountId": team.account_id, "name": team.name })),
    ))
}

#[derive(Deserialize, Default)]
pub struct KeyBody {
    #[serde(default)]
    name: Option<String>,
}

/// How many of a key's first characters its listing shows: `hk_` and five
/// more, enough to tell a team's keys apart and far too few to guess one.
const KEY_PREFIX_CHARS: usize = 8;

#[tracing::instrument(skip_all, fields(team_id = %team_id))]
pub async fn create_team_key(
    State(state): State<AppState>,
    _: Admin,
    Path(team_id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<KeyBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let team = TeamId::parse(&team_id).ok_or(ApiError::NotFound("team"))?;
    let name = body.name.as_deref().map(check_name).transpose()?;
    let secret = ApiKey::generate_team_key();
    let now = herald_engine::now_ms();
    let key = TeamKey {
        id: KeyId::generate(now),
        team_id: team,
        name,
        prefix: secret.reveal().chars().take(KEY_PREFIX_CHARS).collect(),
        created_at: now,
        last_used_at: None,
    };
    state
        .store
        .create_team_key(&key, &secret.hash())
        .await
        .map_err(|e| not_found_as(e, "team"))?;
    let mut answer = key_json(&key);
    answer["key"] = json!(secret.reveal());
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `GET /api/v1/teams/{teamId}/keys`: the team's keys, never the keys themselves.
pub async fn list_team_keys(
    State(state): State<AppState>,
    _: Admin,
    Path(team_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let team = TeamId::parse(&team_id).ok_or(ApiError::NotFound("team"))?;
    let keys = state
        .store
        .list_team_keys(&team)
        .await
        .map_err(|e| not_found_as(e, "team"))?;
    Ok(Json(json!({ "data": keys.iter().map(key_json).collect::<Vec<_>>() })))
}

/// `DELETE /api/v1/teams/{teamId}/keys/{keyId}`: the key answers 401 from
/// the next request on, on every node (keys are not cached).
#[tracing::instrument(skip_all, fields(team_id = %team_id, key_id = %key_id))]
pub async fn delete_team_key(
    State(state): State<AppState>,
    _: Admin,
    Path((team_id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let team = TeamId::parse(&team_id).ok_or(ApiError::NotFound("team"))?;
    let key = KeyId::parse(&key_id).ok_or(ApiError::NotFound("key"))?;
    state
        .store
        .delete_team_key(&team, &key)
        .await
        .map_err(|e| not_found_as(e, "key"))?;
    Ok(StatusCode::NO_CONTENT)
}

fn key_json(key: &TeamKey) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "createdAt": key.created_at,
        "lastUsedAt": key.last_used_at,
    })
}

/// Names the missing thing in a store `NotFound`.
pub(crate) fn not_found_as(e: herald_store::StoreError, what: &'static str) -> ApiError {
    match e {
        herald_store::StoreError::NotFound => ApiError::NotFound(what),
        other => other.into(),
    }
}

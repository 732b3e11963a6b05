//! The operator's routes: accounts, teams and team keys (admin key).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use herald_domain::ids::{AccountId, TeamId};
use herald_domain::keys::ApiKey;
use herald_domain::webhook::check_name;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Admin;
use crate::extract::JsonBody;
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

#[tracing::instrument(skip_all, fields(team_id = %team_id))]
pub async fn create_team_key(
    State(state): State<AppState>,
    _: Admin,
    Path(team_id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let team = TeamId::parse(&team_id).ok_or(ApiError::NotFound("team"))?;
    let key = ApiKey::generate_team_key();
    state
        .store
        .create_team_key(&team, &key.hash(), herald_engine::now_ms())
        .await
        .map_err(|e| not_found_as(e, "team"))?;
    Ok((StatusCode::CREATED, Json(json!({ "key": key.reveal() }))))
}

/// Names the missing thing in a store `NotFound`.
pub(crate) fn not_found_as(e: herald_store::StoreError, what: &'static str) -> ApiError {
    match e {
        herald_store::StoreError::NotFound => ApiError::NotFound(what),
        other => other.into(),
    }
}

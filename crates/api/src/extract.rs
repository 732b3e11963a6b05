//! Request extraction with the contract's errors, so that every rejection
//! answers the one error JSON: 400 naming the field for bad JSON, a body that
//! is not an object or JSON nested over 128 levels, 413 for a body over the
//! limit, 400 for a query string or path that does not parse.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use herald_domain::event::strip_position;
use serde::de::DeserializeOwned;

use crate::{ApiError, AppState};

/// Like `axum::Json`, but its rejections are [`ApiError`]s that name the
/// offending field (`eventTypes[0]: invalid type: integer ...`).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        parse(&read_body(req, state).await?).map(JsonBody)
    }
}

/// Like [`JsonBody`], but a request with no body at all means `T::default()`
/// (`POST /api/v1/teams/{teamId}/keys` may be sent without one).
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        parse(&bytes).map(Self)
    }
}

/// The request's body, within the body limit (413 past it).
async fn read_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(state.settings.max_body_bytes)
        } else {
            ApiError::BadRequest {
                code: "unreadable_body",
                message: rejection.body_text(),
            }
        }
    })
}

/// Parses a JSON body into `T`, naming the field that is wrong.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest {
            code: "malformed_json",
            message: "request body is empty; expected a JSON object".into(),
        });
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest {
            code: "malformed_json",
            message: "body: expected a JSON object".into(),
        });
    }
    if herald_domain::json::nests_deeper_than(bytes, herald_domain::json::MAX_DEPTH) {
        return Err(ApiError::BadRequest {
            code: "too_deep",
            message: format!(
                "body: JSON nested more than {} levels deep",
                herald_domain::json::MAX_DEPTH
            ),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::BadRequest {
                code: "malformed_json",
                message: format!("malformed JSON: {inner}"),
            }
        } else {
            let message = strip_position(&inner.to_string());
            let message = if path == "." {
                format!("body: {message}")
            } else {
                format!("{path}: {message}")
            };
            ApiError::BadRequest {
                code: "invalid_field",
                message,
            }
        }
    })?;
    de.end().map_err(|e| ApiError::BadRequest {
        code: "malformed_json",
        message: format!("malformed JSON: {e}"),
    })?;
    Ok(value)
}

/// Like `axum::extract::Query`, but a query string that does not parse
/// (`?limit=1&limit=2`, `?limit=x`) answers the error JSON.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|rejection| {
                let text = rejection.body_text();
                let why = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::BadRequest {
                    code: "invalid_query",
                    message: format!("query string: {why}"),
                }
            })
    }
}

/// Like `axum::extract::Path`, but a path segment that does not decode
/// answers the error JSON.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|rejection| ApiError::BadRequest {
                code: "invalid_path",
                message: format!("path: {}", rejection.body_text()),
            })
    }
}

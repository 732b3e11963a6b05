//! Request-body extraction with the contract's errors: 400 naming the field
//! for bad JSON, 413 for a body over the limit.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use herald_domain::event::strip_position;
use serde::de::DeserializeOwned;

use crate::{ApiError, AppState};

/// Like `axum::Json`, but its rejections are [`ApiError`]s that name the
/// offending field (`eventTypes[0]: invalid type: integer ...`).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(state.settings.max_body_bytes)
            } else {
                ApiError::BadRequest {
                    code: "unreadable_body",
                    message: rejection.body_text(),
                }
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses a JSON body into `T`, naming the field that is wrong.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest {
            code: "malformed_json",
            message: "request body is empty; expected a JSON object".into(),
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

//! `ApiError`: every way a request can fail, and the one place that turns it
//! into `{"error":{"code","message"}}` with a status code.
//!
//! Internal causes are logged here, once, and never sent to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_domain::ValidationError;
use herald_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("Herald is at capacity; retry after {retry_after_s} s")]
    Overloaded { retry_after_s: u32 },
    #[error(
        "this key made more than {per_s} requests a second (HERALD_TEAM_RATE_LIMIT); retry after {retry_after_s} s"
    )]
    RateLimited { per_s: u32, retry_after_s: u32 },
    #[error("the database is unavailable; retry shortly")]
    Unavailable(String),
    #[error("this server is shutting down; send new work to another one")]
    ShuttingDown,
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// 422 `limit_exceeded`, with the limit and its setting in the message.
    pub fn limit_exceeded(what: &str, limit: usize, setting: &str) -> Self {
        Self::Unprocessable {
            code: "limit_exceeded",
            message: format!("{what} is limited to {limit} ({setting})"),
        }
    }

    pub fn invalid(e: ValidationError) -> Self {
        Self::BadRequest {
            code: "invalid_field",
            message: e.to_string(),
        }
    }

    /// Whether this answers the client's own mistake (4xx), not Herald's
    /// state (5xx).
    pub fn is_client_error(&self) -> bool {
        self.parts().0.is_client_error()
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Self::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::invalid(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound("resource"),
            StoreError::Conflict(why) => Self::Conflict(why),
            StoreError::Unavailable(why) => Self::Unavailable(why),
            StoreError::Internal(why) => Self::Internal(why),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        match &self {
            Self::Internal(cause) => tracing::error!(%cause, "internal error"),
            Self::Unavailable(cause) => tracing::warn!(%cause, "store unavailable"),
            _ => {}
        }
        let body = serde_json::json!({ "error": { "code": code, "message": self.to_string() } });
        let mut response = (status, Json(body)).into_response();
        let retry_after = match &self {
            Self::Overloaded { retry_after_s } | Self::RateLimited { retry_after_s, .. } => Some(*retry_after_s),
            Self::Unavailable(_) | Self::ShuttingDown => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

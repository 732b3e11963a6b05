//! `DashboardError`: every way a dashboard request can fail, and the one
//! place that turns it into an HTML page with a status code.
//!
//! Internal causes are logged here, once, and never shown to the person.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_store::StoreError;

use crate::views;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// No session, or it expired or was signed out.
    #[error("you are signed out")]
    SignedOut,
    /// A state-changing request without a valid CSRF token, or from another origin.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Missing, or another team's: the same answer for both.
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("the database is unavailable; try again shortly")]
    Unavailable(String),
    #[error("something went wrong on our side")]
    Internal(String),
}

impl From<StoreError> for DashboardError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict(why) => Self::BadRequest(why),
            StoreError::Unavailable(why) => Self::Unavailable(why),
            StoreError::Internal(why) => Self::Internal(why),
        }
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            Self::SignedOut => (StatusCode::UNAUTHORIZED, "You are signed out"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "Request refused"),
            Self::NotFound => (StatusCode::NOT_FOUND, "Not found"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Temporarily unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
        };
        match &self {
            Self::Internal(cause) => tracing::error!(%cause, "dashboard internal error"),
            Self::Unavailable(cause) => tracing::warn!(%cause, "dashboard: store unavailable"),
            _ => {}
        }
        let message = match &self {
            Self::SignedOut => {
                "Your session has ended or this browser is not signed in. Ask your Herald operator for a new sign-in link."
                    .to_owned()
            }
            Self::NotFound => "There is nothing here, or it belongs to another team.".to_owned(),
            other => format!("{}.", capitalise(&other.to_string())),
        };
        (status, views::message_page(title, &message)).into_response()
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

//! Query and path extraction whose rejections are [`DashboardError`]s, so a
//! malformed query string (`?status=a&status=b`) answers the dashboard's own
//! error page, not axum's plain text.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::DashboardError;

/// Like `axum::extract::Query`, rejecting with [`DashboardError::BadRequest`].
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = DashboardError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, DashboardError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|rejection| {
                let text = rejection.body_text();
                let why = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                DashboardError::BadRequest(format!("the query string is malformed: {why}"))
            })
    }
}

/// Like `axum::extract::Path`, rejecting with [`DashboardError::BadRequest`].
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = DashboardError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, DashboardError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|rejection| {
                DashboardError::BadRequest(format!("the path is malformed: {}", rejection.body_text()))
            })
    }
}

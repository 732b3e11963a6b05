//! An axum extractor that verifies a delivery before the handler runs.
//!
//! `VerifiedWebhook<T>` reads the raw body (the signature covers the exact
//! bytes, so it must run before anything parses them), verifies it with the
//! [`Verifier`] found in the router's state through `FromRef`, and parses it
//! as `T`. A request that fails never reaches the handler: it is answered
//! 400 (malformed headers or body) or 401 (stale, unsigned or forged) with a
//! one-line reason, which is what Herald logs as the attempt's response.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::payload::Event;
use crate::verify::{Verifier, VerifyError};

/// A verified delivery, parsed as `T` ([`Event`] unless said otherwise).
#[derive(Debug, Clone)]
pub struct VerifiedWebhook<T = Event> {
    /// The `webhook-id`: the event id, the key to de-duplicate by.
    pub id: String,
    /// When Herald signed this attempt.
    pub timestamp: SystemTime,
    /// The body, parsed.
    pub payload: T,
    /// The body exactly as received.
    pub body: Bytes,
}

/// Why [`VerifiedWebhook`] refused a request, and the answer it gets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookRejection {
    /// The body could not be read (too large, connection dropped).
    #[error("the body could not be read: {0}")]
    Body(#[from] axum::extract::rejection::BytesRejection),
    /// The signature headers are missing, stale or do not match.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Verified, but not the JSON the handler expects.
    #[error("the body is not the expected JSON: {0}")]
    Payload(#[from] serde_json::Error),
}

impl WebhookRejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Body(rejection) => rejection.status(),
            Self::Verify(e) if e.is_malformed() => StatusCode::BAD_REQUEST,
            Self::Verify(_) => StatusCode::UNAUTHORIZED,
            Self::Payload(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for WebhookRejection {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
    }
}

impl<S, T> FromRequest<S> for VerifiedWebhook<T>
where
    Verifier: FromRef<S>,
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = WebhookRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Verifier::from_ref(state);
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, state).await?;
        let verified = verifier.verify(&headers, &body)?;
        let payload = serde_json::from_slice(&body)?;
        Ok(Self {
            id: verified.id,
            timestamp: verified.timestamp,
            payload,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::HeaderValue;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const BODY: &str = r#"{"id":"evt_1","eventType":"meeting.completed","createdAt":1,"data":{"meeting":{"id":"m"},"organization":{"accountId":"a","teamId":"t"}}}"#;

    fn request(body: &str, signature: Option<String>) -> Request {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let secret: crate::Secret = SECRET.parse().unwrap();
        let signature = signature.unwrap_or_else(|| secret.sign("evt_1", now, body.as_bytes()));
        let mut request = Request::new(Body::from(body.to_owned()));
        let headers = request.headers_mut();
        headers.insert("webhook-id", HeaderValue::from_static("evt_1"));
        headers.insert("webhook-timestamp", HeaderValue::from_str(&now.to_string()).unwrap());
        headers.insert("webhook-signature", HeaderValue::from_str(&signature).unwrap());
        request
    }

    #[tokio::test]
    async fn a_signed_request_is_extracted_and_parsed() {
        let verifier = Verifier::new(SECRET).unwrap();
        let webhook = VerifiedWebhook::<Event>::from_request(request(BODY, None), &verifier)
            .await
            .unwrap();
        assert_eq!(webhook.id, "evt_1");
        assert_eq!(webhook.body, BODY.as_bytes());
        let Event::MeetingCompleted(event) = webhook.payload else {
            panic!("not a meeting.completed")
        };
        assert_eq!(event.data.organization.team_id, "t");
    }

    #[tokio::test]
    async fn refusals_answer_401_or_400_with_a_reason() {
        let verifier = Verifier::new(SECRET).unwrap();
        let forged = VerifiedWebhook::<Event>::from_request(request(BODY, Some("v1,AAAA".into())), &verifier)
            .await
            .unwrap_err();
        assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(forged.to_string(), "no signature matches");

        let mut unsigned = request(BODY, None);
        unsigned.headers_mut().remove("webhook-timestamp");
        let missing = VerifiedWebhook::<Event>::from_request(unsigned, &verifier)
            .await
            .unwrap_err();
        assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
        assert_eq!(missing.to_string(), "the webhook-timestamp header is missing");

        let not_an_event = VerifiedWebhook::<Event>::from_request(request("[1]", None), &verifier)
            .await
            .unwrap_err();
        assert_eq!(not_an_event.status(), StatusCode::BAD_REQUEST);
    }
}

//! Receive webhooks from Herald: verify them, parse them, handle each once.
//!
//! Herald signs every delivery the Standard Webhooks way (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`), so this crate's key design
//! choice is to verify **the raw body bytes** before anything parses them,
//! against one or more secrets (a rotation sends two signatures for a while),
//! with a timestamp tolerance and constant-time comparison:
//!
//! ```
//! # fn handle(headers: &http::HeaderMap, body: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! use herald_receiver::{Event, Verifier};
//!
//! let verifier = Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let delivery = verifier.verify(headers, body)?; // 401 on Err
//! let event = Event::parse(body)?;
//! # let _ = (delivery, event); Ok(()) }
//! ```
//!
//! - [`Verifier`] checks a delivery ([`verify`](Verifier::verify) with an
//!   `http::HeaderMap`, [`verify_parts`](Verifier::verify_parts) with the
//!   three header values from any framework).
//! - [`Event`] and its structs type the bodies: `meeting.completed` and the
//!   real-time envelope. Unknown fields are kept in each struct's `extra`
//!   and unknown event types in [`Event::Other`], so a new field in Herald
//!   never breaks a receiver.
//! - [`Deduplicator`] remembers recent `webhook-id`s, because delivery is at
//!   least once.
//! - With the `axum` feature, `VerifiedWebhook<T>` does all of it as an
//!   extractor.
//!
//! The crate depends on no other Herald crate, only on `hmac`, `sha2`,
//! `base64`, `http`, `serde`, `serde_json` and `thiserror` (and `axum` with
//! its feature). It does not send webhooks, and it does not read the
//! query-string tokens some real-time receivers use: the signature already
//! proves the sender.

mod dedupe;
#[cfg(feature = "axum")]
mod extract;
mod payload;
mod verify;

pub use dedupe::{DEFAULT_CAPACITY, DEFAULT_WINDOW, Deduplicator};
#[cfg(feature = "axum")]
pub use extract::{VerifiedWebhook, WebhookRejection};
/// The header map [`Verifier::verify`] reads, re-exported so that its
/// `http` version always matches.
pub use http::HeaderMap;
pub use payload::{
    Assets, DatabaseNote, Event, EventTimestamp, FollowUpMaterial, MEETING_COMPLETED, Meeting, MeetingCompleted,
    MeetingCompletedData, Organization, Participant, ParticipantEventData, PayloadError, RealtimeData, RealtimeEvent,
    Resource,
};
pub use verify::{
    DEFAULT_TOLERANCE, Secret, SecretError, Verified, Verifier, VerifyError, WEBHOOK_ID, WEBHOOK_SIGNATURE,
    WEBHOOK_TIMESTAMP,
};

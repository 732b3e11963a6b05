//! Team webhooks: what a valid one looks like, and its status.

use crate::ValidationError;
use crate::event::EventType;
use crate::target::{TargetPolicy, check_url};

/// The status of an endpoint. Webhooks are `Active` or `Deactivated` (by
/// their team); real-time endpoints are `Active` or `Failed` (by the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointStatus {
    Active,
    Deactivated,
    Failed,
}

impl EndpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deactivated => "deactivated",
            Self::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "deactivated" => Some(Self::Deactivated),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A name for a webhook: trimmed, 1 to 200 characters.
pub fn check_name(raw: &str) -> Result<String, ValidationError> {
    crate::error::refuse_nul("name", raw)?;
    let name = raw.trim();
    if name.is_empty() {
        return Err(ValidationError::new("name", "must not be empty"));
    }
    if name.chars().count() > 200 {
        return Err(ValidationError::new("name", "must be at most 200 characters"));
    }
    Ok(name.to_owned())
}

/// A webhook's URL, under the target rules. The URL is kept as given.
pub fn check_webhook_url(raw: &str, policy: TargetPolicy) -> Result<String, UrlRefused> {
    check_url(raw, policy).map(|_| raw.to_owned()).map_err(|e| UrlRefused {
        field: "url".into(),
        reason: e,
    })
}

/// A URL that may not be a target: the API answers 422, not 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct UrlRefused {
    pub field: String,
    pub reason: crate::target::TargetError,
}

/// The event types of a webhook: non-empty, known, team-webhook types, without
/// duplicates, in the order given.
pub fn check_event_types(raw: &[String]) -> Result<Vec<EventType>, ValidationError> {
    if raw.is_empty() {
        return Err(ValidationError::new("eventTypes", "must list at least one event type"));
    }
    let mut types = Vec::with_capacity(raw.len());
    for (i, name) in raw.iter().enumerate() {
        let t = EventType::parse(name)
            .filter(|t| t.is_team_webhook_type())
            .ok_or_else(|| {
                ValidationError::new(
                    format!("eventTypes[{i}]"),
                    format!("unknown event type `{name}`; webhooks support: meeting.completed"),
                )
            })?;
        if !types.contains(&t) {
            types.push(t);
        }
    }
    Ok(types)
}

/// A webhook status set by its team: `active` or `deactivated`.
pub fn check_status(raw: &str) -> Result<EndpointStatus, ValidationError> {
    match EndpointStatus::parse(raw) {
        Some(s @ (EndpointStatus::Active | EndpointStatus::Deactivated)) => Ok(s),
        _ => Err(ValidationError::new("status", "must be `active` or `deactivated`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(check_name("  CRM sync ").unwrap(), "CRM sync");
        assert_eq!(check_name(" ").unwrap_err().field, "name");
        assert!(check_name(&"x".repeat(201)).is_err());
    }

    #[test]
    fn event_types_must_be_known_webhook_types() {
        assert_eq!(
            check_event_types(&["meeting.completed".into(), "meeting.completed".into()]).unwrap(),
            vec![EventType::MeetingCompleted]
        );
        assert_eq!(check_event_types(&[]).unwrap_err().field, "eventTypes");
        assert_eq!(
            check_event_types(&["transcript.data".into()]).unwrap_err().field,
            "eventTypes[0]"
        );
    }

    #[test]
    fn status_is_active_or_deactivated() {
        assert_eq!(check_status("deactivated").unwrap(), EndpointStatus::Deactivated);
        assert!(check_status("failed").is_err());
    }

    #[test]
    fn urls_follow_the_target_rules() {
        assert!(check_webhook_url("https://example.com/h", TargetPolicy::PublicHttpsOnly).is_ok());
        assert_eq!(
            check_webhook_url("http://example.com/h", TargetPolicy::PublicHttpsOnly)
                .unwrap_err()
                .field,
            "url"
        );
    }
}

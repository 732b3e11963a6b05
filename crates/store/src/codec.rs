//! How values that SQL has no type for are written into a column, the same
//! way by every backend: event-type lists and header lists as JSON text, and
//! the state an attempt leaves its delivery in.

use herald_domain::event::EventType;

use crate::model::{AttemptRecord, DeliveryNext};

/// The state an attempt leaves its delivery in, and the time stored with it.
pub(crate) fn delivery_move(r: &AttemptRecord) -> (&'static str, i64) {
    match r.next {
        DeliveryNext::Succeeded => ("succeeded", r.timestamp_ms),
        DeliveryNext::RetryAt(at) => ("pending", at),
        DeliveryNext::Failed => ("failed", r.timestamp_ms),
        DeliveryNext::Dropped => ("dropped", r.timestamp_ms),
    }
}

pub(crate) fn event_types_json(types: &[EventType]) -> String {
    serde_json::to_string(&types.iter().map(|t| t.as_str()).collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

/// Names this binary does not know are skipped: a newer one may have written them.
pub(crate) fn event_types_from(raw: &str) -> Vec<EventType> {
    serde_json::from_str::<Vec<String>>(raw)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| EventType::parse(t))
        .collect()
}

pub(crate) fn headers_json(headers: &[(String, String)]) -> String {
    serde_json::to_string(headers).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn headers_from(raw: &str) -> Vec<(String, String)> {
    serde_json::from_str(raw).unwrap_or_default()
}

/// The `data` of a stored team-event body, as JSON text, for the idempotency check.
pub(crate) fn stored_data_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("data").map(|d| d.to_string()))
        .unwrap_or_default()
}

/// Whether a publish subscribed an endpoint whose stored list is `types_json`.
/// The list is a JSON array of plain names (see [`event_types_json`]), so a
/// name between quotes is found exactly without parsing it, as every publish
/// must for every endpoint of the team (PostgreSQL matches the same way with
/// `LIKE`).
pub(crate) fn subscribes(types_json: &str, event_type: EventType) -> bool {
    let name = event_type.as_str();
    types_json
        .match_indices(name)
        .any(|(at, _)| types_json[..at].ends_with('"') && types_json[at + name.len()..].starts_with('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribes_matches_whole_names_only() {
        let list = event_types_json(&[EventType::MeetingCompleted]);
        assert!(subscribes(&list, EventType::MeetingCompleted));
        for other in EventType::ALL.iter().filter(|t| **t != EventType::MeetingCompleted) {
            assert!(!subscribes(&list, *other), "{other:?}");
        }
        assert!(!subscribes("[]", EventType::MeetingCompleted));
        let all = event_types_json(&EventType::ALL);
        assert!(EventType::ALL.iter().all(|t| subscribes(&all, *t)));
    }
}

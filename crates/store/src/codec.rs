//! How values that SQL has no type for are written into a column, the same
//! way by every backend: event-type lists and header lists as JSON text (an
//! attempt's own request headers in a short form), and the state an attempt
//! leaves its delivery in.

use herald_domain::event::EventType;
use herald_domain::signing::{CONTENT_TYPE, PreviousSecret, Secret, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

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

/// Marks the short form of [`request_headers_stored`]; JSON text starts with `[`.
const STANDARD_REQUEST: char = '=';
const STANDARD_NAMES: [&str; 5] = [
    "content-type",
    "user-agent",
    WEBHOOK_ID,
    WEBHOOK_TIMESTAMP,
    WEBHOOK_SIGNATURE,
];

/// An attempt's request headers as the log stores them. Herald's own
/// requests carry the same five headers in the same order, with the content
/// type fixed and the id equal to the attempt's event id, so such a list is
/// kept as its three other values, `=user-agent\ntimestamp\nsignature`
/// (about 70 bytes instead of 220 of JSON: the headers were half of an
/// attempt row, and every byte of it is written to the WAL and checkpointed).
/// Header values hold no line breaks; any other list is kept as JSON.
pub(crate) fn request_headers_stored(headers: &[(String, String)], event_id: &str) -> String {
    let standard = headers.len() == STANDARD_NAMES.len()
        && headers
            .iter()
            .zip(STANDARD_NAMES)
            .all(|((name, _), expected)| name == expected)
        && headers[0].1 == CONTENT_TYPE
        && headers[2].1 == event_id
        && headers.iter().all(|(_, value)| !value.contains('\n'));
    if !standard {
        return headers_json(headers);
    }
    let (agent, timestamp, signature) = (&headers[1].1, &headers[3].1, &headers[4].1);
    format!("{STANDARD_REQUEST}{agent}\n{timestamp}\n{signature}")
}

/// Reads what [`request_headers_stored`] wrote (or the JSON list that earlier
/// versions wrote for every attempt) back into the list that was sent.
pub(crate) fn request_headers_from(raw: &str, event_id: &str) -> Vec<(String, String)> {
    let Some(short) = raw.strip_prefix(STANDARD_REQUEST) else {
        return headers_from(raw);
    };
    let mut values = short.splitn(3, '\n');
    let (agent, timestamp, signature) = (values.next(), values.next(), values.next());
    let values = [Some(CONTENT_TYPE), agent, Some(event_id), timestamp, signature];
    STANDARD_NAMES
        .iter()
        .zip(values)
        .map(|(name, value)| ((*name).to_owned(), value.unwrap_or_default().to_owned()))
        .collect()
}

/// The `data` of a stored team-event body, as JSON text, for the idempotency check.
pub(crate) fn stored_data_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("data").map(|d| d.to_string()))
        .unwrap_or_default()
}

/// A webhook's previous secret from its two columns; `None` when it has
/// none. A stored secret that does not parse is a corrupt row.
pub(crate) fn previous_secret(raw: Option<&str>, expires_at_ms: Option<i64>) -> Result<Option<PreviousSecret>, String> {
    match (raw, expires_at_ms) {
        (Some(raw), Some(expires_at_ms)) => Secret::parse(raw)
            .map(|secret| Some(PreviousSecret { secret, expires_at_ms }))
            .ok_or_else(|| "stored previous secret is not a whsec_ secret".to_owned()),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn herald_request_headers_are_stored_short_and_read_back_exactly() {
        let sent = pairs(&[
            ("content-type", "application/json"),
            ("user-agent", "Herald/0.1.0"),
            ("webhook-id", "evt_01m95qwvpce6zbxn7ewqjzm17e"),
            ("webhook-timestamp", "1796562906"),
            ("webhook-signature", "v1,yc5ZssJ2qZ0LZFVk+ECl7wO78mgPBqC6F3ThaizrODg="),
        ]);
        let stored = request_headers_stored(&sent, "evt_01m95qwvpce6zbxn7ewqjzm17e");
        assert_eq!(
            stored,
            "=Herald/0.1.0\n1796562906\nv1,yc5ZssJ2qZ0LZFVk+ECl7wO78mgPBqC6F3ThaizrODg="
        );
        assert!(stored.len() < headers_json(&sent).len() / 2);
        assert_eq!(request_headers_from(&stored, "evt_01m95qwvpce6zbxn7ewqjzm17e"), sent);
    }

    #[test]
    fn other_request_headers_are_stored_as_json_and_read_back_exactly() {
        let standard = pairs(&[
            ("content-type", "application/json"),
            ("user-agent", "Herald/0.1.0"),
            ("webhook-id", "evt_1"),
            ("webhook-timestamp", "1796562906"),
            ("webhook-signature", "v1,abc"),
        ]);
        let mut another_id = standard.clone();
        another_id[2].1 = "evt_2".into();
        let mut another_type = standard.clone();
        another_type[0].1 = "text/plain".into();
        let mut reordered = standard.clone();
        reordered.swap(3, 4);
        let mut extra = standard.clone();
        extra.push(("x-extra".into(), "1".into()));
        let mut line_break = standard.clone();
        line_break[1].1 = "Herald\n/0.1.0".into();
        let lists = [
            another_id,
            another_type,
            reordered,
            extra,
            line_break,
            Vec::new(),
            standard[..4].to_vec(),
        ];
        for list in lists {
            let stored = request_headers_stored(&list, "evt_1");
            assert!(stored.starts_with('['), "{stored}");
            assert_eq!(request_headers_from(&stored, "evt_1"), list);
        }
    }
}

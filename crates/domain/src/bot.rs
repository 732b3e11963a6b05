//! Bots and their real-time endpoints (the real-time seed): what a valid
//! Create Bot request holds, and the envelope each endpoint receives.
//!
//! The envelope is built from stored parts (the fleet's `data` as raw JSON,
//! and the bot's and endpoint's ids and metadata), deterministically, so every
//! attempt of a delivery carries the same bytes.

use serde_json::value::RawValue;

use crate::ValidationError;
use crate::event::EventType;
use crate::target::TargetPolicy;
use crate::webhook::UrlRefused;

/// The ids and metadata of a bot, as they appear in every envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotContext {
    pub bot_id: String,
    /// The bot's metadata object from the Create Bot request, as JSON text.
    pub bot_metadata: String,
    pub recording_id: String,
    pub participant_events_id: String,
    pub transcript_id: String,
}

/// The events of a real-time endpoint: non-empty, known real-time event names,
/// without duplicates, in the order given. `field` is the JSON path for errors.
pub fn check_realtime_events(raw: &[String], field: &str) -> Result<Vec<EventType>, ValidationError> {
    if raw.is_empty() {
        return Err(ValidationError::new(field, "must list at least one event"));
    }
    let mut types = Vec::with_capacity(raw.len());
    for (i, name) in raw.iter().enumerate() {
        let t = EventType::parse(name).filter(|t| t.is_realtime()).ok_or_else(|| {
            ValidationError::new(
                format!("{field}[{i}]"),
                format!("unknown real-time event `{name}`; expected participant_events.* or transcript.*"),
            )
        })?;
        if !types.contains(&t) {
            types.push(t);
        }
    }
    Ok(types)
}

/// A real-time endpoint's URL, under the target rules, kept byte for byte.
pub fn check_realtime_url(raw: &str, field: &str, policy: TargetPolicy) -> Result<String, UrlRefused> {
    crate::target::check_url(raw, policy)
        .map(|_| raw.to_owned())
        .map_err(|reason| UrlRefused {
            field: field.to_owned(),
            reason,
        })
}

/// A meeting URL: an absolute http(s) URL.
pub fn check_meeting_url(raw: &str) -> Result<String, ValidationError> {
    crate::error::refuse_nul("meeting_url", raw)?;
    let url =
        url::Url::parse(raw.trim()).map_err(|_| ValidationError::new("meeting_url", "must be an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ValidationError::new("meeting_url", "must be an http or https URL"));
    }
    Ok(raw.trim().to_owned())
}

/// The body one real-time endpoint receives for one event: the seed's envelope.
pub fn realtime_body(
    event_type: EventType,
    data: &RawValue,
    endpoint_id: &str,
    endpoint_metadata: &str,
    bot: &BotContext,
) -> Vec<u8> {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let (stream_key, stream_id) = if event_type.is_transcript() {
        ("transcript", &bot.transcript_id)
    } else {
        ("participant_events", &bot.participant_events_id)
    };
    format!(
        r#"{{"event":"{event}","data":{{"data":{data},"realtime_endpoint":{{"id":{endpoint},"metadata":{endpoint_metadata}}},"{stream_key}":{{"id":{stream},"metadata":{{}}}},"recording":{{"id":{recording},"metadata":{{}}}},"bot":{{"id":{bot_id},"metadata":{bot_metadata}}}}}}}"#,
        event = event_type.as_str(),
        data = data.get(),
        endpoint = quote(endpoint_id),
        stream = quote(stream_id),
        recording = quote(&bot.recording_id),
        bot_id = quote(&bot.bot_id),
        bot_metadata = bot.bot_metadata,
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot() -> BotContext {
        BotContext {
            bot_id: "bot_1".into(),
            bot_metadata: r#"{"customer":"acme"}"#.into(),
            recording_id: "rec_1".into(),
            participant_events_id: "pe_1".into(),
            transcript_id: "tr_1".into(),
        }
    }

    #[test]
    fn participant_envelope_matches_the_contract() {
        let data = RawValue::from_string(
            r#"{"participant":{"id":7,"name":"Ada"},"timestamp":{"absolute":"t","relative":1.5}}"#.into(),
        )
        .unwrap();
        let body = realtime_body(EventType::ParticipantJoin, &data, "rte_1", "{}", &bot());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["event"], "participant_events.join");
        assert_eq!(v["data"]["data"]["participant"]["name"], "Ada");
        assert_eq!(
            v["data"]["realtime_endpoint"],
            serde_json::json!({"id": "rte_1", "metadata": {}})
        );
        assert_eq!(v["data"]["participant_events"]["id"], "pe_1");
        assert_eq!(v["data"]["recording"]["id"], "rec_1");
        assert_eq!(
            v["data"]["bot"],
            serde_json::json!({"id": "bot_1", "metadata": {"customer": "acme"}})
        );
        assert!(v["data"].get("transcript").is_none());
    }

    #[test]
    fn transcript_envelope_names_the_transcript() {
        let data = RawValue::from_string(r#"{"words":[]}"#.into()).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&realtime_body(EventType::TranscriptData, &data, "rte_1", "{}", &bot())).unwrap();
        assert_eq!(v["data"]["transcript"]["id"], "tr_1");
        assert!(v["data"].get("participant_events").is_none());
    }

    #[test]
    fn endpoint_events_must_be_known_real_time_events() {
        let field = "recording_config.realtime_endpoints[0].events";
        assert_eq!(check_realtime_events(&[], field).unwrap_err().field, field);
        assert!(check_realtime_events(&["meeting.completed".into()], field).is_err());
        assert_eq!(
            check_realtime_events(&["transcript.data".into(), "participant_events.join".into()], field).unwrap(),
            vec![EventType::TranscriptData, EventType::ParticipantJoin]
        );
    }
}

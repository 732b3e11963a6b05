//! The bodies Herald delivers, as types: `meeting.completed` for team
//! webhooks and the real-time envelope for bot endpoints.
//!
//! Herald passes what publishers send through untouched, and new fields may
//! appear at any level at any time (the contract's forward compatibility).
//! So every struct keeps the fields it does not know in `extra` instead of
//! refusing them, and fields Herald does not require are `Option`s. An event
//! type this version does not know parses as [`Event::Other`], not as an
//! error. The types hold only what Herald itself checks when it accepts a
//! publish, so a body Herald delivered always parses.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The `eventType` of the team-webhook event.
pub const MEETING_COMPLETED: &str = "meeting.completed";

/// Why a body could not be read as a Herald event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Not JSON, or a known event whose fields have the wrong types.
    #[error("the body is not a valid Herald event: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but an object with neither `eventType` nor `event`.
    #[error("the body has neither `eventType` nor `event`")]
    NotAnEvent,
}

/// A delivered body, told apart by its type field: team events carry
/// `eventType`, real-time events `event`. The known variants are boxed, as
/// they are large; their fields read through the box as usual.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Event {
    /// A team webhook's `meeting.completed` (contract §3.1).
    MeetingCompleted(Box<MeetingCompleted>),
    /// A real-time endpoint's envelope (contract §3.2), whatever its `event`.
    Realtime(Box<RealtimeEvent>),
    /// A team event of a type this crate does not know yet, kept whole.
    Other(Value),
}

impl Event {
    /// Parses a delivered body. Verify it first: see [`crate::Verifier`].
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        Self::from_value(serde_json::from_slice(body)?)
    }

    /// Reads an already parsed body.
    pub fn from_value(value: Value) -> Result<Self, PayloadError> {
        if let Some(event_type) = value.get("eventType").and_then(Value::as_str) {
            if event_type == MEETING_COMPLETED {
                return Ok(Self::MeetingCompleted(Box::new(serde_json::from_value(value)?)));
            }
            return Ok(Self::Other(value));
        }
        if value.get("event").is_some_and(Value::is_string) {
            return Ok(Self::Realtime(Box::new(serde_json::from_value(value)?)));
        }
        Err(PayloadError::NotAnEvent)
    }

    /// The event's type: `meeting.completed`, `participant_events.join`, ….
    pub fn event_type(&self) -> &str {
        match self {
            Self::MeetingCompleted(event) => &event.event_type,
            Self::Realtime(event) => &event.event,
            Self::Other(value) => value.get("eventType").and_then(Value::as_str).unwrap_or_default(),
        }
    }
}

/// Lets `Event` be the target of `serde_json::from_slice` and of
/// `VerifiedWebhook<Event>`, with the same rules as [`Event::parse`].
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(value).map_err(serde::de::Error::custom)
    }
}

/// `meeting.completed`, as delivered to a team webhook:
/// `{"id","eventType","createdAt","data"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeetingCompleted {
    /// The event id (`evt_…`), equal to the `webhook-id` header.
    pub id: String,
    /// Always `meeting.completed`.
    pub event_type: String,
    /// When Herald generated the event, in Unix milliseconds.
    pub created_at: i64,
    /// What the platform published, field for field.
    pub data: MeetingCompletedData,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeetingCompletedData {
    pub meeting: Meeting,
    pub organization: Organization,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets: Option<Assets>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meeting {
    /// Always present and non-empty.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// As the platform sent it, e.g. `2025-10-10T10:23:27.000Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_name: Option<String>,
    /// Left as JSON values: platforms send phone numbers, names or objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participants: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ats_record_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_private: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    pub account_id: String,
    pub team_id: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_items_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_notes: Option<Vec<DatabaseNote>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up_materials: Option<Vec<FollowUpMaterial>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseNote {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowUpMaterial {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txt_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdf_url: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The real-time envelope (contract §3.2): `{"event","data":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealtimeEvent {
    /// `participant_events.join`, `transcript.data`, ….
    pub event: String,
    pub data: RealtimeData,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RealtimeEvent {
    /// Whether this is a `transcript.*` event, which names a `transcript`
    /// where participant events name `participant_events`.
    pub fn is_transcript(&self) -> bool {
        self.event.starts_with("transcript.")
    }

    /// The stream the event belongs to: the participant-events stream or
    /// the transcript.
    pub fn stream(&self) -> Option<&Resource> {
        self.data.participant_events.as_ref().or(self.data.transcript.as_ref())
    }

    /// The bot fleet's `data` of a `participant_events.*` event, typed.
    pub fn participant_data(&self) -> Result<ParticipantEventData, serde_json::Error> {
        ParticipantEventData::deserialize(&self.data.data)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealtimeData {
    /// What the bot fleet sent as `data`, untouched: for participant events
    /// `participant` and `timestamp` (see [`RealtimeEvent::participant_data`]).
    pub data: Value,
    pub realtime_endpoint: Resource,
    /// Present on `participant_events.*` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_events: Option<Resource>,
    /// Present on `transcript.*` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<Resource>,
    pub recording: Resource,
    /// The bot, with the metadata of its Create Bot request.
    pub bot: Resource,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A bot, recording, stream or endpoint: a stable id and its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub id: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `data` of a participant event, as the real-time seed shapes it. Herald
/// does not check what the fleet sends, so every field is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantEventData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<Participant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<EventTimestamp>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    /// A number or a string, depending on the meeting platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_host: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventTimestamp {
    /// Wall-clock time, as the fleet formats it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute: Option<String>,
    /// Seconds since the recording started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative: Option<f64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The contract's §3.1 body, with fields a later publisher might add.
    const MEETING: &str = r#"{"id":"evt_1","eventType":"meeting.completed","createdAt":1765198584697,"data":{"meeting":{"id":"mtg_1","name":"Project Sync","startTime":"2025-10-10T10:23:27.000Z","ownerName":"Alex Rivers","participants":["+12345678900"],"atsRecordName":"First Last","isPrivate":false,"room":"4B"},"organization":{"accountId":"acc_1","teamId":"team_1"},"assets":{"transcriptionUrl":"https://a/t.txt","recordingUrl":"https://a/r.mp4","actionItemsUrl":"https://a/a.json","databaseNotes":[{"name":"Summary","note":"n"}],"followUpMaterials":[{"name":"Recap","txtUrl":"https://a/r.txt","pdfUrl":"https://a/r.pdf","pages":3}]},"future":{"x":[1,2]}},"deliveredVia":"herald"}"#;

    #[test]
    fn meeting_completed_parses_typed_and_keeps_unknown_fields() {
        let Event::MeetingCompleted(event) = Event::parse(MEETING.as_bytes()).unwrap() else {
            panic!("not a meeting.completed");
        };
        assert_eq!(event.id, "evt_1");
        assert_eq!(event.created_at, 1_765_198_584_697);
        assert_eq!(event.data.meeting.id, "mtg_1");
        assert_eq!(event.data.meeting.is_private, Some(false));
        assert_eq!(event.data.organization.team_id, "team_1");
        let assets = event.data.assets.as_ref().unwrap();
        assert_eq!(assets.database_notes.as_ref().unwrap()[0].note.as_deref(), Some("n"));
        assert_eq!(assets.follow_up_materials.as_ref().unwrap()[0].extra["pages"], 3);
        assert_eq!(event.data.meeting.extra["room"], "4B");
        assert_eq!(event.data.extra["future"], json!({"x": [1, 2]}));
        assert_eq!(event.extra["deliveredVia"], "herald");
        // Nothing is lost on the way back out.
        let original: Value = serde_json::from_str(MEETING).unwrap();
        assert_eq!(serde_json::to_value(&event).unwrap(), original);
    }

    #[test]
    fn only_the_required_fields_are_required() {
        let body = json!({"id": "evt_2", "eventType": "meeting.completed", "createdAt": 1,
            "data": {"meeting": {"id": "m", "name": null}, "organization": {"accountId": "a", "teamId": "t"}}});
        let event: Event = serde_json::from_value(body).unwrap();
        let Event::MeetingCompleted(event) = event else {
            panic!("not a meeting.completed")
        };
        assert_eq!(event.data.meeting.name, None);
        assert!(event.data.assets.is_none());
        let missing_team = json!({"id": "evt_2", "eventType": "meeting.completed", "createdAt": 1,
            "data": {"meeting": {"id": "m"}, "organization": {"accountId": "a"}}});
        assert!(Event::from_value(missing_team).is_err());
    }

    #[test]
    fn real_time_envelopes_parse_for_participants_and_transcripts() {
        let body = json!({"event": "participant_events.join", "data": {
            "data": {"participant": {"id": 7, "name": "Ada", "is_host": true, "platform": "zoom",
                                     "extra_data": {}, "email": "ada@example.com", "pronouns": "she"},
                     "timestamp": {"absolute": "2025-10-10T10:23:27Z", "relative": 1.5}},
            "realtime_endpoint": {"id": "rte_1", "metadata": {}},
            "participant_events": {"id": "pe_1", "metadata": {}},
            "recording": {"id": "rec_1", "metadata": {}},
            "bot": {"id": "bot_1", "metadata": {"customer": "acme"}}}});
        let event = Event::from_value(body.clone()).unwrap();
        assert_eq!(event.event_type(), "participant_events.join");
        let Event::Realtime(event) = event else {
            panic!("not real-time")
        };
        assert!(!event.is_transcript());
        assert_eq!(event.stream().unwrap().id, "pe_1");
        assert_eq!(event.data.bot.metadata["customer"], "acme");
        let data = event.participant_data().unwrap();
        let participant = data.participant.unwrap();
        assert_eq!(participant.id, Some(json!(7)));
        assert_eq!(participant.is_host, Some(true));
        assert_eq!(participant.extra["pronouns"], "she");
        assert_eq!(data.timestamp.unwrap().relative, Some(1.5));
        assert_eq!(serde_json::to_value(Event::Realtime(event)).unwrap(), body);

        let transcript = json!({"event": "transcript.data", "data": {"data": {"words": []},
            "realtime_endpoint": {"id": "rte_1", "metadata": {}}, "transcript": {"id": "tr_1", "metadata": {}},
            "recording": {"id": "rec_1", "metadata": {}}, "bot": {"id": "bot_1", "metadata": {}}}});
        let Event::Realtime(event) = Event::from_value(transcript).unwrap() else {
            panic!("not real-time")
        };
        assert!(event.is_transcript());
        assert_eq!(event.stream().unwrap().id, "tr_1");
    }

    #[test]
    fn unknown_team_event_types_are_kept_and_non_events_refused() {
        let later = json!({"id": "evt_3", "eventType": "meeting.started", "createdAt": 1, "data": {}});
        let event = Event::from_value(later.clone()).unwrap();
        assert_eq!(event, Event::Other(later));
        assert_eq!(event.event_type(), "meeting.started");
        assert!(matches!(
            Event::parse(br#"{"hello":"world"}"#),
            Err(PayloadError::NotAnEvent)
        ));
        assert!(matches!(Event::parse(b"not json"), Err(PayloadError::Json(_))));
    }
}

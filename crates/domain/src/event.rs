//! Event types, the validation of what publishers send, and the exact bytes
//! delivered for an event.
//!
//! A publisher's `data` is kept as the raw JSON text it sent: Herald checks
//! the fields it needs (and the types of the ones it knows) but passes the
//! object through untouched, unknown fields included, so receivers get what
//! the platform produced, byte for byte.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ValidationError;

/// Every event type Herald knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    MeetingCompleted,
    ParticipantJoin,
    ParticipantLeave,
    ParticipantUpdate,
    ParticipantSpeechOn,
    ParticipantSpeechOff,
    ParticipantWebcamOn,
    ParticipantWebcamOff,
    ParticipantScreenshareOn,
    ParticipantScreenshareOff,
    ParticipantChatMessage,
    TranscriptData,
    TranscriptPartialData,
}

impl EventType {
    pub const ALL: [EventType; 13] = [
        Self::MeetingCompleted,
        Self::ParticipantJoin,
        Self::ParticipantLeave,
        Self::ParticipantUpdate,
        Self::ParticipantSpeechOn,
        Self::ParticipantSpeechOff,
        Self::ParticipantWebcamOn,
        Self::ParticipantWebcamOff,
        Self::ParticipantScreenshareOn,
        Self::ParticipantScreenshareOff,
        Self::ParticipantChatMessage,
        Self::TranscriptData,
        Self::TranscriptPartialData,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MeetingCompleted => "meeting.completed",
            Self::ParticipantJoin => "participant_events.join",
            Self::ParticipantLeave => "participant_events.leave",
            Self::ParticipantUpdate => "participant_events.update",
            Self::ParticipantSpeechOn => "participant_events.speech_on",
            Self::ParticipantSpeechOff => "participant_events.speech_off",
            Self::ParticipantWebcamOn => "participant_events.webcam_on",
            Self::ParticipantWebcamOff => "participant_events.webcam_off",
            Self::ParticipantScreenshareOn => "participant_events.screenshare_on",
            Self::ParticipantScreenshareOff => "participant_events.screenshare_off",
            Self::ParticipantChatMessage => "participant_events.chat_message",
            Self::TranscriptData => "transcript.data",
            Self::TranscriptPartialData => "transcript.partial_data",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }

    /// Types a team webhook may subscribe to (the seed: only `meeting.completed`).
    pub fn is_team_webhook_type(self) -> bool {
        self == Self::MeetingCompleted
    }

    /// Types published by the bot fleet to real-time endpoints.
    pub fn is_realtime(self) -> bool {
        !self.is_team_webhook_type()
    }

    /// Real-time transcript events carry a `transcript` object where the
    /// participant events carry `participant_events`.
    pub fn is_transcript(self) -> bool {
        matches!(self, Self::TranscriptData | Self::TranscriptPartialData)
    }
}

/// Where a `meeting.completed` event goes, read from its `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingRouting {
    pub account_id: String,
    pub team_id: String,
    pub meeting_id: String,
}

/// The fields of `meeting.completed` data that Herald knows. Unknown fields
/// are ignored here and kept in the raw text; known optional fields are
/// checked for type only, so a receiver can rely on them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MeetingCompletedData {
    meeting: Meeting,
    organization: Organization,
    #[serde(default)]
    assets: Option<Assets>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "fields are read by serde only, to check their types")]
struct Meeting {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    owner_name: Option<String>,
    #[serde(default)]
    participants: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    ats_record_name: Option<String>,
    #[serde(default)]
    is_private: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Organization {
    account_id: String,
    team_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "fields are read by serde only, to check their types")]
struct Assets {
    #[serde(default)]
    transcription_url: Option<String>,
    #[serde(default)]
    recording_url: Option<String>,
    #[serde(default)]
    action_items_url: Option<String>,
    #[serde(default)]
    database_notes: Option<Vec<DatabaseNote>>,
    #[serde(default)]
    follow_up_materials: Option<Vec<FollowUpMaterial>>,
}

#[derive(Deserialize)]
#[allow(dead_code, reason = "fields are read by serde only, to check their types")]
struct DatabaseNote {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "fields are read by serde only, to check their types")]
struct FollowUpMaterial {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    txt_url: Option<String>,
    #[serde(default)]
    pdf_url: Option<String>,
}

/// Checks the `data` of a `meeting.completed` publish and reads its routing.
pub fn check_meeting_completed(data: &RawValue) -> Result<MeetingRouting, ValidationError> {
    let mut de = serde_json::Deserializer::from_str(data.get());
    let parsed: MeetingCompletedData = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "data".to_owned()
        } else {
            format!("data.{path}")
        };
        ValidationError::new(field, strip_position(&e.into_inner().to_string()))
    })?;
    // The third element: whether the publish is routed by the value. Those
    // are looked up as text and may hold no NUL; the rest of `data`,
    // `meeting.id` included, is kept as sent.
    let required = [
        ("data.meeting.id", &parsed.meeting.id, false),
        ("data.organization.accountId", &parsed.organization.account_id, true),
        ("data.organization.teamId", &parsed.organization.team_id, true),
    ];
    for (field, value, routed) in required {
        if value.trim().is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        if routed {
            crate::error::refuse_nul(field, value)?;
        }
    }
    let _ = parsed.assets;
    Ok(MeetingRouting {
        account_id: parsed.organization.account_id,
        team_id: parsed.organization.team_id,
        meeting_id: parsed.meeting.id,
    })
}

/// serde's messages end in "at line 1 column 42", which means nothing to a
/// person who sent a one-line body; the field path says where instead.
pub fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The exact body delivered for a team-webhook event:
/// `{"id","eventType","createdAt","data"}` with `data` as the publisher sent it.
pub fn team_event_body(id: &str, event_type: EventType, created_at_ms: i64, data: &RawValue) -> Vec<u8> {
    let id_json = serde_json::to_string(id).unwrap_or_default();
    let mut body = Vec::with_capacity(data.get().len() + id_json.len() + 80);
    body.extend_from_slice(b"{\"id\":");
    body.extend_from_slice(id_json.as_bytes());
    body.extend_from_slice(b",\"eventType\":\"");
    body.extend_from_slice(event_type.as_str().as_bytes());
    body.extend_from_slice(b"\",\"createdAt\":");
    body.extend_from_slice(created_at_ms.to_string().as_bytes());
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(data.get().as_bytes());
    body.push(b'}');
    body
}

/// The `data` of a test event that a team sends to one of its webhooks from
/// the dashboard: the seed's sample payload, routed to the team, with a fresh
/// meeting id and names that say it is a test.
pub fn sample_meeting_completed(account_id: &str, team_id: &str, meeting_id: &str) -> String {
    serde_json::json!({
        "meeting": {
            "id": meeting_id,
            "name": "Test event: Project Sync",
            "startTime": "2025-10-10T10:23:27.000Z",
            "ownerName": "Alex Rivers",
            "participants": ["+12345678900"],
            "atsRecordName": "First Last",
            "isPrivate": false
        },
        "organization": {"accountId": account_id, "teamId": team_id},
        "assets": {
            "transcriptionUrl": "https://api.provider.com/v1/transcripts/abc123.txt",
            "recordingUrl": "https://api.provider.com/v1/recordings/abc123.mp4",
            "actionItemsUrl": "https://api.provider.com/v1/actions/abc123.json",
            "databaseNotes": [{"name": "Summary", "note": "This is a test event sent from the Herald dashboard."}],
            "followUpMaterials": [{
                "name": "Meeting Recap",
                "txtUrl": "https://api.provider.com/docs/recap.txt",
                "pdfUrl": "https://api.provider.com/docs/recap.pdf"
            }]
        }
    })
    .to_string()
}

/// Whether two publishes with the same id carry the same event: same type and
/// the same `data` as JSON values (key order and spacing aside).
pub fn same_payload(event_type_a: &str, data_a: &str, event_type_b: &str, data_b: &str) -> bool {
    if event_type_a != event_type_b {
        return false;
    }
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    match (parse(data_a), parse(data_b)) {
        (Some(a), Some(b)) => a == b,
        _ => data_a == data_b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    const SAMPLE: &str = r#"{"meeting":{"id":"mtg_1","name":"Sync","participants":["+1"],"isPrivate":false,"extra":1},"organization":{"accountId":"acc_1","teamId":"team_1"},"assets":{"databaseNotes":[{"name":"S","note":"n"}]},"future":{"x":[1,2]}}"#;

    #[test]
    fn sample_is_accepted_and_routed() {
        let routing = check_meeting_completed(&raw(SAMPLE)).unwrap();
        assert_eq!(routing.team_id, "team_1");
        assert_eq!(routing.account_id, "acc_1");
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let err =
            check_meeting_completed(&raw(r#"{"meeting":{"id":"m"},"organization":{"accountId":"a"}}"#)).unwrap_err();
        assert_eq!(err.field, "data.organization");
        assert!(err.message.contains("teamId"), "{err}");
        let err = check_meeting_completed(&raw(
            r#"{"meeting":{"id":"m","isPrivate":"no"},"organization":{"accountId":"a","teamId":"t"}}"#,
        ))
        .unwrap_err();
        assert_eq!(err.field, "data.meeting.isPrivate");
        let err = check_meeting_completed(&raw(
            r#"{"meeting":{"id":" "},"organization":{"accountId":"a","teamId":"t"}}"#,
        ))
        .unwrap_err();
        assert_eq!(err.field, "data.meeting.id");
        let err = check_meeting_completed(&raw("[]")).unwrap_err();
        assert_eq!(err.field, "data");
    }

    #[test]
    fn body_keeps_data_byte_for_byte() {
        let body = team_event_body("evt_1", EventType::MeetingCompleted, 1_765_198_584_697, &raw(SAMPLE));
        let expected =
            format!(r#"{{"id":"evt_1","eventType":"meeting.completed","createdAt":1765198584697,"data":{SAMPLE}}}"#);
        assert_eq!(String::from_utf8(body).unwrap(), expected);
    }

    #[test]
    fn payload_equality_ignores_formatting_only() {
        assert!(same_payload(
            "meeting.completed",
            r#"{"a":1,"b":2}"#,
            "meeting.completed",
            r#"{ "b":2, "a":1 }"#
        ));
        assert!(!same_payload(
            "meeting.completed",
            r#"{"a":1}"#,
            "meeting.completed",
            r#"{"a":2}"#
        ));
    }

    #[test]
    fn the_test_event_sample_is_a_valid_meeting_completed() {
        let data = sample_meeting_completed("acc_1", "team_1", "mtg_test");
        let routing = check_meeting_completed(&raw(&data)).unwrap();
        assert_eq!(routing.team_id, "team_1");
        assert_eq!(routing.account_id, "acc_1");
        assert_eq!(routing.meeting_id, "mtg_test");
    }

    #[test]
    fn event_types_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("meeting.started"), None);
    }
}

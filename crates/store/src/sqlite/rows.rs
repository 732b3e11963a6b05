//! Column lists and row mapping shared by the queries of this backend.

use super::*;

pub(super) const ENDPOINT_COLUMNS: &str = "id, team_id, name, url, event_types, status, secret, created_at, bot_id, metadata, \
     previous_secret, previous_secret_expires_at, deactivated_reason, failing_since";

pub(super) const TEAM_KEY_COLUMNS: &str = "id, team_id, name, prefix, created_at, last_used_at";

pub(super) fn team_key_from_row(r: &Row<'_>) -> rusqlite::Result<TeamKey> {
    Ok(TeamKey {
        id: KeyId::from_stored(r.get(0)?),
        team_id: TeamId::from_stored(r.get(1)?),
        name: r.get(2)?,
        prefix: r.get(3)?,
        created_at: r.get(4)?,
        last_used_at: r.get(5)?,
    })
}

pub(super) const BOT_COLUMNS: &str =
    "id, team_id, meeting_url, metadata, recording_id, participant_events_id, transcript_id, created_at";

pub(super) fn bot_from_row(r: &Row<'_>) -> rusqlite::Result<Bot> {
    Ok(Bot {
        id: BotId::from_stored(r.get(0)?),
        team_id: TeamId::from_stored(r.get(1)?),
        meeting_url: r.get(2)?,
        metadata: r.get(3)?,
        recording_id: r.get(4)?,
        participant_events_id: r.get(5)?,
        transcript_id: r.get(6)?,
        created_at: r.get(7)?,
        endpoints: Vec::new(),
    })
}

pub(super) fn endpoint_from_row(r: &Row<'_>) -> rusqlite::Result<Endpoint> {
    let types: String = r.get(4)?;
    Ok(Endpoint {
        id: EndpointId::from_stored(r.get(0)?),
        team_id: TeamId::from_stored(r.get(1)?),
        bot_id: r.get::<_, Option<String>>(8)?.map(BotId::from_stored),
        metadata: r.get(9)?,
        name: r.get(2)?,
        url: r.get(3)?,
        event_types: event_types_from(&types),
        status: {
            let raw = r.get_ref(5)?.as_str()?;
            EndpointStatus::parse(raw).ok_or_else(|| bad_column(format!("unknown endpoint status `{raw}`")))?
        },
        secret: secret_from(r.get_ref(6)?.as_str()?)?,
        previous_secret: previous_secret_from(r, 10)?,
        deactivated_reason: r.get(12)?,
        failing_since: r.get(13)?,
        created_at: r.get(7)?,
    })
}

pub(super) const ATTEMPT_COLUMNS: &str = "a.seq, a.id, a.endpoint_id, a.event_id, a.event_type, a.attempt, a.timestamp, a.status, \
     a.duration_ms, a.request_url, a.request_headers, a.response_status, a.response_headers, a.error, a.manual";

pub(super) fn attempt_from_row(r: &Row<'_>) -> rusqlite::Result<Attempt> {
    let response_status: Option<u16> = r.get(11)?;
    let response_headers: Option<String> = r.get(12)?;
    let response_body: Option<Vec<u8>> = r.get(15)?;
    let request_body: Option<Vec<u8>> = r.get(16)?;
    let event_id: String = r.get(3)?;
    Ok(Attempt {
        seq: r.get(0)?,
        id: AttemptId::from_stored(r.get(1)?),
        endpoint_id: EndpointId::from_stored(r.get(2)?),
        request_headers: request_headers_from(&r.get::<_, String>(10)?, &event_id),
        event_id: EventId::from_stored(event_id),
        event_type: event_type_from(r.get_ref(4)?.as_str()?)?,
        attempt: r.get(5)?,
        timestamp_ms: r.get(6)?,
        status: {
            let raw = r.get_ref(7)?.as_str()?;
            AttemptStatus::parse(raw).ok_or_else(|| bad_column(format!("unknown attempt status `{raw}`")))?
        },
        duration_ms: r.get(8)?,
        request_url: r.get(9)?,
        request_body: request_body.map(Bytes::from),
        response: response_status.map(|status| ResponseRecord {
            status,
            headers: response_headers.as_deref().map(headers_from).unwrap_or_default(),
            body: response_body.unwrap_or_default(),
        }),
        error: r.get(13)?,
        manual: r.get(14)?,
    })
}

pub(super) fn exists(c: &Connection, sql: &str, arg: &str) -> StoreResult<bool> {
    c.query_row(sql, [arg], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
        .map_err(internal)
}

/// Stored values were written by this crate from the same enums; one that
/// does not parse means a newer binary or a damaged file, and is an error.
pub(super) fn event_type_from(raw: &str) -> rusqlite::Result<EventType> {
    EventType::parse(raw).ok_or_else(|| bad_column(format!("unknown event type `{raw}`")))
}

/// The previous secret in columns `at` and `at + 1`.
pub(super) fn previous_secret_from(r: &Row<'_>, at: usize) -> rusqlite::Result<Option<PreviousSecret>> {
    codec::previous_secret(r.get_ref(at)?.as_str_or_null()?, r.get(at + 1)?).map_err(bad_column)
}

pub(super) fn secret_from(raw: &str) -> rusqlite::Result<Secret> {
    Secret::parse(raw).ok_or_else(|| bad_column("stored secret is not a whsec_ secret".into()))
}

pub(super) fn bad_column(why: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, why.into())
}

/// A webhook's hourly stats, in [`stats_from_row`] order.
pub(super) const STATS_COLUMNS: &str =
    "hour, success, retrying, failed, max_ms, d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, d12, d13, d14, d15";

pub(super) fn stats_from_row(r: &Row<'_>) -> rusqlite::Result<HourStats> {
    let mut durations = [0; health::DURATION_BUCKETS];
    for (i, bucket) in durations.iter_mut().enumerate() {
        *bucket = r.get(5 + i)?;
    }
    Ok(HourStats {
        start_ms: r.get(0)?,
        success: r.get(1)?,
        retrying: r.get(2)?,
        failed: r.get(3)?,
        max_ms: r.get(4)?,
        durations,
    })
}

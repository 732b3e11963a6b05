//! Column lists and row mapping shared by the queries of this backend.

use super::*;

pub(super) const ENDPOINT_COLUMNS: &str = "id, team_id, name, url, event_types, status, secret, created_at, bot_id, metadata, \
     previous_secret, previous_secret_expires_at, deactivated_reason, failing_since";

pub(super) fn endpoint_from_row(r: &Row) -> StoreResult<Endpoint> {
    let status: &str = r.get(5);
    Ok(Endpoint {
        id: EndpointId::from_stored(r.get(0)),
        team_id: TeamId::from_stored(r.get(1)),
        name: r.get(2),
        url: r.get(3),
        event_types: event_types_from(r.get(4)),
        status: EndpointStatus::parse(status)
            .ok_or_else(|| StoreError::Internal(format!("unknown endpoint status `{status}`")))?,
        secret: secret_from(r.get(6))?,
        previous_secret: previous_secret_from(r, 10)?,
        deactivated_reason: r.get(12),
        failing_since: r.get(13),
        created_at: r.get(7),
        bot_id: r.get::<_, Option<String>>(8).map(BotId::from_stored),
        metadata: r.get(9),
    })
}

pub(super) const TEAM_KEY_COLUMNS: &str = "id, team_id, name, prefix, created_at, last_used_at";

pub(super) fn team_key_from_row(r: &Row) -> TeamKey {
    TeamKey {
        id: KeyId::from_stored(r.get(0)),
        team_id: TeamId::from_stored(r.get(1)),
        name: r.get(2),
        prefix: r.get(3),
        created_at: r.get(4),
        last_used_at: r.get(5),
    }
}

pub(super) const BOT_COLUMNS: &str =
    "id, team_id, meeting_url, metadata, recording_id, participant_events_id, transcript_id, created_at";

pub(super) fn bot_from_row(r: &Row) -> Bot {
    Bot {
        id: BotId::from_stored(r.get(0)),
        team_id: TeamId::from_stored(r.get(1)),
        meeting_url: r.get(2),
        metadata: r.get(3),
        recording_id: r.get(4),
        participant_events_id: r.get(5),
        transcript_id: r.get(6),
        created_at: r.get(7),
        endpoints: Vec::new(),
    }
}

pub(super) const CLAIM_COLUMNS: &str = "d.seq, d.team_id, d.event_id, v.event_type, COALESCE(d.body, v.body), d.endpoint_id, e.url, e.secret, d.attempts, \
     d.next_attempt_at, e.previous_secret, e.previous_secret_expires_at, d.created_at";

pub(super) fn claimed_from_row(r: &Row) -> StoreResult<ClaimedDelivery> {
    Ok(ClaimedDelivery {
        id: DeliveryId(r.get(0)),
        team_id: TeamId::from_stored(r.get(1)),
        event_id: EventId::from_stored(r.get(2)),
        event_type: event_type_from(r.get(3))?,
        body: Bytes::from(r.get::<_, Vec<u8>>(4)),
        endpoint_id: EndpointId::from_stored(r.get(5)),
        url: r.get(6),
        secret: secret_from(r.get(7))?,
        previous_secret: previous_secret_from(r, 10)?.map(Box::new),
        attempt: r.get::<_, i32>(8) as u32 + 1,
        due_ms: r.get(9),
        created_ms: r.get(12),
    })
}

pub(super) const ATTEMPT_COLUMNS: &str = "a.seq, a.id, a.endpoint_id, a.event_id, a.event_type, a.attempt, a.timestamp, a.status, \
     a.duration_ms, a.request_url, a.request_headers, a.response_status, a.response_headers, a.error, a.manual";

pub(super) fn attempt_from_row(r: &Row) -> StoreResult<Attempt> {
    let status: &str = r.get(7);
    let response_status: Option<i32> = r.get(11);
    let response_headers: Option<String> = r.get(12);
    let response_body: Option<Vec<u8>> = r.get(15);
    let request_body: Option<Vec<u8>> = r.get(16);
    Ok(Attempt {
        seq: r.get(0),
        id: AttemptId::from_stored(r.get(1)),
        endpoint_id: EndpointId::from_stored(r.get(2)),
        request_headers: request_headers_from(r.get(10), r.get(3)),
        event_id: EventId::from_stored(r.get(3)),
        event_type: event_type_from(r.get(4))?,
        attempt: r.get::<_, i32>(5) as u32,
        timestamp_ms: r.get(6),
        status: AttemptStatus::parse(status)
            .ok_or_else(|| StoreError::Internal(format!("unknown attempt status `{status}`")))?,
        duration_ms: r.get(8),
        request_url: r.get(9),
        request_body: request_body.map(Bytes::from),
        response: response_status.map(|status| ResponseRecord {
            status: status as u16,
            headers: response_headers.as_deref().map(headers_from).unwrap_or_default(),
            body: response_body.unwrap_or_default(),
        }),
        error: r.get(13),
        manual: r.get(14),
    })
}

pub(super) fn event_type_from(raw: &str) -> StoreResult<EventType> {
    EventType::parse(raw).ok_or_else(|| StoreError::Internal(format!("unknown event type `{raw}`")))
}

/// The previous secret in columns `at` and `at + 1`.
pub(super) fn previous_secret_from(r: &Row, at: usize) -> StoreResult<Option<PreviousSecret>> {
    codec::previous_secret(r.get(at), r.get(at + 1)).map_err(StoreError::Internal)
}

pub(super) fn secret_from(raw: &str) -> StoreResult<Secret> {
    Secret::parse(raw).ok_or_else(|| StoreError::Internal("stored secret is not a whsec_ secret".into()))
}

/// A webhook's hourly stats, in [`stats_from_row`] order.
pub(super) const STATS_COLUMNS: &str =
    "hour, success, retrying, failed, max_ms, d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, d12, d13, d14, d15";

pub(super) fn stats_from_row(r: &Row) -> HourStats {
    let mut durations = [0; health::DURATION_BUCKETS];
    for (i, bucket) in durations.iter_mut().enumerate() {
        *bucket = r.get(5 + i);
    }
    HourStats {
        start_ms: r.get(0),
        success: r.get(1),
        retrying: r.get(2),
        failed: r.get(3),
        max_ms: r.get(4),
        durations,
    }
}

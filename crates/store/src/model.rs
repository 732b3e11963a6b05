//! The records the store reads and writes. Plain data with domain types; the
//! string forms of enums appear only in the SQL code.

use bytes::Bytes;
use herald_domain::attempt::AttemptStatus;
use herald_domain::event::EventType;
use herald_domain::ids::{AccountId, AttemptId, BotId, DeliveryId, EndpointId, EventId, KeyId, TeamId};
use herald_domain::signing::Secret;
use herald_domain::webhook::EndpointStatus;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: TeamId,
    pub account_id: AccountId,
    pub name: String,
    pub created_at: i64,
}

/// A team key as listed: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamKey {
    pub id: KeyId,
    pub team_id: TeamId,
    pub name: Option<String>,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// What a presented team key opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    pub team: TeamId,
    pub key: KeyId,
    pub last_used_at: Option<i64>,
}

/// A team webhook or a bot's real-time endpoint: where deliveries go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub team_id: TeamId,
    /// The bot a real-time endpoint belongs to; `None` for webhooks.
    pub bot_id: Option<BotId>,
    /// Empty for real-time endpoints, which have no name in the seed.
    pub name: String,
    /// Exactly as given; deliveries go to these bytes.
    pub url: String,
    pub event_types: Vec<EventType>,
    pub status: EndpointStatus,
    pub secret: Secret,
    /// A JSON object, echoed in real-time envelopes; `{}` for webhooks.
    pub metadata: String,
    pub created_at: i64,
}

/// A bot of the real-time seed, with its real-time endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bot {
    pub id: BotId,
    pub team_id: TeamId,
    pub meeting_url: String,
    /// The Create Bot request's metadata object, as JSON text.
    pub metadata: String,
    pub recording_id: String,
    pub participant_events_id: String,
    pub transcript_id: String,
    pub created_at: i64,
    pub endpoints: Vec<Endpoint>,
}

impl Bot {
    /// The bot's ids and metadata as every real-time envelope carries them.
    pub fn envelope_context(&self) -> herald_domain::bot::BotContext {
        herald_domain::bot::BotContext {
            bot_id: self.id.as_str().to_owned(),
            bot_metadata: self.metadata.clone(),
            recording_id: self.recording_id.clone(),
            participant_events_id: self.participant_events_id.clone(),
            transcript_id: self.transcript_id.clone(),
        }
    }
}

/// One event from the bot fleet, validated.
#[derive(Debug, Clone)]
pub struct NewBotEvent {
    pub id: EventId,
    pub event_type: EventType,
    pub created_at: i64,
    /// The fleet's `data`, raw JSON.
    pub data: String,
}

/// What publishing a batch of bot events came to.
#[derive(Debug)]
pub enum BotPublishOutcome {
    /// Stored, in order; the deliveries made (leased to the caller), in order.
    Created {
        events: Vec<StoredEvent>,
        deliveries: Vec<ClaimedDelivery>,
    },
    UnknownBot,
}

/// A change to a webhook; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub name: Option<String>,
    pub url: Option<String>,
    pub event_types: Option<Vec<EventType>>,
    pub status: Option<EndpointStatus>,
}

/// An event to store, already validated and with its delivered body built.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    /// The publisher named the id: a repeat is an idempotent replay.
    pub id_given: bool,
    pub team_id: String,
    pub account_id: String,
    pub event_type: EventType,
    pub created_at: i64,
    /// The publisher's `data`, as raw JSON, for idempotency comparison.
    pub data: String,
    /// The exact bytes every attempt sends.
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: EventId,
    pub event_type: EventType,
    pub created_at: i64,
}

/// What a publish came to.
#[derive(Debug)]
pub enum PublishOutcome {
    /// Stored now, with the deliveries it made (already leased to the caller).
    Created {
        event: StoredEvent,
        deliveries: Vec<ClaimedDelivery>,
    },
    /// The same id with the same payload was stored before: nothing new.
    Existing(StoredEvent),
    /// The same id was stored before with a different payload.
    Conflict,
    /// `data.organization.teamId` names no team.
    UnknownTeam,
    /// The team exists but belongs to another account than the one named.
    AccountMismatch,
}

/// A claim on a delivery, held until `until_ms` by `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub node: String,
    pub until_ms: i64,
}

/// Everything the engine needs to make the next attempt of a delivery.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: DeliveryId,
    pub team_id: TeamId,
    pub event_id: EventId,
    pub event_type: EventType,
    pub body: Bytes,
    pub endpoint_id: EndpointId,
    pub url: String,
    pub secret: Secret,
    /// The number the next attempt will have (1 for a fresh delivery).
    pub attempt: u32,
    /// When it was due (its `next_attempt_at`, Unix ms); 0 for a fresh
    /// delivery, which is due the moment it is made.
    pub due_ms: i64,
}

impl ClaimedDelivery {
    /// A delivery just made for `endpoint`, before its first attempt.
    pub fn fresh(id: DeliveryId, endpoint: &Endpoint, event_id: EventId, event_type: EventType, body: Bytes) -> Self {
        Self {
            id,
            team_id: endpoint.team_id.clone(),
            event_id,
            event_type,
            body,
            endpoint_id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            secret: endpoint.secret.clone(),
            attempt: 1,
            due_ms: 0,
        }
    }
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryNext {
    Succeeded,
    RetryAt(i64),
    Failed,
    /// Never sent: its endpoint failed first.
    Dropped,
}

/// One attempt, as the engine records it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub id: AttemptId,
    pub delivery: DeliveryId,
    pub team_id: TeamId,
    pub endpoint_id: EndpointId,
    pub event_id: EventId,
    pub event_type: EventType,
    pub attempt: u32,
    pub timestamp_ms: i64,
    pub status: AttemptStatus,
    pub duration_ms: i64,
    pub request_url: String,
    pub request_headers: Vec<(String, String)>,
    pub response: Option<ResponseRecord>,
    pub error: Option<String>,
    pub next: DeliveryNext,
    /// Keep the delivery claimed until then instead of releasing it: a
    /// real-time retry waits in this process's memory, holding its place in
    /// line, and must not be claimed by anyone else meanwhile.
    pub keep_lease_until: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRecord {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// At most 64 KiB.
    pub body: Vec<u8>,
}

/// Which attempts to list.
#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    pub status: Option<AttemptStatus>,
    pub event_id: Option<EventId>,
    /// Only attempts after this place in the newest-first order (from a cursor).
    pub before: Option<herald_domain::cursor::Cursor>,
    pub limit: usize,
}

/// An attempt as read back from the log.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Position in the log, for cursors.
    pub seq: i64,
    pub id: AttemptId,
    pub endpoint_id: EndpointId,
    pub event_id: EventId,
    pub event_type: EventType,
    pub attempt: u32,
    pub timestamp_ms: i64,
    pub status: AttemptStatus,
    pub duration_ms: i64,
    pub request_url: String,
    pub request_headers: Vec<(String, String)>,
    /// Only filled by `get_attempt`.
    pub request_body: Option<Bytes>,
    pub response: Option<ResponseRecord>,
    pub error: Option<String>,
    /// The delivery was asked for by a person (a resend or a test event from
    /// the dashboard), not made by a publish.
    pub manual: bool,
}

/// A signed-in dashboard session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardSession {
    /// The only team this session may see.
    pub team_id: TeamId,
    pub expires_at: i64,
}

/// What asking for a manual delivery (a resend, a test event) came to.
#[derive(Debug)]
pub enum ManualOutcome {
    /// Stored: one new delivery, marked manual, leased to the caller.
    Created(ClaimedDelivery),
    /// No such webhook in this team.
    UnknownWebhook,
    /// No such event in this team.
    UnknownEvent,
    /// The event is a real-time bot event, which webhooks do not take.
    NotAWebhookEvent,
    /// The webhook is deactivated: nothing may be delivered to it.
    Deactivated,
}

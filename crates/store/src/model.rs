//! The records the store reads and writes. Plain data with domain types; the
//! string forms of enums appear only in the SQL code.

use bytes::Bytes;
use herald_domain::attempt::AttemptStatus;
use herald_domain::event::EventType;
use herald_domain::ids::{AccountId, AttemptId, BotId, DeliveryId, EndpointId, EventId, KeyId, RecoveryId, TeamId};
use herald_domain::signing::{PreviousSecret, Secret};
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
    /// The secret before the last rotation, while it still signs too.
    pub previous_secret: Option<PreviousSecret>,
    /// Why Herald deactivated it (a 410, sustained failure), for people;
    /// `None` when it is active or a person deactivated it.
    pub deactivated_reason: Option<String>,
    /// When its first failed delivery after its last success happened, while
    /// every delivery since has failed; `None` when it is healthy.
    pub failing_since: Option<i64>,
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
    /// Signs too while its grace lasts (a rotation, contract §4.2). Boxed:
    /// rarely there, and every delivery held in memory carries the field.
    pub previous_secret: Option<Box<PreviousSecret>>,
    /// The number the next attempt will have (1 for a fresh delivery).
    pub attempt: u32,
    /// When it was due (its `next_attempt_at`, Unix ms); 0 for a fresh
    /// delivery, which is due the moment it is made.
    pub due_ms: i64,
    /// When the delivery was made (Unix ms): its event's acceptance for a
    /// publish, the request for a resend or recover. Delivery latency
    /// counts from it.
    pub created_ms: i64,
}

impl ClaimedDelivery {
    /// A delivery just made for `endpoint`, before its first attempt.
    pub fn fresh(
        id: DeliveryId,
        endpoint: &Endpoint,
        event_id: EventId,
        event_type: EventType,
        body: Bytes,
        created_ms: i64,
    ) -> Self {
        Self {
            id,
            team_id: endpoint.team_id.clone(),
            event_id,
            event_type,
            body,
            endpoint_id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            secret: endpoint.secret.clone(),
            previous_secret: endpoint.previous_secret.clone().map(Box::new),
            attempt: 1,
            due_ms: 0,
            created_ms,
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
    /// What the attempt does to its webhook beside the log (contract §4.3).
    pub deactivate: Option<Deactivation>,
}

/// When a recorded attempt deactivates its webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deactivation {
    /// At once, for this reason (the endpoint answered 410 Gone).
    Now(String),
    /// If every delivery to it has failed since at or before `by_ms` (its
    /// first failed delivery after its last success), for this reason.
    FailingSince { by_ms: i64, reason: String },
}

/// What recording an attempt did beyond the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The attempt's webhook was deactivated by the batch that recorded it:
    /// whatever is queued for it must stop.
    pub deactivated: bool,
}

/// How many duration buckets an hour of stats keeps.
pub const DURATION_BUCKETS: usize = 16;

/// One hour of a webhook's attempts (contract §4.3 `stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourStats {
    /// The hour's start, Unix ms.
    pub start_ms: i64,
    pub success: i64,
    pub retrying: i64,
    pub failed: i64,
    /// Attempt durations counted in [`DURATION_BUCKETS`] buckets, whose
    /// bounds the store's health accounting sets.
    pub durations: [i64; DURATION_BUCKETS],
    /// The longest attempt of the hour, ms.
    pub max_ms: i64,
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

/// A recover (contract §4.1): the events of a webhook whose latest delivery
/// to it failed, created in `[since_ms, until_ms)`, delivered again. The
/// store keeps the work, and where it has got to, so that a recover of any
/// size answers at once and survives a restart or a node's loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub id: RecoveryId,
    pub team_id: TeamId,
    pub endpoint_id: EndpointId,
    pub since_ms: i64,
    pub until_ms: i64,
    /// How many events it will send, counted when it was asked for.
    pub total: i64,
    /// How many deliveries it has made so far.
    pub made: i64,
    pub created_at: i64,
    /// When its last delivery was made; `None` while it runs.
    pub finished_at: Option<i64>,
}

/// Which events a recover looks at: those created in `[since_ms, until_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoverWindow {
    pub since_ms: i64,
    pub until_ms: i64,
}

impl RecoverWindow {
    /// A window that can hold events; `Err` names the bound at fault and why.
    pub fn new(since_ms: i64, until_ms: i64) -> Result<Self, (&'static str, &'static str)> {
        if since_ms < 0 {
            return Err(("since", "must be a Unix time in milliseconds"));
        }
        if until_ms <= since_ms {
            return Err(("until", "must be after `since`"));
        }
        Ok(Self { since_ms, until_ms })
    }
}

/// What asking for a recover came to.
#[derive(Debug)]
pub enum RecoverOutcome {
    Created(Recovery),
    UnknownWebhook,
    /// A deactivated webhook is not recovered: activate it first.
    Deactivated,
    /// A recover of this webhook is still running: one at a time, so that
    /// no event is sent twice.
    Running,
}

/// A recover's next deliveries, leased to the caller, and whether it has
/// made its last one.
#[derive(Debug)]
pub struct RecoverChunk {
    pub deliveries: Vec<ClaimedDelivery>,
    pub finished: bool,
}

/// What one batch of retention did ([`crate::Retention::prune_events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Events deleted, with their deliveries and attempts.
    pub events: usize,
    /// Old events kept because a delivery of theirs is still pending.
    pub kept: usize,
    /// Where the next batch starts: the position of the last event looked at.
    pub after: i64,
    /// Older events may remain after `after`: call again.
    pub more: bool,
}

/// The store's unfinished work ([`crate::Queue::backlog`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub pending: i64,
    /// The earliest `next_attempt_at` at or before now among the pending
    /// deliveries of active endpoints; `None` when nothing is due.
    pub oldest_due_ms: Option<i64>,
}

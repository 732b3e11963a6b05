//! What a write consists of, decided once for both backends: the webhook a
//! manual delivery may go to, the deliveries a batch of bot events makes
//! (which endpoints, each with its own envelope, in production order), and
//! what each new delivery is handed to the engine as, the ids of new
//! accounts and teams, and how a batch is cut so that no statement holds one
//! event or delivery twice. A backend turns a plan into its SQL and gives
//! each planned delivery its id; it decides nothing of what is written.

use bytes::Bytes;
use herald_domain::bot::realtime_body;
use herald_domain::event::EventType;
use herald_domain::ids::{AccountId, DeliveryId, EndpointKind, EventId, TeamId};
use herald_domain::webhook::EndpointStatus;

use crate::model::*;
use crate::{StoreError, StoreResult};

/// A new account: its id is minted here, for both backends.
pub(crate) fn new_account(name: &str, now_ms: i64) -> Account {
    Account {
        id: AccountId::generate(now_ms),
        name: name.to_owned(),
        created_at: now_ms,
    }
}

/// A new team of `account`.
pub(crate) fn new_team(account: &AccountId, name: &str, now_ms: i64) -> Team {
    Team {
        id: TeamId::generate(now_ms),
        account_id: account.clone(),
        name: name.to_owned(),
        created_at: now_ms,
    }
}

/// Why a manual delivery may not be made: answered as its [`ManualOutcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    UnknownWebhook,
    Deactivated,
}

impl From<Refused> for ManualOutcome {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::UnknownWebhook => Self::UnknownWebhook,
            Refused::Deactivated => Self::Deactivated,
        }
    }
}

/// The webhook a manual delivery (a resend, a test event) goes to: `found`,
/// the team's endpoint of that id if any, when it is a webhook and active.
pub(crate) fn manual_target(found: Option<Endpoint>) -> Result<Endpoint, Refused> {
    match found {
        Some(endpoint) if endpoint.id.kind() != EndpointKind::Webhook => Err(Refused::UnknownWebhook),
        Some(endpoint) if endpoint.status != EndpointStatus::Active => Err(Refused::Deactivated),
        Some(endpoint) => Ok(endpoint),
        None => Err(Refused::UnknownWebhook),
    }
}

/// A delivery a write makes, before the store has given it an id: pending,
/// due at `due_ms`, leased to the writer when it has a lease.
#[derive(Debug)]
pub(crate) struct PlannedDelivery<'a> {
    pub endpoint: &'a Endpoint,
    pub event_id: EventId,
    pub event_type: EventType,
    /// What is sent: the event's body, or for a real-time endpoint its own
    /// envelope (stored with the delivery).
    pub body: Bytes,
    pub due_ms: i64,
}

impl PlannedDelivery<'_> {
    /// The delivery as the engine takes it, once stored under `id`.
    pub(crate) fn claimed(self, id: DeliveryId) -> ClaimedDelivery {
        ClaimedDelivery::fresh(id, self.endpoint, self.event_id, self.event_type, self.body)
    }
}

/// A manual delivery of an event to `endpoint`, due at once.
pub(crate) fn manual_delivery(
    endpoint: &Endpoint,
    event_id: EventId,
    event_type: EventType,
    body: Bytes,
    now_ms: i64,
) -> PlannedDelivery<'_> {
    PlannedDelivery {
        endpoint,
        event_id,
        event_type,
        body,
        due_ms: now_ms,
    }
}

/// One bot event as stored, with the ordered deliveries it makes.
#[derive(Debug)]
pub(crate) struct PlannedBotEvent<'a> {
    pub event: StoredEvent,
    /// The fleet's `data`, stored as the event's body.
    pub data: Box<serde_json::value::RawValue>,
    pub deliveries: Vec<PlannedDelivery<'a>>,
}

/// A batch of a bot's events, in production order: each event goes to
/// every active real-time endpoint of the bot subscribed to its type, with
/// that endpoint's envelope, due at the event's creation.
pub(crate) fn bot_events<'a>(
    bot: &Bot,
    endpoints: &'a [Endpoint],
    events: Vec<NewBotEvent>,
) -> StoreResult<Vec<PlannedBotEvent<'a>>> {
    let context = bot.envelope_context();
    let active: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| e.status == EndpointStatus::Active)
        .collect();
    events
        .into_iter()
        .map(|event| {
            let data = serde_json::value::RawValue::from_string(event.data)
                .map_err(|e| StoreError::Internal(format!("bot event data is not JSON: {e}")))?;
            let deliveries = active
                .iter()
                .filter(|e| e.event_types.contains(&event.event_type))
                .map(|endpoint| PlannedDelivery {
                    endpoint,
                    event_id: event.id.clone(),
                    event_type: event.event_type,
                    body: Bytes::from(realtime_body(
                        event.event_type,
                        &data,
                        endpoint.id.as_str(),
                        &endpoint.metadata,
                        &context,
                    )),
                    due_ms: event.created_at,
                })
                .collect();
            Ok(PlannedBotEvent {
                event: StoredEvent {
                    id: event.id,
                    event_type: event.event_type,
                    created_at: event.created_at,
                },
                data,
                deliveries,
            })
        })
        .collect()
}

/// Whether an attempt record is written at once rather than gathered with
/// others: a real-time endpoint's next delivery waits for it (order), while
/// only the log and the delivery's state wait for a team webhook's.
pub(crate) fn record_is_urgent(record: &AttemptRecord) -> bool {
    record.endpoint_id.kind() == EndpointKind::Realtime
}

/// How many of `items`, from the first and at most `max`, hold no key
/// twice. One statement must not insert the same event id, or move the same
/// delivery, twice (an `UPDATE … FROM` applies only one of two rows for a
/// row): each backend cuts its batches here.
pub(crate) fn distinct_prefix<T, K: std::hash::Hash + Eq>(items: &[T], key: impl Fn(&T) -> K, max: usize) -> usize {
    let mut seen = std::collections::HashSet::with_capacity(items.len().min(max));
    items.iter().take(max).take_while(|item| seen.insert(key(item))).count()
}

/// `batch` cut into consecutive runs in which no key repeats
/// ([`distinct_prefix`]).
pub(crate) fn split_unique<T, K: std::hash::Hash + Eq>(batch: Vec<T>, key: impl Fn(&T) -> K) -> Vec<Vec<T>> {
    let mut parts = Vec::new();
    let mut rest = batch;
    while !rest.is_empty() {
        let n = distinct_prefix(&rest, &key, usize::MAX).max(1);
        let tail = rest.split_off(n);
        parts.push(rest);
        rest = tail;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_cut_where_a_key_repeats() {
        let parts = split_unique(vec![1, 2, 3, 2, 4, 1, 4], |x| *x);
        assert_eq!(parts, vec![vec![1, 2, 3], vec![2, 4, 1], vec![4]]);
        assert_eq!(split_unique(vec![5], |x| *x), vec![vec![5]]);
        assert_eq!(distinct_prefix(&[1, 2, 3, 4], |x| *x, 2), 2);
        assert_eq!(distinct_prefix(&[1, 1], |x| *x, 64), 1);
    }
}

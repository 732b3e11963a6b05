//! What a write consists of, decided once for both backends: the webhook a
//! manual delivery may go to, the deliveries a batch of bot events makes
//! (which endpoints, each with its own envelope, in production order), and
//! what each new delivery is handed to the engine as, the ids of new
//! accounts and teams, and how a batch is cut so that no statement holds one
//! event or delivery twice. A backend turns a plan into its SQL and gives
//! each planned delivery its id; it decides nothing of what is written.

use bytes::Bytes;
use herald_domain::bot::realtime_body;
use herald_domain::event::{EventType, same_payload};
use herald_domain::ids::{AccountId, DeliveryId, EndpointId, EndpointKind, EventId, RecoveryId, TeamId};
use herald_domain::signing::{PreviousSecret, Secret};
use herald_domain::webhook::EndpointStatus;

use crate::codec::stored_data_of;
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
        ClaimedDelivery::fresh(
            id,
            self.endpoint,
            self.event_id,
            self.event_type,
            self.body,
            self.due_ms,
        )
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

/// A new recover of `webhook` that will send `total` events; one with
/// nothing to send is finished from the start.
pub(crate) fn new_recovery(webhook: &Endpoint, window: RecoverWindow, total: i64, now_ms: i64) -> Recovery {
    Recovery {
        id: RecoveryId::generate(now_ms),
        team_id: webhook.team_id.clone(),
        endpoint_id: webhook.id.clone(),
        since_ms: window.since_ms,
        until_ms: window.until_ms,
        total,
        made: 0,
        created_at: now_ms,
        finished_at: (total == 0).then_some(now_ms),
    }
}

/// Why a recover may not start, as its answer.
pub(crate) fn recover_refused(refused: Refused) -> RecoverOutcome {
    match refused {
        Refused::UnknownWebhook => RecoverOutcome::UnknownWebhook,
        Refused::Deactivated => RecoverOutcome::Deactivated,
    }
}

/// The chunk of a recover that is over (or gone with its webhook).
pub(crate) fn recover_gone() -> RecoverChunk {
    RecoverChunk {
        deliveries: Vec::new(),
        finished: true,
    }
}

/// The chunk of a recover whose webhook is deactivated: nothing now, more
/// once it is active again.
pub(crate) fn recover_paused() -> RecoverChunk {
    RecoverChunk {
        deliveries: Vec::new(),
        finished: false,
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

/// Whether a team event goes to a webhook whose stored type list is
/// `types_json`: the team's active webhooks subscribed to its type get a
/// delivery. The list is a JSON array of plain names (see
/// [`crate::codec::event_types_json`]), so a name between quotes is found
/// exactly without parsing it, as every publish must for every webhook of
/// the team. SQLite reads the team's active webhooks and keeps those this
/// accepts; PostgreSQL asks the same in its SQL with [`subscription_like`].
pub(crate) fn subscribes(types_json: &str, event_type: EventType) -> bool {
    let name = event_type.as_str();
    types_json
        .match_indices(name)
        .any(|(at, _)| types_json[..at].ends_with('"') && types_json[at + name.len()..].starts_with('"'))
}

/// [`subscribes`] as a SQL `LIKE` pattern: the quoted name anywhere in the
/// list, with `_` and `%` escaped (backslash is `LIKE`'s default escape), so
/// that `speech_on` does not match `speechXon`.
pub(crate) fn subscription_like(event_type: EventType) -> String {
    let mut pattern = String::from("%\"");
    for c in event_type.as_str().chars() {
        if matches!(c, '_' | '%' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str("\"%");
    pattern
}

/// A team event's delivery to one webhook it subscribed ([`subscribes`]),
/// as the engine takes it: stored under `id`, leased to the publisher, with
/// the event's exact body.
pub(crate) fn team_delivery(
    id: DeliveryId,
    event: &NewEvent,
    webhook: String,
    url: String,
    secret: Secret,
    previous_secret: Option<PreviousSecret>,
) -> ClaimedDelivery {
    ClaimedDelivery {
        id,
        team_id: TeamId::from_stored(event.team_id.clone()),
        event_id: event.id.clone(),
        event_type: event.event_type,
        body: event.body.clone(),
        endpoint_id: EndpointId::from_stored(webhook),
        url,
        secret,
        previous_secret: previous_secret.map(Box::new),
        attempt: 1,
        due_ms: 0,
        created_ms: event.created_at,
    }
}

/// The answer to a stored team event: the event and its deliveries in the
/// order they were made.
pub(crate) fn published(event: &NewEvent, mut deliveries: Vec<ClaimedDelivery>) -> PublishOutcome {
    deliveries.sort_by_key(|d| d.id);
    PublishOutcome::Created {
        event: StoredEvent {
            id: event.id.clone(),
            event_type: event.event_type,
            created_at: event.created_at,
        },
        deliveries,
    }
}

/// The answer to a publish whose id is taken, from the stored event's type,
/// creation time and body: a replay of the same type and `data` answers the
/// stored event (nothing new is made), anything else is a conflict.
pub(crate) fn replayed(
    event: &NewEvent,
    stored_type: &str,
    stored_created_at: i64,
    stored_body: &[u8],
) -> StoreResult<PublishOutcome> {
    if !same_payload(
        stored_type,
        &stored_data_of(stored_body),
        event.event_type.as_str(),
        &event.data,
    ) {
        return Ok(PublishOutcome::Conflict);
    }
    let event_type = EventType::parse(stored_type)
        .ok_or_else(|| StoreError::Internal(format!("unknown event type `{stored_type}`")))?;
    Ok(PublishOutcome::Existing(StoredEvent {
        id: event.id.clone(),
        event_type,
        created_at: stored_created_at,
    }))
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

    /// SQL `LIKE` with backslash escapes, enough to hold
    /// [`subscription_like`] to [`subscribes`].
    fn like(text: &str, pattern: &str) -> bool {
        fn go(t: &[char], p: &[char]) -> bool {
            match p.split_first() {
                None => t.is_empty(),
                Some(('%', rest)) => (0..=t.len()).any(|i| go(&t[i..], rest)),
                Some(('_', rest)) => !t.is_empty() && go(&t[1..], rest),
                Some(('\\', rest)) => match rest.split_first() {
                    Some((c, rest)) => t.first() == Some(c) && go(&t[1..], rest),
                    None => false,
                },
                Some((c, rest)) => t.first() == Some(c) && go(&t[1..], rest),
            }
        }
        let (t, p): (Vec<char>, Vec<char>) = (text.chars().collect(), pattern.chars().collect());
        go(&t, &p)
    }

    #[test]
    fn subscribes_matches_whole_names_only_and_like_agrees() {
        let speech_on = EventType::ParticipantSpeechOn;
        let completed = EventType::MeetingCompleted;
        let lists = [
            r#"["meeting.completed"]"#,
            r#"["participant_events.speech_on","meeting.completed"]"#,
            r#"["participant_events.speechXon"]"#,
            r#"["participant_events.speech_onX"]"#,
            r#"["xmeeting.completed"]"#,
            r#"[]"#,
        ];
        let expected = [
            (true, false),
            (true, true),
            (false, false),
            (false, false),
            (false, false),
            (false, false),
        ];
        for (list, (completed_expected, speech_expected)) in lists.iter().zip(expected) {
            assert_eq!(subscribes(list, completed), completed_expected, "{list}");
            assert_eq!(subscribes(list, speech_on), speech_expected, "{list}");
            for event_type in [completed, speech_on] {
                assert_eq!(
                    like(list, &subscription_like(event_type)),
                    subscribes(list, event_type),
                    "{list} {event_type:?}"
                );
            }
        }
    }

    #[test]
    fn a_batch_is_cut_where_a_key_repeats() {
        let parts = split_unique(vec![1, 2, 3, 2, 4, 1, 4], |x| *x);
        assert_eq!(parts, vec![vec![1, 2, 3], vec![2, 4, 1], vec![4]]);
        assert_eq!(split_unique(vec![5], |x| *x), vec![vec![5]]);
        assert_eq!(distinct_prefix(&[1, 2, 3, 4], |x| *x, 2), 2);
        assert_eq!(distinct_prefix(&[1, 1], |x| *x, 64), 1);
    }

    #[test]
    fn subscribes_matches_whole_names_only() {
        let list = crate::codec::event_types_json(&[EventType::MeetingCompleted]);
        assert!(subscribes(&list, EventType::MeetingCompleted));
        for other in EventType::ALL.iter().filter(|t| **t != EventType::MeetingCompleted) {
            assert!(!subscribes(&list, *other), "{other:?}");
        }
        assert!(!subscribes("[]", EventType::MeetingCompleted));
        let all = crate::codec::event_types_json(&EventType::ALL);
        assert!(EventType::ALL.iter().all(|t| subscribes(&all, *t)));
    }
}

//! Herald's durable state, behind one interface: [`Store`].
//!
//! The store is the queue. Every accepted event and every delivery is a row
//! before the API answers 2xx; the engine's memory only ever holds a bounded
//! window of that work, claimed with a lease (`locked_until`, `locked_by`) so
//! that a restarted process, or later another process on the same database,
//! can take over what a dead one held.
//!
//! Only this crate contains SQL. Callers pass times in (`now_ms`) so that the
//! store never reads a clock either; the SQLite backend ([`sqlite`]) writes
//! through one thread that commits whatever has queued up in one transaction
//! (group commit), and reads through a small pool of read-only connections.

mod codec;
pub mod health;
pub mod model;
mod plan;
pub mod postgres;
mod records;
pub mod sqlite;

use async_trait::async_trait;
use herald_domain::ids::{AccountId, AttemptId, BotId, DeliveryId, EndpointId, EventId, KeyId, RecoveryId, TeamId};
use herald_domain::keys::KeyHash;
use herald_domain::signing::Secret;

pub use model::*;

/// What can go wrong in the store, as callers need to tell it apart.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The thing does not exist, or belongs to another team.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached or is shutting down; worth retrying later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or a corrupt database.
    #[error("store error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One page of an endpoint's attempt log, newest first, and the cursor of
/// the next page if there is one: what the API and the dashboard both show.
pub async fn attempt_page(
    store: &dyn AttemptLog,
    team: &TeamId,
    endpoint: &EndpointId,
    filter: &AttemptFilter,
) -> StoreResult<(Vec<Attempt>, Option<String>)> {
    let limit = filter.limit;
    let mut page = store
        .list_attempts(
            team,
            endpoint,
            &AttemptFilter {
                limit: limit + 1,
                ..filter.clone()
            },
        )
        .await?;
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|a| {
            herald_domain::cursor::Cursor {
                timestamp_ms: a.timestamp_ms,
                seq: a.seq,
            }
            .encode()
        })
    } else {
        None
    };
    Ok((page, next))
}

/// What another process on a shared store announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSignal {
    /// Claimable work was committed.
    Work,
    /// An endpoint changed; queued work for it must be dropped.
    EndpointChanged(EndpointId),
}

/// Accounts, teams and their keys, the admin key, and whether the store
/// takes writes: what the API's operator routes and its key check use.
#[async_trait]
pub trait Tenancy: Send + Sync {
    /// Checks that the store takes writes, with one small write (`/readyz`):
    /// a full disk, or a SQLite file deleted or replaced under the server,
    /// answers `Unavailable`.
    async fn ping(&self) -> StoreResult<()>;

    /// The stored admin key hash, if one was generated for this store.
    async fn admin_key_hash(&self) -> StoreResult<Option<KeyHash>>;

    /// Stores a generated admin key hash, only if the store has none yet.
    /// Returns whether it was stored.
    async fn init_admin_key_hash(&self, hash: &KeyHash) -> StoreResult<bool>;

    async fn create_account(&self, name: &str, now_ms: i64) -> StoreResult<Account>;

    /// `NotFound` if the account does not exist.
    async fn create_team(&self, account: &AccountId, name: &str, now_ms: i64) -> StoreResult<Team>;

    /// `NotFound` if the team does not exist.
    async fn create_team_key(&self, key: &TeamKey, hash: &KeyHash) -> StoreResult<()>;

    /// The team and key a presented key's hash opens; `None` for an unknown
    /// or revoked key. Read on every team request (nothing is cached, so a
    /// revocation holds at once on every node).
    async fn team_for_key(&self, hash: &KeyHash) -> StoreResult<Option<KeyUse>>;

    /// Marks a key used at `now_ms`.
    async fn touch_team_key(&self, key: &KeyId, now_ms: i64) -> StoreResult<()>;

    /// A team's keys, oldest first. `NotFound` if the team does not exist.
    async fn list_team_keys(&self, team: &TeamId) -> StoreResult<Vec<TeamKey>>;

    /// Revokes a key of `team`. `NotFound` if it has no such key.
    async fn delete_team_key(&self, team: &TeamId, key: &KeyId) -> StoreResult<()>;

    /// `NotFound` if the team does not exist.
    async fn get_team(&self, team: &TeamId) -> StoreResult<Team>;
}

/// The dashboard's one-time sign-in links and its sessions (hashes only).
#[async_trait]
pub trait Sessions: Send + Sync {
    /// Stores a one-time dashboard sign-in link (its token's hash) for a team,
    /// usable until `expires_at_ms`, and forgets links and sessions that have
    /// expired. `NotFound` if the team does not exist.
    async fn create_dashboard_link(
        &self,
        team: &TeamId,
        link: &KeyHash,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> StoreResult<()>;

    /// Uses up a sign-in link and opens a session (stored as `session`'s hash)
    /// for its team, in one transaction. `None`, and no session, if the link
    /// is unknown, expired or already used.
    async fn redeem_dashboard_link(
        &self,
        link: &KeyHash,
        session: &KeyHash,
        session_expires_at_ms: i64,
        now_ms: i64,
    ) -> StoreResult<Option<TeamId>>;

    /// The session with this hash, if it exists and has not expired.
    async fn dashboard_session(&self, session: &KeyHash, now_ms: i64) -> StoreResult<Option<DashboardSession>>;

    /// Ends a session (sign-out). Ending an unknown one is not an error.
    async fn delete_dashboard_session(&self, session: &KeyHash) -> StoreResult<()>;
}

/// Team webhooks and bots with their real-time endpoints, always within
/// one team: another team's answers `NotFound`.
#[async_trait]
pub trait Endpoints: Send + Sync {
    /// Creates a team webhook unless its team already has `max_per_team`
    /// webhooks (answers `false` then, and stores nothing). The count and
    /// the insert are one transaction, so concurrent creates cannot pass it.
    async fn create_endpoint(&self, endpoint: &Endpoint, max_per_team: usize) -> StoreResult<bool>;

    async fn list_webhooks(&self, team: &TeamId) -> StoreResult<Vec<Endpoint>>;

    /// `NotFound` if it does not exist or is another team's.
    async fn get_endpoint(&self, team: &TeamId, id: &EndpointId) -> StoreResult<Endpoint>;

    /// Applies a patch. A status change clears the deactivation reason and
    /// the failing streak: a person decided.
    async fn update_webhook(&self, team: &TeamId, id: &EndpointId, patch: &WebhookPatch) -> StoreResult<Endpoint>;

    /// Makes `secret` the webhook's signing secret; the one it replaces keeps
    /// signing until `previous_expires_at_ms` (contract §4.2).
    async fn rotate_secret(
        &self,
        team: &TeamId,
        id: &EndpointId,
        secret: &Secret,
        previous_expires_at_ms: i64,
    ) -> StoreResult<Endpoint>;

    /// Deletes the endpoint, its pending deliveries and its attempt log.
    async fn delete_endpoint(&self, team: &TeamId, id: &EndpointId) -> StoreResult<()>;

    /// Stores a bot with its real-time endpoints.
    async fn create_bot(&self, bot: &Bot) -> StoreResult<()>;

    /// `NotFound` if it does not exist or is another team's.
    async fn get_bot(&self, team: &TeamId, id: &BotId) -> StoreResult<Bot>;

    async fn list_bots(&self, team: &TeamId) -> StoreResult<Vec<Bot>>;
}

/// What makes deliveries: publishes of team and bot events, resends and
/// test events. Each is one transaction that stores the event and its
/// deliveries, leased to the caller.
#[async_trait]
pub trait Publishing: Send + Sync {
    /// Stores an event and one delivery for each active endpoint of its team
    /// subscribed to its type, leased to the caller, in one transaction.
    async fn publish(&self, event: NewEvent, lease: &Lease) -> StoreResult<PublishOutcome>;

    /// Stores a batch of bot events, in order, and one ordered delivery (with
    /// its own envelope) per active real-time endpoint of the bot subscribed
    /// to each, leased to the caller, in one transaction.
    /// With `lease: None` the deliveries are left for any process to claim
    /// (and, on a shared store, the other processes are told there is work).
    async fn publish_bot_events(
        &self,
        bot: &BotId,
        events: Vec<NewBotEvent>,
        lease: Option<&Lease>,
    ) -> StoreResult<BotPublishOutcome>;

    /// Makes a new delivery of a stored event of the team to one of its
    /// webhooks, with the event's exact body, marked manual and leased to the
    /// caller: the resend of the dashboard and of the API.
    async fn resend(
        &self,
        team: &TeamId,
        webhook: &EndpointId,
        event: &EventId,
        lease: &Lease,
        now_ms: i64,
    ) -> StoreResult<ManualOutcome>;

    /// Stores a new event of the webhook's team and one delivery of it, marked
    /// manual and leased to the caller, to that webhook only (a test event).
    /// `event.id_given` is ignored: the id must be new.
    async fn publish_test_event(
        &self,
        event: NewEvent,
        webhook: &EndpointId,
        lease: &Lease,
    ) -> StoreResult<ManualOutcome>;
}

/// The delivery queue as the engine works it: claims with a lease, the
/// attempt records that move deliveries on, lease renewal and release, and
/// the signals between processes on a shared store.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Leases up to `limit` unordered deliveries that are due at `now_ms` and
    /// whose endpoint is active, oldest due first.
    async fn claim_due(&self, now_ms: i64, limit: usize, lease: &Lease) -> StoreResult<Vec<ClaimedDelivery>>;

    /// Leases runs of ordered deliveries: for up to `endpoints` active
    /// endpoints that hold no lease and whose first pending delivery is due,
    /// their first `run` pending deliveries, in order (grouped by endpoint).
    async fn claim_ordered(
        &self,
        now_ms: i64,
        endpoints: usize,
        run: usize,
        lease: &Lease,
    ) -> StoreResult<Vec<ClaimedDelivery>>;

    /// Leases the oldest open recover of an active webhook that no other
    /// process holds (or this one held before a restart), leaving out those
    /// in `held`: the ones this process works already.
    async fn claim_recovery(&self, lease: &Lease, now_ms: i64, held: &[RecoveryId]) -> StoreResult<Option<Recovery>>;

    /// Makes a held recover's next (up to `limit`) manual deliveries, leased
    /// to the caller, moves it past them and renews its lease, in one write.
    /// Nothing while its webhook is deactivated; `finished` after the last.
    /// A `limit` of 0 only renews the lease.
    async fn recover_chunk(
        &self,
        id: &RecoveryId,
        limit: usize,
        lease: &Lease,
        now_ms: i64,
    ) -> StoreResult<RecoverChunk>;

    /// The deliveries not yet finished, and the due time of the oldest one
    /// of an active endpoint that is due (waiting, or on the wire): what
    /// `/metrics` shows as `herald_deliveries_pending` and
    /// `herald_due_lag_seconds`. Read through the partial indexes of
    /// pending work, never the whole table.
    async fn backlog(&self, now_ms: i64) -> StoreResult<Backlog>;

    /// When the earliest claimable work of an active endpoint becomes due.
    async fn next_due_at(&self, now_ms: i64) -> StoreResult<Option<i64>>;

    /// Logs an attempt, moves its delivery to its next state, counts it in
    /// its webhook's hourly stats and failing streak, and deactivates the
    /// webhook when the record asks ([`AttemptRecord::deactivate`]).
    async fn record_attempt(&self, record: AttemptRecord) -> StoreResult<Recorded>;

    /// Logs the last failed attempt of an ordered endpoint, marks the endpoint
    /// failed, and drops every delivery still pending for it, logging each as
    /// dropped. Returns how many were dropped.
    async fn fail_endpoint(&self, last: AttemptRecord, drop_reason: &str) -> StoreResult<usize>;

    /// Extends the lease of deliveries this node still holds.
    async fn renew(&self, deliveries: &[DeliveryId], lease: &Lease) -> StoreResult<()>;

    /// Gives leased deliveries back so that any claimer may take them.
    async fn release(&self, deliveries: &[DeliveryId]) -> StoreResult<()>;

    /// Gives back every lease a node holds, on deliveries and on recovers
    /// (on start-up after a crash, and on shutdown, so that other nodes take
    /// the work at once).
    async fn release_node(&self, node: &str) -> StoreResult<()>;

    /// Whether several processes may use this store at once (PostgreSQL). An
    /// unshared store has one engine, which may trust its own memory more.
    fn is_shared(&self) -> bool;

    /// Signals from the other processes on a shared store; `None` when there
    /// can be none.
    async fn subscribe(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<StoreSignal>>>;

    /// Tells the other processes that an endpoint changed (deactivated,
    /// edited, deleted), so they drop what they queued for it.
    async fn announce_endpoint_changed(&self, endpoint: &EndpointId) -> StoreResult<()>;
}

/// The attempt log, as the API and the dashboard read it.
#[async_trait]
pub trait AttemptLog: Send + Sync {
    /// A page of an endpoint's attempt log, newest first.
    async fn list_attempts(
        &self,
        team: &TeamId,
        endpoint: &EndpointId,
        filter: &AttemptFilter,
    ) -> StoreResult<Vec<Attempt>>;

    /// One attempt with its request body and response detail.
    async fn get_attempt(&self, team: &TeamId, id: &AttemptId) -> StoreResult<Attempt>;

    /// A webhook's hourly stats from the hour starting at `from_hour_ms` on,
    /// oldest first; hours without attempts are left out. `NotFound` if it
    /// is not the team's.
    async fn webhook_stats(&self, team: &TeamId, id: &EndpointId, from_hour_ms: i64) -> StoreResult<Vec<HourStats>>;
}

/// Recovers after a receiver's outage (contract §4.1), as the API and the
/// dashboard ask for them and watch them; the engine works them through
/// [`Queue::claim_recovery`] and [`Queue::recover_chunk`].
#[async_trait]
pub trait Recovering: Send + Sync {
    /// Counts what a recover of `webhook` over `window` will send and
    /// stores it to be worked, unless the webhook is unknown, deactivated
    /// or already recovering.
    async fn recover(
        &self,
        team: &TeamId,
        webhook: &EndpointId,
        window: RecoverWindow,
        now_ms: i64,
    ) -> StoreResult<RecoverOutcome>;

    /// How many events a recover over `window` would send now.
    async fn count_recoverable(&self, team: &TeamId, webhook: &EndpointId, window: RecoverWindow) -> StoreResult<i64>;

    /// The webhook's latest recovers, newest first.
    async fn recoveries(&self, team: &TeamId, webhook: &EndpointId, limit: usize) -> StoreResult<Vec<Recovery>>;
}

/// Retention (contract §7.1): old events leave the store in small batches,
/// oldest first, so the store's size levels off under a steady load.
#[async_trait]
pub trait Retention: Send + Sync {
    /// Deletes, oldest first, up to `limit` of the events after position
    /// `after` that were created before `cutoff_ms`, with their deliveries
    /// and attempts, in one short write. An event with a delivery still
    /// pending is kept, whatever its age. Stops at the first event created
    /// at or after `cutoff_ms`. On a shared store one process at a time
    /// does this; the others find nothing to do meanwhile.
    async fn prune_events(&self, cutoff_ms: i64, after: i64, limit: usize) -> StoreResult<Pruned>;

    /// Deletes the hourly stats of hours that ended by `cutoff_ms`, and
    /// recovers that finished before it; returns how many rows went.
    async fn prune_history(&self, cutoff_ms: i64) -> StoreResult<u64>;
}

/// Herald's persistence: the sum of the roles, one implementation per
/// database. Every method is a short transaction or a read, never held
/// across a network call. Each caller names the roles it uses (the engine
/// holds only a [`Queue`]); `Store` is for what wires them together.
pub trait Store:
    Tenancy + Sessions + Endpoints + Publishing + Recovering + Queue + AttemptLog + Retention + 'static
{
}

impl<T: Tenancy + Sessions + Endpoints + Publishing + Recovering + Queue + AttemptLog + Retention + 'static> Store
    for T
{
}

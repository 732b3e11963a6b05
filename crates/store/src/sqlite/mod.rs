//! The SQLite backend: Herald's default, an embedded file with no server.
//!
//! Writes go through the group-committing writer of [`pool`]; reads use the
//! read-only pool. WAL mode lets readers run while the writer commits.

mod pool;
mod schema;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::oneshot;

use herald_domain::attempt::AttemptStatus;
use herald_domain::bot::realtime_body;
use herald_domain::event::{EventType, same_payload};
use herald_domain::ids::{AccountId, AttemptId, BotId, DeliveryId, EndpointId, EndpointKind, EventId, KeyId, TeamId};
use herald_domain::keys::KeyHash;
use herald_domain::signing::Secret;
use herald_domain::webhook::EndpointStatus;

pub use pool::Durability;
pub use schema::latest_version;

use crate::codec::{
    delivery_move, event_types_from, event_types_json, headers_from, headers_json, request_headers_from,
    request_headers_stored, stored_data_of, subscribes,
};
use crate::model::*;
use crate::{Store, StoreError, StoreResult};
use pool::{Connections, internal};

const ADMIN_KEY: &str = "admin_key_hash";

/// Herald's store on one SQLite file.
pub struct SqliteStore {
    conns: Connections,
    records: Arc<RecordQueue>,
}

/// Attempt records waiting for the writer, each with its waiter. A record
/// into a queue with no job on the writer's channel queues one: at once for
/// a real-time endpoint, whose next delivery waits for this record, and
/// after [`RECORD_GATHER`] for the others, so that the records of that time
/// share one commit. That job, when the writer reaches it, takes every
/// record queued by then and writes them together ([`record_many`]); a
/// record arriving after that starts the next job. The queue is bounded by
/// the attempts in flight, each waiting here.
#[derive(Default)]
struct RecordQueue(Mutex<Pending>);

#[derive(Default)]
struct Pending {
    records: Vec<Waiting>,
    /// A drain job is on the writer's channel and has not run yet.
    job_queued: bool,
    /// A gather timer is running and will queue the job if none is.
    gathering: bool,
}

/// A queued record and the waiter for its result.
type Waiting = (AttemptRecord, oneshot::Sender<StoreResult<()>>);

/// How long a record of a team webhook's attempt waits for others to share
/// its commit. Each commit writes every page it touches, and a lone record
/// touches several (the log, its indexes, the delivery and its lease index),
/// and every WAL rewind holds the writer (10-25 ms on this VM's disk). With
/// one record per commit, `herald-bench paced` (1,000 events/s for 30 s)
/// rewound the WAL 8 times; gathered for 3 ms, 5 times, and its p99 went from
/// 0.89-3.2 ms to 0.44-0.49 ms with a fifth less server CPU. Under full load
/// the records queue while the writer is busy anyway. Nothing waits on these
/// records but the log and the delivery's state, so the wait is on no
/// delivery's path.
const RECORD_GATHER: std::time::Duration = std::time::Duration::from_millis(3);

/// What a record asks of its queue once it is in.
enum Queue {
    /// A job is queued or a timer will queue one.
    Nothing,
    Now,
    Gather,
}

impl RecordQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        pool::lock(&self.0)
    }

    /// Puts `record` in the queue and says what must happen for it to be written.
    fn push(&self, record: AttemptRecord, waiter: oneshot::Sender<StoreResult<()>>) -> Queue {
        let urgent = record.endpoint_id.kind() == EndpointKind::Realtime;
        let mut pending = self.lock();
        pending.records.push((record, waiter));
        if pending.job_queued {
            Queue::Nothing
        } else if urgent {
            pending.job_queued = true;
            Queue::Now
        } else if !pending.gathering {
            pending.gathering = true;
            Queue::Gather
        } else {
            Queue::Nothing
        }
    }

    /// A gather timer ran out: whether a job must be queued now.
    fn gathered(&self) -> bool {
        let mut pending = self.lock();
        pending.gathering = false;
        let queue = !pending.job_queued && !pending.records.is_empty();
        pending.job_queued |= queue;
        queue
    }

    /// The write job that takes the queue: its records' results go to their
    /// waiters once the batch has committed. A job dropped unrun (the writer
    /// could not begin its transaction) empties the queue, so that its
    /// waiters hear it and the next record queues a job again.
    fn drain_job(self: Arc<Self>) -> pool::Run {
        let unrun = Unrun(Some(self));
        Box::new(move |conn: &Connection| {
            let mut unrun = unrun;
            let taken = unrun
                .0
                .take()
                .map(|queue| {
                    let mut pending = queue.lock();
                    pending.job_queued = false;
                    std::mem::take(&mut pending.records)
                })
                .unwrap_or_default();
            let records: Vec<&AttemptRecord> = taken.iter().map(|(r, _)| r).collect();
            let result = record_many(conn, &records);
            let ok = result.is_ok();
            let done: pool::Completion = Box::new(move |commit_error| {
                for (_, waiter) in taken {
                    let _ = waiter.send(match commit_error {
                        Some(e) => Err(e.clone()),
                        None => result.clone(),
                    });
                }
            });
            (ok, done)
        })
    }
}

/// Empties the queue when dropped: held by a drain job until it runs.
struct Unrun(Option<Arc<RecordQueue>>);

impl Drop for Unrun {
    fn drop(&mut self) {
        if let Some(queue) = self.0.take() {
            let mut pending = queue.lock();
            pending.records.clear();
            pending.job_queued = false;
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path, durability: Durability) -> StoreResult<Self> {
        Self::open_at_schema(path, durability, schema::latest_version())
    }

    /// Opens the store migrated only up to schema `version`: what an older
    /// binary left behind, for the upgrade tests.
    #[doc(hidden)]
    pub fn open_at_schema(path: &Path, durability: Durability, version: usize) -> StoreResult<Self> {
        Ok(Self {
            conns: Connections::open(path, durability, 4, version)?,
            records: Arc::default(),
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        if self.conns.file_gone() {
            return Err(StoreError::Unavailable(
                "the database file was deleted or replaced under the running server".into(),
            ));
        }
        self.conns
            .write(|c| {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('ready_probe', strftime('%s','now'))",
                )
                .and_then(|mut stmt| stmt.execute([]))
                .map(|_| ())
                .map_err(|e| StoreError::Unavailable(format!("the store cannot take writes: {e}")))
            })
            .await
    }

    async fn admin_key_hash(&self) -> StoreResult<Option<KeyHash>> {
        self.conns
            .read(|c| {
                c.query_row("SELECT value FROM meta WHERE key = ?1", [ADMIN_KEY], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .map(|v| v.map(KeyHash::from_stored))
                .map_err(internal)
            })
            .await
    }

    async fn init_admin_key_hash(&self, hash: &KeyHash) -> StoreResult<bool> {
        let hash = hash.as_str().to_owned();
        self.conns
            .write(move |c| {
                let n = c
                    .execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                        params![ADMIN_KEY, hash],
                    )
                    .map_err(internal)?;
                Ok(n == 1)
            })
            .await
    }

    async fn create_account(&self, name: &str, now_ms: i64) -> StoreResult<Account> {
        let account = Account {
            id: AccountId::generate(now_ms),
            name: name.to_owned(),
            created_at: now_ms,
        };
        let row = account.clone();
        self.conns
            .write(move |c| {
                c.execute(
                    "INSERT INTO accounts (id, name, created_at) VALUES (?1, ?2, ?3)",
                    params![row.id.as_str(), row.name, row.created_at],
                )
                .map_err(internal)?;
                Ok(())
            })
            .await?;
        Ok(account)
    }

    async fn create_team(&self, account: &AccountId, name: &str, now_ms: i64) -> StoreResult<Team> {
        let team = Team {
            id: TeamId::generate(now_ms),
            account_id: account.clone(),
            name: name.to_owned(),
            created_at: now_ms,
        };
        let row = team.clone();
        self.conns
            .write(move |c| {
                if !exists(c, "SELECT 1 FROM accounts WHERE id = ?1", row.account_id.as_str())? {
                    return Err(StoreError::NotFound);
                }
                c.execute(
                    "INSERT INTO teams (id, account_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![row.id.as_str(), row.account_id.as_str(), row.name, row.created_at],
                )
                .map_err(internal)?;
                Ok(())
            })
            .await?;
        Ok(team)
    }

    async fn create_team_key(&self, key: &TeamKey, hash: &KeyHash) -> StoreResult<()> {
        let (key, hash) = (key.clone(), hash.as_str().to_owned());
        self.conns
            .write(move |c| {
                if !exists(c, "SELECT 1 FROM teams WHERE id = ?1", key.team_id.as_str())? {
                    return Err(StoreError::NotFound);
                }
                c.execute(
                    "INSERT INTO team_keys (hash, team_id, created_at, id, name, prefix) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        hash,
                        key.team_id.as_str(),
                        key.created_at,
                        key.id.as_str(),
                        key.name,
                        key.prefix
                    ],
                )
                .map_err(internal)?;
                Ok(())
            })
            .await
    }

    async fn team_for_key(&self, hash: &KeyHash) -> StoreResult<Option<KeyUse>> {
        let hash = hash.as_str().to_owned();
        self.conns
            .read(move |c| {
                c.prepare_cached("SELECT team_id, id, last_used_at FROM team_keys WHERE hash = ?1")
                    .and_then(|mut stmt| {
                        stmt.query_row([hash], |r| {
                            Ok(KeyUse {
                                team: TeamId::from_stored(r.get(0)?),
                                key: KeyId::from_stored(r.get(1)?),
                                last_used_at: r.get(2)?,
                            })
                        })
                        .optional()
                    })
                    .map_err(internal)
            })
            .await
    }

    async fn touch_team_key(&self, key: &KeyId, now_ms: i64) -> StoreResult<()> {
        let key = key.as_str().to_owned();
        self.conns
            .write(move |c| {
                c.execute(
                    "UPDATE team_keys SET last_used_at = ?2 WHERE id = ?1",
                    params![key, now_ms],
                )
                .map(|_| ())
                .map_err(internal)
            })
            .await
    }

    async fn list_team_keys(&self, team: &TeamId) -> StoreResult<Vec<TeamKey>> {
        let team = team.as_str().to_owned();
        self.conns
            .read(move |c| {
                if !exists(c, "SELECT 1 FROM teams WHERE id = ?1", &team)? {
                    return Err(StoreError::NotFound);
                }
                let mut stmt = c
                    .prepare_cached(
                        "SELECT id, team_id, name, prefix, created_at, last_used_at FROM team_keys
                         WHERE team_id = ?1 ORDER BY created_at, id",
                    )
                    .map_err(internal)?;
                stmt.query_map([team], |r| {
                    Ok(TeamKey {
                        id: KeyId::from_stored(r.get(0)?),
                        team_id: TeamId::from_stored(r.get(1)?),
                        name: r.get(2)?,
                        prefix: r.get(3)?,
                        created_at: r.get(4)?,
                        last_used_at: r.get(5)?,
                    })
                })
                .and_then(|rows| rows.collect())
                .map_err(internal)
            })
            .await
    }

    async fn delete_team_key(&self, team: &TeamId, key: &KeyId) -> StoreResult<()> {
        let (team, key) = (team.as_str().to_owned(), key.as_str().to_owned());
        self.conns
            .write(move |c| {
                let n = c
                    .execute(
                        "DELETE FROM team_keys WHERE id = ?1 AND team_id = ?2",
                        params![key, team],
                    )
                    .map_err(internal)?;
                if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
            })
            .await
    }

    async fn get_team(&self, team: &TeamId) -> StoreResult<Team> {
        let team = team.as_str().to_owned();
        self.conns
            .read(move |c| {
                c.query_row(
                    "SELECT id, account_id, name, created_at FROM teams WHERE id = ?1",
                    [team],
                    |r| {
                        Ok(Team {
                            id: TeamId::from_stored(r.get(0)?),
                            account_id: AccountId::from_stored(r.get(1)?),
                            name: r.get(2)?,
                            created_at: r.get(3)?,
                        })
                    },
                )
                .optional()
                .map_err(internal)?
                .ok_or(StoreError::NotFound)
            })
            .await
    }

    async fn create_dashboard_link(
        &self,
        team: &TeamId,
        link: &KeyHash,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> StoreResult<()> {
        let (team, link) = (team.as_str().to_owned(), link.as_str().to_owned());
        self.conns
            .write(move |c| {
                if !exists(c, "SELECT 1 FROM teams WHERE id = ?1", &team)? {
                    return Err(StoreError::NotFound);
                }
                c.execute("DELETE FROM dashboard_links WHERE expires_at < ?1", [now_ms])
                    .map_err(internal)?;
                c.execute("DELETE FROM dashboard_sessions WHERE expires_at < ?1", [now_ms])
                    .map_err(internal)?;
                c.execute(
                    "INSERT INTO dashboard_links (hash, team_id, expires_at, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![link, team, expires_at_ms, now_ms],
                )
                .map_err(internal)?;
                Ok(())
            })
            .await
    }

    async fn redeem_dashboard_link(
        &self,
        link: &KeyHash,
        session: &KeyHash,
        session_expires_at_ms: i64,
        now_ms: i64,
    ) -> StoreResult<Option<TeamId>> {
        let (link, session) = (link.as_str().to_owned(), session.as_str().to_owned());
        self.conns
            .write(move |c| {
                let team: Option<String> = c
                    .query_row(
                        "UPDATE dashboard_links SET used_at = ?1
                         WHERE hash = ?2 AND used_at IS NULL AND expires_at > ?1
                         RETURNING team_id",
                        params![now_ms, link],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(internal)?;
                let Some(team) = team else {
                    return Ok(None);
                };
                c.execute(
                    "INSERT INTO dashboard_sessions (hash, team_id, expires_at, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![session, team, session_expires_at_ms, now_ms],
                )
                .map_err(internal)?;
                Ok(Some(TeamId::from_stored(team)))
            })
            .await
    }

    async fn dashboard_session(&self, session: &KeyHash, now_ms: i64) -> StoreResult<Option<DashboardSession>> {
        let session = session.as_str().to_owned();
        self.conns
            .read(move |c| {
                c.query_row(
                    "SELECT team_id, expires_at FROM dashboard_sessions WHERE hash = ?1 AND expires_at > ?2",
                    params![session, now_ms],
                    |r| {
                        Ok(DashboardSession {
                            team_id: TeamId::from_stored(r.get(0)?),
                            expires_at: r.get(1)?,
                        })
                    },
                )
                .optional()
                .map_err(internal)
            })
            .await
    }

    async fn delete_dashboard_session(&self, session: &KeyHash) -> StoreResult<()> {
        let session = session.as_str().to_owned();
        self.conns
            .write(move |c| {
                c.execute("DELETE FROM dashboard_sessions WHERE hash = ?1", [session])
                    .map_err(internal)?;
                Ok(())
            })
            .await
    }

    async fn create_endpoint(&self, endpoint: &Endpoint, max_per_team: usize) -> StoreResult<bool> {
        let e = endpoint.clone();
        self.conns
            .write(move |c| {
                let count: i64 = c
                    .query_row(
                        "SELECT COUNT(*) FROM endpoints WHERE team_id = ?1 AND kind = ?2",
                        params![e.team_id.as_str(), e.id.kind().as_str()],
                        |row| row.get(0),
                    )
                    .map_err(internal)?;
                if usize::try_from(count).unwrap_or(usize::MAX) >= max_per_team {
                    return Ok(false);
                }
                insert_endpoint(c, &e, 0).map(|()| true)
            })
            .await
    }

    async fn create_bot(&self, bot: &Bot) -> StoreResult<()> {
        let b = bot.clone();
        self.conns
            .write(move |c| {
                c.execute(
                    "INSERT INTO bots (id, team_id, meeting_url, metadata, recording_id, participant_events_id, transcript_id, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        b.id.as_str(),
                        b.team_id.as_str(),
                        b.meeting_url,
                        b.metadata,
                        b.recording_id,
                        b.participant_events_id,
                        b.transcript_id,
                        b.created_at
                    ],
                )
                .map_err(internal)?;
                for (position, e) in b.endpoints.iter().enumerate() {
                    insert_endpoint(c, e, position)?;
                }
                Ok(())
            })
            .await
    }

    async fn get_bot(&self, team: &TeamId, id: &BotId) -> StoreResult<Bot> {
        let (team, id) = (team.as_str().to_owned(), id.as_str().to_owned());
        self.conns
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {BOT_COLUMNS} FROM bots WHERE id = ?1 AND team_id = ?2"
                    ))
                    .map_err(internal)?;
                let bot = stmt
                    .query_row(params![id, team], bot_from_row)
                    .optional()
                    .map_err(internal)?;
                let mut bot = bot.ok_or(StoreError::NotFound)?;
                bot.endpoints = bot_endpoints(c, &id)?;
                Ok(bot)
            })
            .await
    }

    async fn list_bots(&self, team: &TeamId) -> StoreResult<Vec<Bot>> {
        let team = team.as_str().to_owned();
        self.conns
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {BOT_COLUMNS} FROM bots WHERE team_id = ?1 ORDER BY created_at DESC, id DESC"
                    ))
                    .map_err(internal)?;
                let mut bots = stmt
                    .query_map([team], bot_from_row)
                    .map_err(internal)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(internal)?;
                for bot in &mut bots {
                    bot.endpoints = bot_endpoints(c, bot.id.as_str())?;
                }
                Ok(bots)
            })
            .await
    }

    async fn list_webhooks(&self, team: &TeamId) -> StoreResult<Vec<Endpoint>> {
        let team = team.as_str().to_owned();
        self.conns
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE team_id = ?1 AND kind = ?2 ORDER BY created_at, id"
                    ))
                    .map_err(internal)?;
                let rows = stmt
                    .query_map(params![team, EndpointKind::Webhook.as_str()], endpoint_from_row)
                    .map_err(internal)?;
                rows.map(|r| r.map_err(internal)).collect()
            })
            .await
    }

    async fn get_endpoint(&self, team: &TeamId, id: &EndpointId) -> StoreResult<Endpoint> {
        let (team, id) = (team.as_str().to_owned(), id.as_str().to_owned());
        self.conns.read(move |c| load_endpoint(c, &team, &id)).await
    }

    async fn update_webhook(&self, team: &TeamId, id: &EndpointId, patch: &WebhookPatch) -> StoreResult<Endpoint> {
        let (team, id, patch) = (team.as_str().to_owned(), id.as_str().to_owned(), patch.clone());
        self.conns
            .write(move |c| {
                let mut e = load_endpoint(c, &team, &id)?;
                if let Some(name) = patch.name {
                    e.name = name;
                }
                if let Some(url) = patch.url {
                    e.url = url;
                }
                if let Some(types) = patch.event_types {
                    e.event_types = types;
                }
                if let Some(status) = patch.status {
                    e.status = status;
                }
                c.execute(
                    "UPDATE endpoints SET name = ?1, url = ?2, event_types = ?3, status = ?4 WHERE id = ?5",
                    params![e.name, e.url, event_types_json(&e.event_types), e.status.as_str(), id],
                )
                .map_err(internal)?;
                Ok(e)
            })
            .await
    }

    async fn delete_endpoint(&self, team: &TeamId, id: &EndpointId) -> StoreResult<()> {
        let (team, id) = (team.as_str().to_owned(), id.as_str().to_owned());
        self.conns
            .write(move |c| {
                let n = c
                    .execute(
                        "DELETE FROM endpoints WHERE id = ?1 AND team_id = ?2",
                        params![id, team],
                    )
                    .map_err(internal)?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                // Every delivery that left `pending` has an attempt in the log;
                // the pending ones are in the three partial indexes (schema 4).
                c.execute(
                    "DELETE FROM deliveries WHERE seq IN (
                         SELECT delivery_seq FROM attempts WHERE endpoint_id = ?1
                         UNION ALL SELECT seq FROM deliveries
                             WHERE state = 'pending' AND ordered = 0 AND locked_until IS NULL AND endpoint_id = ?1
                         UNION ALL SELECT seq FROM deliveries
                             WHERE state = 'pending' AND ordered = 0 AND locked_until IS NOT NULL AND endpoint_id = ?1
                         UNION ALL SELECT seq FROM deliveries WHERE state = 'pending' AND ordered = 1 AND endpoint_id = ?1)",
                    [&id],
                )
                .map_err(internal)?;
                c.execute("DELETE FROM attempts WHERE endpoint_id = ?1", [&id])
                    .map_err(internal)?;
                Ok(())
            })
            .await
    }

    async fn publish(&self, event: NewEvent, lease: &Lease) -> StoreResult<PublishOutcome> {
        let lease = lease.clone();
        self.conns.write_shared(move |c| publish_in(c, event, &lease)).await
    }

    async fn publish_bot_events(
        &self,
        bot: &BotId,
        events: Vec<NewBotEvent>,
        lease: Option<&Lease>,
    ) -> StoreResult<BotPublishOutcome> {
        let (bot, lease) = (bot.as_str().to_owned(), lease.cloned());
        self.conns
            .write_shared(move |c| publish_bot_in(c, &bot, events, lease.as_ref()))
            .await
    }

    async fn renew(&self, deliveries: &[DeliveryId], lease: &Lease) -> StoreResult<()> {
        let (ids, lease): (Vec<i64>, Lease) = (deliveries.iter().map(|d| d.0).collect(), lease.clone());
        self.conns
            .write(move |c| {
                let mut stmt = c
                    .prepare_cached("UPDATE deliveries SET locked_until = ?1 WHERE seq = ?2 AND locked_by = ?3")
                    .map_err(internal)?;
                for id in ids {
                    stmt.execute(params![lease.until_ms, id, lease.node])
                        .map_err(internal)?;
                }
                Ok(())
            })
            .await
    }

    fn is_shared(&self) -> bool {
        false
    }

    async fn subscribe(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<crate::StoreSignal>>> {
        Ok(None)
    }

    async fn announce_endpoint_changed(&self, _endpoint: &EndpointId) -> StoreResult<()> {
        Ok(())
    }

    async fn resend(
        &self,
        team: &TeamId,
        webhook: &EndpointId,
        event: &EventId,
        lease: &Lease,
        now_ms: i64,
    ) -> StoreResult<ManualOutcome> {
        let (team, webhook, event, lease) = (
            team.as_str().to_owned(),
            webhook.as_str().to_owned(),
            event.as_str().to_owned(),
            lease.clone(),
        );
        self.conns
            .write(move |c| {
                let endpoint = match manual_target(c, &team, &webhook)? {
                    Ok(endpoint) => endpoint,
                    Err(refused) => return Ok(refused),
                };
                let stored = c
                    .query_row(
                        "SELECT event_type, body FROM events WHERE id = ?1 AND team_id = ?2",
                        params![event, team],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)),
                    )
                    .optional()
                    .map_err(internal)?;
                let Some((event_type, body)) = stored else {
                    return Ok(ManualOutcome::UnknownEvent);
                };
                let event_type = event_type_from(&event_type).map_err(internal)?;
                if !event_type.is_team_webhook_type() {
                    return Ok(ManualOutcome::NotAWebhookEvent);
                }
                let delivery = insert_manual_delivery(
                    c,
                    &endpoint,
                    EventId::from_stored(event),
                    event_type,
                    Bytes::from(body),
                    now_ms,
                    &lease,
                )?;
                Ok(ManualOutcome::Created(delivery))
            })
            .await
    }

    async fn publish_test_event(
        &self,
        event: NewEvent,
        webhook: &EndpointId,
        lease: &Lease,
    ) -> StoreResult<ManualOutcome> {
        let (webhook, lease) = (webhook.as_str().to_owned(), lease.clone());
        self.conns
            .write(move |c| {
                let endpoint = match manual_target(c, &event.team_id, &webhook)? {
                    Ok(endpoint) => endpoint,
                    Err(refused) => return Ok(refused),
                };
                c.prepare_cached(
                    "INSERT INTO events (id, team_id, event_type, created_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        event.id.as_str(),
                        event.team_id,
                        event.event_type.as_str(),
                        event.created_at,
                        &event.body[..]
                    ])
                })
                .map_err(internal)?;
                let delivery = insert_manual_delivery(
                    c,
                    &endpoint,
                    event.id,
                    event.event_type,
                    event.body,
                    event.created_at,
                    &lease,
                )?;
                Ok(ManualOutcome::Created(delivery))
            })
            .await
    }

    async fn claim_due(&self, now_ms: i64, limit: usize, lease: &Lease) -> StoreResult<Vec<ClaimedDelivery>> {
        let lease = lease.clone();
        self.conns
            .write(move |c| {
                // Free work in due order, then work whose lease ran out (its
                // holder lost track of it): each read from its own index, so
                // neither steps over what is leased and still held.
                let mut claimed = Vec::new();
                for sql in [CLAIM_FREE, CLAIM_EXPIRED] {
                    let left = limit.saturating_sub(claimed.len());
                    if left == 0 {
                        break;
                    }
                    let mut stmt = c.prepare_cached(sql).map_err(internal)?;
                    let rows = stmt
                        .query_map(params![now_ms, left as i64], claimed_from_row)
                        .map_err(internal)?;
                    for row in rows {
                        claimed.push(row.map_err(internal)?);
                    }
                }
                lease_all(c, &claimed, &lease)?;
                Ok(claimed)
            })
            .await
    }

    async fn claim_ordered(
        &self,
        now_ms: i64,
        endpoints: usize,
        run: usize,
        lease: &Lease,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let lease = lease.clone();
        self.conns
            .write(move |c| {
                // Per endpoint with pending ordered work: its first pending
                // delivery and the end of any lease it holds. An endpoint is
                // ready when nothing of it is leased and its head is due.
                let mut stmt = c
                    .prepare_cached(&format!(
                        "WITH heads AS (
                             SELECT endpoint_id, MIN(seq) AS head_seq, MAX(COALESCE(locked_until, 0)) AS lease_end
                             FROM deliveries WHERE state = 'pending' AND ordered = 1
                             GROUP BY endpoint_id
                         ),
                         ready AS (
                             SELECT h.endpoint_id FROM heads h
                             JOIN deliveries hd ON hd.seq = h.head_seq
                             JOIN endpoints e ON e.id = h.endpoint_id
                             WHERE h.lease_end < ?1 AND hd.next_attempt_at <= ?1 AND e.status = 'active'
                             ORDER BY hd.next_attempt_at
                             LIMIT ?2
                         ),
                         ranked AS (
                             SELECT d.seq AS seq, ROW_NUMBER() OVER (PARTITION BY d.endpoint_id ORDER BY d.seq) AS rn
                             FROM deliveries d JOIN ready r ON r.endpoint_id = d.endpoint_id
                             WHERE d.state = 'pending' AND d.ordered = 1
                         )
                         SELECT {CLAIM_COLUMNS}
                         FROM ranked k
                         JOIN deliveries d ON d.seq = k.seq
                         JOIN endpoints e ON e.id = d.endpoint_id
                         JOIN events v ON v.id = d.event_id
                         WHERE k.rn <= ?3
                         ORDER BY d.endpoint_id, d.seq"
                    ))
                    .map_err(internal)?;
                let claimed = stmt
                    .query_map(params![now_ms, endpoints as i64, run as i64], claimed_from_row)
                    .map_err(internal)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(internal)?;
                lease_all(c, &claimed, &lease)?;
                Ok(claimed)
            })
            .await
    }

    async fn next_due_at(&self, now_ms: i64) -> StoreResult<Option<i64>> {
        self.conns
            .read(move |c| {
                // Unordered: the first free delivery in due order, and the
                // first lease to run out (claimable the millisecond after;
                // a leased unordered delivery is never due after its lease).
                let first = |sql: &str| {
                    c.prepare_cached(sql)
                        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)).optional())
                        .map_err(internal)
                };
                let free = first(
                    "SELECT d.next_attempt_at FROM deliveries d INDEXED BY deliveries_due
                     JOIN endpoints e ON e.id = d.endpoint_id
                     WHERE d.state = 'pending' AND d.ordered = 0 AND d.locked_until IS NULL AND e.status = 'active'
                     ORDER BY d.next_attempt_at LIMIT 1",
                )?;
                let expiring = first(
                    "SELECT MAX(d.next_attempt_at, d.locked_until + 1) FROM deliveries d INDEXED BY deliveries_leased
                     JOIN endpoints e ON e.id = d.endpoint_id
                     WHERE d.state = 'pending' AND d.ordered = 0 AND d.locked_until IS NOT NULL AND e.status = 'active'
                     ORDER BY d.locked_until LIMIT 1",
                )?;
                let unordered = match (free, expiring) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                // An ordered endpoint is claimable when its head is due and its
                // lease (if any) has ended: the later of the two.
                let ordered: Option<i64> = c
                    .query_row(
                        "WITH heads AS (
                             SELECT endpoint_id, MIN(seq) AS head_seq, MAX(COALESCE(locked_until, 0)) AS lease_end
                             FROM deliveries WHERE state = 'pending' AND ordered = 1
                             GROUP BY endpoint_id
                         )
                         SELECT MIN(MAX(hd.next_attempt_at, CASE WHEN h.lease_end >= ?1 THEN h.lease_end + 1 ELSE 0 END))
                         FROM heads h JOIN deliveries hd ON hd.seq = h.head_seq
                         JOIN endpoints e ON e.id = h.endpoint_id
                         WHERE e.status = 'active'",
                        [now_ms],
                        |r| r.get(0),
                    )
                    .map_err(internal)?;
                Ok(match (unordered, ordered) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                })
            })
            .await
    }

    async fn record_attempt(&self, record: AttemptRecord) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        match self.records.push(record, tx) {
            Queue::Nothing => {}
            // Refused, the job is dropped unrun and empties the queue.
            Queue::Now => {
                self.conns
                    .submit_shared_run(Arc::clone(&self.records).drain_job())
                    .await?
            }
            Queue::Gather => {
                // Its own task: the waiters behind this record must not
                // depend on its caller staying alive.
                let records = Arc::clone(&self.records);
                let writer = self.conns.writer();
                tokio::spawn(async move {
                    tokio::time::sleep(RECORD_GATHER).await;
                    if records.gathered() {
                        // Refused, the job is dropped unrun and its waiters hear it.
                        let _ = writer.submit_shared_run(Arc::clone(&records).drain_job()).await;
                    }
                });
            }
        }
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer stopped".into()))?
    }

    async fn fail_endpoint(&self, last: AttemptRecord, drop_reason: &str) -> StoreResult<usize> {
        let reason = drop_reason.to_owned();
        self.conns
            .write(move |c| {
                record_many(c, &[&last])?;
                c.execute(
                    "UPDATE endpoints SET status = ?1 WHERE id = ?2",
                    params![EndpointStatus::Failed.as_str(), last.endpoint_id.as_str()],
                )
                .map_err(internal)?;
                let mut pending = c
                    .prepare_cached(
                        "SELECT d.seq, d.event_id, v.event_type, d.attempts, e.url FROM deliveries d
                         JOIN events v ON v.id = d.event_id JOIN endpoints e ON e.id = d.endpoint_id
                         WHERE d.endpoint_id = ?1 AND d.state = 'pending' AND d.ordered = 1 ORDER BY d.seq",
                    )
                    .map_err(internal)?;
                let dropped = pending
                    .query_map([last.endpoint_id.as_str()], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, u32>(3)?,
                            r.get::<_, String>(4)?,
                        ))
                    })
                    .map_err(internal)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(internal)?;
                for (seq, event_id, event_type, attempts, url) in &dropped {
                    let record = AttemptRecord {
                        id: AttemptId::generate(last.timestamp_ms),
                        delivery: DeliveryId(*seq),
                        team_id: last.team_id.clone(),
                        endpoint_id: last.endpoint_id.clone(),
                        event_id: EventId::from_stored(event_id.clone()),
                        event_type: event_type_from(event_type).map_err(internal)?,
                        attempt: attempts + 1,
                        timestamp_ms: last.timestamp_ms,
                        status: AttemptStatus::Dropped,
                        duration_ms: 0,
                        request_url: url.clone(),
                        request_headers: Vec::new(),
                        response: None,
                        error: Some(reason.clone()),
                        next: DeliveryNext::Dropped,
                        keep_lease_until: None,
                    };
                    record_many(c, &[&record])?;
                }
                Ok(dropped.len())
            })
            .await
    }

    async fn release(&self, deliveries: &[DeliveryId]) -> StoreResult<()> {
        let ids: Vec<i64> = deliveries.iter().map(|d| d.0).collect();
        self.conns
            .write(move |c| {
                let mut stmt = c
                    .prepare_cached("UPDATE deliveries SET locked_until = NULL, locked_by = NULL WHERE seq = ?1")
                    .map_err(internal)?;
                for id in ids {
                    stmt.execute([id]).map_err(internal)?;
                }
                Ok(())
            })
            .await
    }

    async fn release_node(&self, node: &str) -> StoreResult<()> {
        let node = node.to_owned();
        self.conns
            .write(move |c| {
                c.execute(
                    "UPDATE deliveries SET locked_until = NULL, locked_by = NULL WHERE locked_by = ?1",
                    [node],
                )
                .map_err(internal)?;
                Ok(())
            })
            .await
    }

    async fn list_attempts(
        &self,
        team: &TeamId,
        endpoint: &EndpointId,
        filter: &AttemptFilter,
    ) -> StoreResult<Vec<Attempt>> {
        let (team, endpoint, filter) = (team.as_str().to_owned(), endpoint.as_str().to_owned(), filter.clone());
        self.conns
            .read(move |c| {
                // The event filter reads the event's few attempts; the others
                // read the endpoint's log in order (see migration 3).
                let unsuccessful = filter.status.is_some_and(|s| s != AttemptStatus::Success);
                let index = match (&filter.event_id, unsuccessful) {
                    (Some(_), _) => "attempts_event",
                    (None, true) => "attempts_endpoint_unsuccessful",
                    (None, false) => "attempts_endpoint",
                };
                let mut sql = format!(
                    "SELECT {ATTEMPT_COLUMNS}, NULL, NULL FROM attempts a INDEXED BY {index}
                     WHERE a.endpoint_id = ?1 AND a.team_id = ?2"
                );
                let mut args: Vec<rusqlite::types::Value> = vec![endpoint.into(), team.into()];
                if let Some(status) = filter.status {
                    args.push(status.as_str().to_owned().into());
                    sql.push_str(&format!(" AND a.status = ?{}", args.len()));
                    if unsuccessful {
                        // Lets the partial index of unsuccessful attempts serve.
                        sql.push_str(" AND a.status <> 'success'");
                    }
                }
                if let Some(event) = &filter.event_id {
                    args.push(event.as_str().to_owned().into());
                    sql.push_str(&format!(" AND a.event_id = ?{}", args.len()));
                }
                if let Some(before) = filter.before {
                    args.push(before.timestamp_ms.into());
                    args.push(before.seq.into());
                    let (t, q) = (args.len() - 1, args.len());
                    sql.push_str(&format!(
                        " AND (a.timestamp < ?{t} OR (a.timestamp = ?{t} AND a.seq < ?{q}))"
                    ));
                }
                args.push((filter.limit as i64).into());
                sql.push_str(&format!(" ORDER BY a.timestamp DESC, a.seq DESC LIMIT ?{}", args.len()));
                let mut stmt = c.prepare_cached(&sql).map_err(internal)?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(args), attempt_from_row)
                    .map_err(internal)?;
                rows.map(|r| r.map_err(internal)).collect()
            })
            .await
    }

    async fn get_attempt(&self, team: &TeamId, id: &AttemptId) -> StoreResult<Attempt> {
        let (team, id) = (team.as_str().to_owned(), id.as_str().to_owned());
        self.conns
            .read(move |c| {
                c.query_row(
                    &format!(
                        "SELECT {ATTEMPT_COLUMNS}, a.response_body, COALESCE(dl.body, v.body) FROM attempts a
                         LEFT JOIN events v ON v.id = a.event_id
                         LEFT JOIN deliveries dl ON dl.seq = a.delivery_seq
                         WHERE a.id = ?1 AND a.team_id = ?2"
                    ),
                    params![id, team],
                    attempt_from_row,
                )
                .optional()
                .map_err(internal)?
                .ok_or(StoreError::NotFound)
            })
            .await
    }
}

const ENDPOINT_COLUMNS: &str = "id, team_id, name, url, event_types, status, secret, created_at, bot_id, metadata";

/// `position` orders a bot's endpoints as its Create Bot request listed them.
fn insert_endpoint(c: &Connection, e: &Endpoint, position: usize) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO endpoints (id, kind, team_id, bot_id, name, url, event_types, status, secret, metadata, created_at, position)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            e.id.as_str(),
            e.id.kind().as_str(),
            e.team_id.as_str(),
            e.bot_id.as_ref().map(|b| b.as_str()),
            e.name,
            e.url,
            event_types_json(&e.event_types),
            e.status.as_str(),
            e.secret.reveal(),
            e.metadata,
            e.created_at,
            position as i64
        ])
    })
    .map_err(internal)?;
    Ok(())
}

const BOT_COLUMNS: &str =
    "id, team_id, meeting_url, metadata, recording_id, participant_events_id, transcript_id, created_at";

fn bot_from_row(r: &Row<'_>) -> rusqlite::Result<Bot> {
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

/// A bot's real-time endpoints in the order its Create Bot request gave them:
/// insertion order, since ids minted in the same millisecond sort at random.
fn bot_endpoints(c: &Connection, bot: &str) -> StoreResult<Vec<Endpoint>> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE bot_id = ?1 ORDER BY position"
        ))
        .map_err(internal)?;
    let rows = stmt.query_map([bot], endpoint_from_row).map_err(internal)?;
    rows.map(|r| r.map_err(internal)).collect()
}

/// What a claim reads of each delivery, in [`claimed_from_row`] order.
macro_rules! claim_columns {
    () => {
        "d.seq, d.team_id, d.event_id, v.event_type, COALESCE(d.body, v.body), d.endpoint_id, e.url, e.secret, d.attempts, \
         d.next_attempt_at"
    };
}

/// A claim of due unordered work read through one of the two partial
/// indexes of schema 4 (`?1` now, `?2` the limit): what it reads, and the
/// conditions both share; `$only` names the index's own work.
macro_rules! claim_through {
    ($index:literal, $only:literal, $order:literal) => {
        concat!(
            "SELECT ",
            claim_columns!(),
            " FROM deliveries d INDEXED BY ",
            $index,
            " JOIN endpoints e ON e.id = d.endpoint_id
              JOIN events v ON v.id = d.event_id
              WHERE d.state = 'pending' AND d.ordered = 0 AND ",
            $only,
            " AND d.next_attempt_at <= ?1 AND e.status = 'active'
              ORDER BY ",
            $order,
            " LIMIT ?2"
        )
    };
}

/// Due free work, in due order.
const CLAIM_FREE: &str = claim_through!("deliveries_due", "d.locked_until IS NULL", "d.next_attempt_at, d.seq");

/// Due work whose lease ran out, oldest lease first.
const CLAIM_EXPIRED: &str = claim_through!(
    "deliveries_leased",
    "d.locked_until IS NOT NULL AND d.locked_until < ?1",
    "d.locked_until, d.seq"
);

const CLAIM_COLUMNS: &str = claim_columns!();

fn claimed_from_row(r: &Row<'_>) -> rusqlite::Result<ClaimedDelivery> {
    Ok(ClaimedDelivery {
        id: DeliveryId(r.get(0)?),
        team_id: TeamId::from_stored(r.get(1)?),
        event_id: EventId::from_stored(r.get(2)?),
        event_type: event_type_from(r.get_ref(3)?.as_str()?)?,
        body: Bytes::from(r.get::<_, Vec<u8>>(4)?),
        endpoint_id: EndpointId::from_stored(r.get(5)?),
        url: r.get(6)?,
        secret: secret_from(r.get_ref(7)?.as_str()?)?,
        attempt: r.get::<_, u32>(8)? + 1,
        due_ms: r.get(9)?,
    })
}

fn lease_all(c: &Connection, claimed: &[ClaimedDelivery], lease: &Lease) -> StoreResult<()> {
    let mut lock = c
        .prepare_cached("UPDATE deliveries SET locked_until = ?1, locked_by = ?2 WHERE seq = ?3")
        .map_err(internal)?;
    for d in claimed {
        lock.execute(params![lease.until_ms, lease.node, d.id.0])
            .map_err(internal)?;
    }
    Ok(())
}

fn endpoint_from_row(r: &Row<'_>) -> rusqlite::Result<Endpoint> {
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
        created_at: r.get(7)?,
    })
}

fn load_endpoint(c: &Connection, team: &str, id: &str) -> StoreResult<Endpoint> {
    c.query_row(
        &format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = ?1 AND team_id = ?2"),
        params![id, team],
        endpoint_from_row,
    )
    .optional()
    .map_err(internal)?
    .ok_or(StoreError::NotFound)
}

/// The webhook a manual delivery goes to: the team's, and active. The
/// outcome to answer instead when it may not take one.
fn manual_target(c: &Connection, team: &str, webhook: &str) -> StoreResult<Result<Endpoint, ManualOutcome>> {
    let endpoint = match load_endpoint(c, team, webhook) {
        Ok(endpoint) if endpoint.id.kind() == EndpointKind::Webhook => endpoint,
        Ok(_) | Err(StoreError::NotFound) => return Ok(Err(ManualOutcome::UnknownWebhook)),
        Err(other) => return Err(other),
    };
    if endpoint.status != EndpointStatus::Active {
        return Ok(Err(ManualOutcome::Deactivated));
    }
    Ok(Ok(endpoint))
}

/// A new pending delivery marked manual, due now and leased to the caller;
/// it sends the event's stored body.
fn insert_manual_delivery(
    c: &Connection,
    endpoint: &Endpoint,
    event_id: EventId,
    event_type: EventType,
    body: Bytes,
    now_ms: i64,
    lease: &Lease,
) -> StoreResult<ClaimedDelivery> {
    c.prepare_cached(
        "INSERT INTO deliveries (event_id, endpoint_id, team_id, state, attempts, next_attempt_at, locked_until, locked_by, manual, created_at)
         VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?5, ?6, 1, ?4)",
    )
    .and_then(|mut s| {
        s.execute(params![
            event_id.as_str(),
            endpoint.id.as_str(),
            endpoint.team_id.as_str(),
            now_ms,
            lease.until_ms,
            lease.node
        ])
    })
    .map_err(internal)?;
    Ok(ClaimedDelivery::fresh(
        DeliveryId(c.last_insert_rowid()),
        endpoint,
        event_id,
        event_type,
        body,
    ))
}

const ATTEMPT_COLUMNS: &str = "a.seq, a.id, a.endpoint_id, a.event_id, a.event_type, a.attempt, a.timestamp, a.status, \
     a.duration_ms, a.request_url, a.request_headers, a.response_status, a.response_headers, a.error, a.manual";

fn attempt_from_row(r: &Row<'_>) -> rusqlite::Result<Attempt> {
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

fn publish_in(c: &Connection, event: NewEvent, lease: &Lease) -> StoreResult<PublishOutcome> {
    if event.id_given {
        let existing = c
            .prepare_cached("SELECT event_type, created_at, body FROM events WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row([event.id.as_str()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?))
                })
                .optional()
            })
            .map_err(internal)?;
        if let Some((event_type, created_at, body)) = existing {
            let stored_data = stored_data_of(&body);
            if same_payload(&event_type, &stored_data, event.event_type.as_str(), &event.data) {
                return Ok(PublishOutcome::Existing(StoredEvent {
                    id: event.id,
                    event_type: event_type_from(&event_type).map_err(internal)?,
                    created_at,
                }));
            }
            return Ok(PublishOutcome::Conflict);
        }
    }
    // Every publish runs these statements: each is parsed once per connection.
    let account: Option<String> = c
        .prepare_cached("SELECT account_id FROM teams WHERE id = ?1")
        .and_then(|mut s| s.query_row([&event.team_id], |r| r.get(0)).optional())
        .map_err(internal)?;
    match account {
        None => return Ok(PublishOutcome::UnknownTeam),
        Some(account) if account != event.account_id => return Ok(PublishOutcome::AccountMismatch),
        Some(_) => {}
    }
    c.prepare_cached("INSERT INTO events (id, team_id, event_type, created_at, body) VALUES (?1, ?2, ?3, ?4, ?5)")
        .and_then(|mut s| {
            s.execute(params![
                event.id.as_str(),
                event.team_id,
                event.event_type.as_str(),
                event.created_at,
                &event.body[..]
            ])
        })
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                StoreError::Conflict("event id already used".into())
            }
            other => internal(other),
        })?;

    let mut endpoints = c
        .prepare_cached(
            "SELECT id, url, secret, event_types FROM endpoints WHERE team_id = ?1 AND kind = ?2 AND status = 'active'",
        )
        .map_err(internal)?;
    let subscribed: Vec<(String, String, String)> = endpoints
        .query_map(params![event.team_id, EndpointKind::Webhook.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(internal)?
        .filter_map(|r| r.ok())
        .filter(|(_, _, _, types)| subscribes(types, event.event_type))
        .map(|(id, url, secret, _)| (id, url, secret))
        .collect();

    let mut insert = c
        .prepare_cached(
            "INSERT INTO deliveries (event_id, endpoint_id, team_id, state, attempts, next_attempt_at, locked_until, locked_by, created_at)
             VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?5, ?6, ?4)",
        )
        .map_err(internal)?;
    let team_id = TeamId::from_stored(event.team_id.clone());
    let mut deliveries = Vec::with_capacity(subscribed.len());
    for (endpoint_id, url, secret) in subscribed {
        insert
            .execute(params![
                event.id.as_str(),
                endpoint_id,
                event.team_id,
                event.created_at,
                lease.until_ms,
                lease.node
            ])
            .map_err(internal)?;
        deliveries.push(ClaimedDelivery {
            id: DeliveryId(c.last_insert_rowid()),
            team_id: team_id.clone(),
            event_id: event.id.clone(),
            event_type: event.event_type,
            body: event.body.clone(),
            endpoint_id: EndpointId::from_stored(endpoint_id),
            url,
            secret: secret_from(&secret).map_err(internal)?,
            attempt: 1,
            due_ms: 0,
        });
    }
    Ok(PublishOutcome::Created {
        event: StoredEvent {
            id: event.id,
            event_type: event.event_type,
            created_at: event.created_at,
        },
        deliveries,
    })
}

fn publish_bot_in(
    c: &Connection,
    bot_id: &str,
    events: Vec<NewBotEvent>,
    lease: Option<&Lease>,
) -> StoreResult<BotPublishOutcome> {
    let bot = c
        .prepare_cached(&format!("SELECT {BOT_COLUMNS} FROM bots WHERE id = ?1"))
        .and_then(|mut s| s.query_row([bot_id], bot_from_row).optional())
        .map_err(internal)?;
    let Some(bot) = bot else {
        return Ok(BotPublishOutcome::UnknownBot);
    };
    let context = bot.envelope_context();
    let endpoints: Vec<Endpoint> = bot_endpoints(c, bot_id)?
        .into_iter()
        .filter(|e| e.status == EndpointStatus::Active)
        .collect();
    let mut insert_event = c
        .prepare_cached("INSERT INTO events (id, team_id, event_type, created_at, body) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(internal)?;
    let mut insert_delivery = c
        .prepare_cached(
            "INSERT INTO deliveries (event_id, endpoint_id, team_id, state, ordered, attempts, next_attempt_at, locked_until, locked_by, body, created_at)
             VALUES (?1, ?2, ?3, 'pending', 1, 0, ?4, ?5, ?6, ?7, ?4)",
        )
        .map_err(internal)?;
    let mut stored = Vec::with_capacity(events.len());
    let mut deliveries = Vec::new();
    for event in events {
        insert_event
            .execute(params![
                event.id.as_str(),
                bot.team_id.as_str(),
                event.event_type.as_str(),
                event.created_at,
                event.data.as_bytes()
            ])
            .map_err(internal)?;
        let data = serde_json::value::RawValue::from_string(event.data)
            .map_err(|e| StoreError::Internal(format!("bot event data is not JSON: {e}")))?;
        for endpoint in endpoints.iter().filter(|e| e.event_types.contains(&event.event_type)) {
            let body = realtime_body(
                event.event_type,
                &data,
                endpoint.id.as_str(),
                &endpoint.metadata,
                &context,
            );
            insert_delivery
                .execute(params![
                    event.id.as_str(),
                    endpoint.id.as_str(),
                    bot.team_id.as_str(),
                    event.created_at,
                    lease.map(|l| l.until_ms),
                    lease.map(|l| l.node.as_str()),
                    &body[..]
                ])
                .map_err(internal)?;
            deliveries.push(ClaimedDelivery::fresh(
                DeliveryId(c.last_insert_rowid()),
                endpoint,
                event.id.clone(),
                event.event_type,
                Bytes::from(body),
            ));
        }
        stored.push(StoredEvent {
            id: event.id,
            event_type: event.event_type,
            created_at: event.created_at,
        });
    }
    Ok(BotPublishOutcome::Created {
        events: stored,
        deliveries,
    })
}

/// Attempt records per statement, largest first. A run of records is cut
/// into chunks of these sizes, so that each size's statement is parsed once
/// and stays in the connection's statement cache.
const RECORD_CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// Logs attempts and moves their deliveries on, a chunk of records per
/// statement pair.
///
/// Each attempt joins the log with its delivery's `manual` mark; no delivery
/// row means its endpoint was deleted while the attempt was in flight, and
/// its log went with it, so that record leaves nothing. Both statements are
/// `OR FAIL`: a failure ends the whole batch's transaction or savepoint
/// anyway, so SQLite need not copy each page they touch to a statement
/// journal first. No `RETURNING`: SQLite buffers its rows in a temporary
/// b-tree, opened, zeroed and closed for each statement. One statement for
/// many records pays once for what every statement costs (opening and
/// closing a cursor on each table and index, halting, resetting).
fn record_many(c: &Connection, records: &[&AttemptRecord]) -> StoreResult<()> {
    static SQL: OnceLock<Vec<(String, String)>> = OnceLock::new();
    let sql = SQL.get_or_init(|| RECORD_CHUNKS.into_iter().map(record_sql).collect());
    let mut rest = records;
    while !rest.is_empty() {
        let size = chunk_size(rest);
        let (chunk, tail) = rest.split_at(RECORD_CHUNKS[size]);
        record_chunk(c, chunk, &sql[size]).map_err(internal)?;
        rest = tail;
    }
    Ok(())
}

/// The next chunk's size, as an index into [`RECORD_CHUNKS`]: the largest
/// that `rest` fills without holding one delivery twice (an `UPDATE … FROM`
/// would apply only one of its two rows).
fn chunk_size(rest: &[&AttemptRecord]) -> usize {
    let mut seen = std::collections::HashSet::with_capacity(RECORD_CHUNKS[0]);
    let distinct = rest
        .iter()
        .take(RECORD_CHUNKS[0])
        .take_while(|r| seen.insert(r.delivery.0))
        .count();
    RECORD_CHUNKS
        .iter()
        .position(|&n| n <= distinct)
        .unwrap_or(RECORD_CHUNKS.len() - 1)
}

const RECORD_INSERT_COLUMNS: &str = "id, delivery_seq, team_id, endpoint_id, event_id, event_type, attempt, timestamp,
    status, duration_ms, request_url, request_headers, response_status, response_headers, response_body, error, manual";
const RECORD_INSERT_PARAMS: usize = 16;
const RECORD_UPDATE_PARAMS: usize = 5;

/// The statement pair for `n` records: `n` rows of values joined with the
/// deliveries (`CROSS JOIN` keeps the values the outer loop, so the log rows
/// are numbered in the records' order); a lone record binds them directly.
fn record_sql(n: usize) -> (String, String) {
    if n == 1 {
        return (
            format!(
                "INSERT OR FAIL INTO attempts ({RECORD_INSERT_COLUMNS})
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, manual
                 FROM deliveries WHERE seq = ?2"
            ),
            "UPDATE OR FAIL deliveries SET state = ?1, attempts = ?2, next_attempt_at = ?3, locked_until = ?4,
                 locked_by = CASE WHEN ?4 IS NULL THEN NULL ELSE locked_by END
             WHERE seq = ?5"
                .to_owned(),
        );
    }
    let rows = |width: usize| {
        let row = format!("({})", vec!["?"; width].join(","));
        vec![row; n].join(",")
    };
    let picked = (1..=RECORD_INSERT_PARAMS)
        .map(|i| format!("v.column{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    (
        format!(
            "INSERT OR FAIL INTO attempts ({RECORD_INSERT_COLUMNS})
             SELECT {picked}, d.manual
             FROM (VALUES {}) AS v CROSS JOIN deliveries AS d ON d.seq = v.column2",
            rows(RECORD_INSERT_PARAMS)
        ),
        format!(
            "UPDATE OR FAIL deliveries SET state = v.column1, attempts = v.column2, next_attempt_at = v.column3,
                 locked_until = v.column4, locked_by = CASE WHEN v.column4 IS NULL THEN NULL ELSE locked_by END
             FROM (VALUES {}) AS v WHERE deliveries.seq = v.column5",
            rows(RECORD_UPDATE_PARAMS)
        ),
    )
}

fn record_chunk(c: &Connection, chunk: &[&AttemptRecord], sql: &(String, String)) -> rusqlite::Result<()> {
    let (insert_sql, update_sql) = sql;
    let mut insert = c.prepare_cached(insert_sql)?;
    for (i, r) in chunk.iter().enumerate() {
        let at = i * RECORD_INSERT_PARAMS;
        let response = r.response.as_ref();
        insert.raw_bind_parameter(at + 1, r.id.as_str())?;
        insert.raw_bind_parameter(at + 2, r.delivery.0)?;
        insert.raw_bind_parameter(at + 3, r.team_id.as_str())?;
        insert.raw_bind_parameter(at + 4, r.endpoint_id.as_str())?;
        insert.raw_bind_parameter(at + 5, r.event_id.as_str())?;
        insert.raw_bind_parameter(at + 6, r.event_type.as_str())?;
        insert.raw_bind_parameter(at + 7, r.attempt)?;
        insert.raw_bind_parameter(at + 8, r.timestamp_ms)?;
        insert.raw_bind_parameter(at + 9, r.status.as_str())?;
        insert.raw_bind_parameter(at + 10, r.duration_ms)?;
        insert.raw_bind_parameter(at + 11, r.request_url.as_str())?;
        insert.raw_bind_parameter(at + 12, request_headers_stored(&r.request_headers, r.event_id.as_str()))?;
        insert.raw_bind_parameter(at + 13, response.map(|x| x.status))?;
        insert.raw_bind_parameter(at + 14, response.map(|x| headers_json(&x.headers)))?;
        insert.raw_bind_parameter(at + 15, response.map(|x| x.body.as_slice()))?;
        insert.raw_bind_parameter(at + 16, r.error.as_deref())?;
    }
    insert.raw_execute()?;
    let mut update = c.prepare_cached(update_sql)?;
    for (i, r) in chunk.iter().enumerate() {
        let at = i * RECORD_UPDATE_PARAMS;
        let (state, next_at) = delivery_move(r);
        update.raw_bind_parameter(at + 1, state)?;
        update.raw_bind_parameter(at + 2, r.attempt)?;
        update.raw_bind_parameter(at + 3, next_at)?;
        update.raw_bind_parameter(at + 4, r.keep_lease_until)?;
        update.raw_bind_parameter(at + 5, r.delivery.0)?;
    }
    update.raw_execute()?;
    Ok(())
}

fn exists(c: &Connection, sql: &str, arg: &str) -> StoreResult<bool> {
    c.query_row(sql, [arg], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
        .map_err(internal)
}

/// Stored values were written by this crate from the same enums; one that
/// does not parse means a newer binary or a damaged file, and is an error.
fn event_type_from(raw: &str) -> rusqlite::Result<EventType> {
    EventType::parse(raw).ok_or_else(|| bad_column(format!("unknown event type `{raw}`")))
}

fn secret_from(raw: &str) -> rusqlite::Result<Secret> {
    Secret::parse(raw).ok_or_else(|| bad_column("stored secret is not a whsec_ secret".into()))
}

fn bad_column(why: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, why.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(delivery: i64, attempt: u32, next: DeliveryNext) -> AttemptRecord {
        AttemptRecord {
            id: AttemptId::generate(1),
            delivery: DeliveryId(delivery),
            team_id: TeamId::from_stored("team_1".into()),
            endpoint_id: EndpointId::from_stored("ep_1".into()),
            event_id: EventId::from_stored(format!("evt_{delivery}")),
            event_type: EventType::MeetingCompleted,
            attempt,
            timestamp_ms: 1_000 + i64::from(attempt),
            status: AttemptStatus::Retrying,
            duration_ms: 3,
            request_url: "http://127.0.0.1:9/".into(),
            request_headers: vec![("webhook-id".into(), format!("evt_{delivery}"))],
            response: Some(ResponseRecord {
                status: 503,
                headers: vec![("retry-after".into(), "1".into())],
                body: b"busy".to_vec(),
            }),
            error: None,
            next,
            keep_lease_until: None,
        }
    }

    fn store_with_deliveries(n: i64) -> Connection {
        let c = Connection::open_in_memory().unwrap();
        schema::migrate(&c, schema::latest_version()).unwrap();
        for seq in 1..=n {
            c.execute(
                "INSERT INTO deliveries (seq, event_id, endpoint_id, team_id, state, next_attempt_at, locked_until,
                     locked_by, created_at, manual)
                 VALUES (?1, 'evt_' || ?1, 'ep_1', 'team_1', 'pending', 0, 5000, 'node', 0, ?1 = 2)",
                [seq],
            )
            .unwrap();
        }
        c
    }

    /// 70 records go as chunks of 64, 4, 1 and 1; one of them is for a
    /// delivery that no longer exists, and one delivery is attempted twice
    /// in the run (which cuts a chunk there): every other record is logged
    /// once, in order, with its response, and its delivery moves on.
    #[test]
    fn records_written_together_are_each_logged_in_order_and_move_their_delivery() {
        let c = store_with_deliveries(68);
        let mut records: Vec<AttemptRecord> = (1..=68).map(|d| record(d, 1, DeliveryNext::Succeeded)).collect();
        records[9] = record(10, 1, DeliveryNext::RetryAt(9_000));
        records.insert(40, record(999, 1, DeliveryNext::Succeeded));
        records.push(record(10, 2, DeliveryNext::Failed));
        assert_eq!(records.len(), 70);
        let refs: Vec<&AttemptRecord> = records.iter().collect();
        let len = |rest: &[&AttemptRecord]| RECORD_CHUNKS[chunk_size(rest)];
        assert_eq!(len(&refs), 64);
        assert_eq!(len(&refs[64..]), 4);
        assert_eq!(
            len(&refs[9..]),
            16,
            "the second attempt of delivery 10 is 60 records on"
        );
        record_many(&c, &refs).unwrap();

        type Logged = (i64, u32, String, i64, Option<i64>, Option<Vec<u8>>);
        let logged: Vec<Logged> = c
            .prepare(
                "SELECT delivery_seq, attempt, id, manual, response_status, response_body FROM attempts ORDER BY seq",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected: Vec<(i64, u32, String)> = records
            .iter()
            .filter(|r| r.delivery.0 != 999)
            .map(|r| (r.delivery.0, r.attempt, r.id.to_string()))
            .collect();
        let got: Vec<(i64, u32, String)> = logged.iter().map(|l| (l.0, l.1, l.2.clone())).collect();
        assert_eq!(got, expected);
        assert!(
            logged
                .iter()
                .all(|l| l.4 == Some(503) && l.5.as_deref() == Some(&b"busy"[..]))
        );
        let manual: Vec<i64> = logged.iter().filter(|l| l.3 == 1).map(|l| l.0).collect();
        assert_eq!(manual, vec![2], "the manual mark comes from the delivery");

        let state = |seq: i64| -> (String, i64, i64, Option<i64>) {
            c.query_row(
                "SELECT state, attempts, next_attempt_at, locked_until FROM deliveries WHERE seq = ?1",
                [seq],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap()
        };
        assert_eq!(state(1), ("succeeded".into(), 1, 1_001, None));
        assert_eq!(state(68), ("succeeded".into(), 1, 1_001, None));
        assert_eq!(state(10), ("failed".into(), 2, 1_002, None), "the later attempt wins");
    }

    /// A drain job the writer drops unrun empties the queue: its waiters
    /// are answered, and the next record queues a job of its own.
    #[tokio::test]
    async fn a_drain_job_dropped_unrun_answers_its_waiters() {
        let queue = Arc::new(RecordQueue::default());
        let (tx, rx) = oneshot::channel();
        assert!(matches!(
            queue.push(realtime(record(1, 1, DeliveryNext::Succeeded)), tx),
            Queue::Now
        ));
        drop(Arc::clone(&queue).drain_job());
        assert!(queue.lock().records.is_empty());
        assert!(rx.await.is_err(), "the waiter hears that its record was not written");
        let (tx, _rx) = oneshot::channel();
        assert!(
            matches!(
                queue.push(realtime(record(2, 1, DeliveryNext::Succeeded)), tx),
                Queue::Now
            ),
            "the next record queues a job again"
        );
    }

    fn realtime(mut r: AttemptRecord) -> AttemptRecord {
        r.endpoint_id = EndpointId::from_stored("rte_1".into());
        r
    }

    /// Team webhooks' records wait for one timer and then one job; a
    /// real-time record queues the job at once, and whatever waits joins it.
    #[test]
    fn records_share_one_job_and_real_time_ones_do_not_wait() {
        let c = store_with_deliveries(6);
        let queue = Arc::new(RecordQueue::default());
        let mut waiters = Vec::new();
        let mut push = |r: AttemptRecord| {
            let (tx, rx) = oneshot::channel();
            waiters.push(rx);
            queue.push(r, tx)
        };
        assert!(matches!(push(record(1, 1, DeliveryNext::Succeeded)), Queue::Gather));
        assert!(matches!(push(record(2, 1, DeliveryNext::Succeeded)), Queue::Nothing));
        assert!(matches!(
            push(realtime(record(3, 1, DeliveryNext::Succeeded))),
            Queue::Now
        ));
        assert!(matches!(push(record(4, 1, DeliveryNext::Succeeded)), Queue::Nothing));
        assert!(!queue.gathered(), "the real-time record's job takes the waiting ones");
        let (ok, done) = (Arc::clone(&queue).drain_job())(&c);
        assert!(ok);
        done(None);
        for mut rx in waiters.drain(..) {
            assert!(
                matches!(rx.try_recv(), Ok(Ok(()))),
                "each waiter hears its record was written"
            );
        }
        let logged: i64 = c.query_row("SELECT count(*) FROM attempts", [], |r| r.get(0)).unwrap();
        assert_eq!(logged, 4, "one job wrote all four");

        let (tx, _rx) = oneshot::channel();
        assert!(matches!(
            queue.push(record(5, 1, DeliveryNext::Succeeded), tx),
            Queue::Gather
        ));
        assert!(queue.gathered(), "the timer queues the job");
        let (tx, _rx) = oneshot::channel();
        assert!(matches!(
            queue.push(record(6, 1, DeliveryNext::Succeeded), tx),
            Queue::Nothing
        ));
        assert!(!queue.gathered(), "one job at a time");
    }
}

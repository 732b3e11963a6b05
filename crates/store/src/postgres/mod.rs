//! The PostgreSQL backend: one database shared by any number of `herald
//! serve` processes.
//!
//! PostgreSQL is the coordinator; Herald adds none of its own. Claims take
//! rows with `FOR UPDATE SKIP LOCKED` and put a lease on them, so no two
//! processes send the same attempt and a dead process's claims are taken
//! over when its leases run out. An ordered (real-time) endpoint is claimed
//! under a lock on its endpoint row, so only one process sends its run at a
//! time. `LISTEN/NOTIFY` tells the other processes about new claimable work
//! and changed endpoints, so nobody polls on the hot path.

mod batch;
mod schema;
pub use schema::latest_version;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, NoTls, Row};

use herald_domain::attempt::AttemptStatus;
use herald_domain::bot::realtime_body;
use herald_domain::event::{EventType, same_payload};
use herald_domain::ids::{AccountId, AttemptId, BotId, DeliveryId, EndpointId, EndpointKind, EventId, KeyId, TeamId};
use herald_domain::keys::KeyHash;
use herald_domain::signing::Secret;
use herald_domain::webhook::EndpointStatus;

use crate::codec::{
    delivery_move, event_types_from, event_types_json, headers_from, headers_json, request_headers_from,
    request_headers_stored, stored_data_of,
};
use crate::model::*;
use crate::{Store, StoreError, StoreResult, StoreSignal};

const ADMIN_KEY: &str = "admin_key_hash";
const WORK_CHANNEL: &str = "herald_work";
const ENDPOINT_CHANNEL: &str = "herald_endpoint";

/// Herald's store on a PostgreSQL database.
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    /// Publishes to store, taken in batches by [`batch::spawn_publishers`].
    publisher: mpsc::Sender<batch::PublishJob>,
    /// Attempts to record, taken in batches by [`batch::record_batches`].
    recorder: mpsc::Sender<batch::RecordJob>,
}

/// Maps a driver error: lost connections are `Unavailable` (worth a retry
/// later), the rest `Internal`.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if e.is_closed() || e.as_db_error().is_none() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Internal(e.to_string())
    }
}

/// `url` with schema `name` as the search path of its connections: Herald
/// opened on it keeps its tables there. For tests, which give each run a
/// schema of its own.
#[doc(hidden)]
pub fn schema_url(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{name}")
}

/// Drops schema `name` of the database at `url` with everything in it,
/// after ending the connections that still hold locks on its tables; gives
/// up after a few seconds rather than wait on a lock. It blocks, on a thread
/// with its own runtime, so that it works from `Drop` inside a runtime that
/// may be ending. For tests, which give each run a schema of its own.
#[doc(hidden)]
pub fn drop_schema_blocking(url: &str, name: &str) {
    const TERMINATE_HOLDERS: &str = "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
        JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()";
    let (url, name) = (url.to_owned(), name.to_owned());
    let cleanup = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        runtime.block_on(async move {
            let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await else {
                return;
            };
            tokio::spawn(connection);
            let _ = client.execute(TERMINATE_HOLDERS, &[&name]).await;
            let _ = client
                .batch_execute(&format!(
                    "SET lock_timeout = '3s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                ))
                .await;
        });
    });
    let _ = cleanup.join();
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("no database connection: {e}"))
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL) and applies migrations.
    pub async fn open(url: &str, pool_size: usize) -> StoreResult<Self> {
        Self::open_at_schema(url, pool_size, schema::latest_version()).await
    }

    /// Connects and migrates only up to schema `version`: what an older
    /// binary left behind, for the upgrade tests.
    #[doc(hidden)]
    pub async fn open_at_schema(url: &str, pool_size: usize, version: usize) -> StoreResult<Self> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))?;
        config.connect_timeout(Duration::from_secs(2));
        // Every query Herald makes is meant to find its rows through an
        // index. A plan is kept for the life of a connection once the
        // planner has settled on it, and one made while a table was still
        // small would go on scanning the whole table as it grows (seen in
        // the benchmark: the attempt batch joined deliveries by a full
        // scan). Sequential scans are therefore the planner's last resort
        // on Herald's connections; tables without a usable index still get
        // them.
        //
        // Plans are generic: the batch statements take arrays, and the
        // planner, seeing the few rows of each batch, would otherwise make a
        // fresh plan for every call (measured: 450 µs of planning per publish
        // batch, more than running it).
        const OPTIONS: &str = "-c enable_seqscan=off -c plan_cache_mode=force_generic_plan";
        let options = match config.get_options() {
            Some(given) => format!("{given} {OPTIONS}"),
            None => OPTIONS.to_owned(),
        };
        config.options(&options);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(2)))
            .create_timeout(Some(Duration::from_secs(2)))
            .recycle_timeout(Some(Duration::from_secs(2)))
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot build the connection pool: {e}")))?;
        let (recorder, records) = mpsc::channel(4096);
        tokio::spawn(batch::record_batches(pool.clone(), records));
        let (publisher, publishes) = mpsc::channel(4096);
        batch::spawn_publishers(pool.clone(), publishes);
        let store = Self {
            pool,
            config,
            publisher,
            recorder,
        };
        let mut client = store.client().await?;
        schema::migrate(&mut client, version).await?;
        Ok(store)
    }

    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO meta (key, value) VALUES ('ready_probe', now()::text)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[],
            )
            .await
            .map_err(pg_error)
            .map(|_| ())
    }

    async fn admin_key_hash(&self) -> StoreResult<Option<KeyHash>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&ADMIN_KEY])
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| KeyHash::from_stored(r.get(0))))
    }

    async fn init_admin_key_hash(&self, hash: &KeyHash) -> StoreResult<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&ADMIN_KEY, &hash.as_str()],
            )
            .await
            .map_err(pg_error)?;
        Ok(n == 1)
    }

    async fn create_account(&self, name: &str, now_ms: i64) -> StoreResult<Account> {
        let account = Account {
            id: AccountId::generate(now_ms),
            name: name.to_owned(),
            created_at: now_ms,
        };
        self.client()
            .await?
            .execute(
                "INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)",
                &[&account.id.as_str(), &account.name, &now_ms],
            )
            .await
            .map_err(pg_error)?;
        Ok(account)
    }

    async fn create_team(&self, account: &AccountId, name: &str, now_ms: i64) -> StoreResult<Team> {
        let team = Team {
            id: TeamId::generate(now_ms),
            account_id: account.clone(),
            name: name.to_owned(),
            created_at: now_ms,
        };
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO teams (id, account_id, name, created_at)
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM accounts WHERE id = $2)",
                &[&team.id.as_str(), &account.as_str(), &team.name, &now_ms],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(team)
    }

    async fn create_team_key(&self, key: &TeamKey, hash: &KeyHash) -> StoreResult<()> {
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO team_keys (hash, team_id, created_at, id, name, prefix)
                 SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM teams WHERE id = $2)",
                &[
                    &hash.as_str(),
                    &key.team_id.as_str(),
                    &key.created_at,
                    &key.id.as_str(),
                    &key.name,
                    &key.prefix,
                ],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn team_for_key(&self, hash: &KeyHash) -> StoreResult<Option<KeyUse>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT team_id, id, last_used_at FROM team_keys WHERE hash = $1")
            .await
            .map_err(pg_error)?;
        let row = client.query_opt(&stmt, &[&hash.as_str()]).await.map_err(pg_error)?;
        Ok(row.map(|r| KeyUse {
            team: TeamId::from_stored(r.get(0)),
            key: KeyId::from_stored(r.get(1)),
            last_used_at: r.get(2),
        }))
    }

    async fn touch_team_key(&self, key: &KeyId, now_ms: i64) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "UPDATE team_keys SET last_used_at = $2 WHERE id = $1",
                &[&key.as_str(), &now_ms],
            )
            .await
            .map_err(pg_error)
            .map(|_| ())
    }

    async fn list_team_keys(&self, team: &TeamId) -> StoreResult<Vec<TeamKey>> {
        let client = self.client().await?;
        let exists = client
            .query_opt("SELECT 1 FROM teams WHERE id = $1", &[&team.as_str()])
            .await
            .map_err(pg_error)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let rows = client
            .query(
                "SELECT id, team_id, name, prefix, created_at, last_used_at FROM team_keys
                 WHERE team_id = $1 ORDER BY created_at, id",
                &[&team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| TeamKey {
                id: KeyId::from_stored(r.get(0)),
                team_id: TeamId::from_stored(r.get(1)),
                name: r.get(2),
                prefix: r.get(3),
                created_at: r.get(4),
                last_used_at: r.get(5),
            })
            .collect())
    }

    async fn delete_team_key(&self, team: &TeamId, key: &KeyId) -> StoreResult<()> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM team_keys WHERE id = $1 AND team_id = $2",
                &[&key.as_str(), &team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn get_team(&self, team: &TeamId) -> StoreResult<Team> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT id, account_id, name, created_at FROM teams WHERE id = $1",
                &[&team.as_str()],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(Team {
            id: TeamId::from_stored(row.get(0)),
            account_id: AccountId::from_stored(row.get(1)),
            name: row.get(2),
            created_at: row.get(3),
        })
    }

    async fn create_dashboard_link(
        &self,
        team: &TeamId,
        link: &KeyHash,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute("DELETE FROM dashboard_links WHERE expires_at < $1", &[&now_ms])
            .await
            .map_err(pg_error)?;
        tx.execute("DELETE FROM dashboard_sessions WHERE expires_at < $1", &[&now_ms])
            .await
            .map_err(pg_error)?;
        let n = tx
            .execute(
                "INSERT INTO dashboard_links (hash, team_id, expires_at, created_at)
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM teams WHERE id = $2)",
                &[&link.as_str(), &team.as_str(), &expires_at_ms, &now_ms],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await.map_err(pg_error)
    }

    async fn redeem_dashboard_link(
        &self,
        link: &KeyHash,
        session: &KeyHash,
        session_expires_at_ms: i64,
        now_ms: i64,
    ) -> StoreResult<Option<TeamId>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let team: Option<String> = tx
            .query_opt(
                "UPDATE dashboard_links SET used_at = $1
                 WHERE hash = $2 AND used_at IS NULL AND expires_at > $1
                 RETURNING team_id",
                &[&now_ms, &link.as_str()],
            )
            .await
            .map_err(pg_error)?
            .map(|r| r.get(0));
        let Some(team) = team else { return Ok(None) };
        tx.execute(
            "INSERT INTO dashboard_sessions (hash, team_id, expires_at, created_at) VALUES ($1, $2, $3, $4)",
            &[&session.as_str(), &team, &session_expires_at_ms, &now_ms],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Some(TeamId::from_stored(team)))
    }

    async fn dashboard_session(&self, session: &KeyHash, now_ms: i64) -> StoreResult<Option<DashboardSession>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT team_id, expires_at FROM dashboard_sessions WHERE hash = $1 AND expires_at > $2",
                &[&session.as_str(), &now_ms],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| DashboardSession {
            team_id: TeamId::from_stored(r.get(0)),
            expires_at: r.get(1),
        }))
    }

    async fn delete_dashboard_session(&self, session: &KeyHash) -> StoreResult<()> {
        self.client()
            .await?
            .execute("DELETE FROM dashboard_sessions WHERE hash = $1", &[&session.as_str()])
            .await
            .map_err(pg_error)
            .map(|_| ())
    }

    async fn resend(
        &self,
        team: &TeamId,
        webhook: &EndpointId,
        event: &EventId,
        lease: &Lease,
        now_ms: i64,
    ) -> StoreResult<ManualOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let endpoint = match manual_target(&tx, team.as_str(), webhook.as_str()).await? {
            Ok(endpoint) => endpoint,
            Err(refused) => return Ok(refused),
        };
        let stored = tx
            .query_opt(
                "SELECT event_type, body FROM events WHERE id = $1 AND team_id = $2",
                &[&event.as_str(), &team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        let Some(stored) = stored else {
            return Ok(ManualOutcome::UnknownEvent);
        };
        let event_type = event_type_from(stored.get(0))?;
        if !event_type.is_team_webhook_type() {
            return Ok(ManualOutcome::NotAWebhookEvent);
        }
        let body = Bytes::from(stored.get::<_, Vec<u8>>(1));
        let delivery = insert_manual_delivery(&tx, &endpoint, event.clone(), event_type, body, now_ms, lease).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(ManualOutcome::Created(delivery))
    }

    async fn publish_test_event(
        &self,
        event: NewEvent,
        webhook: &EndpointId,
        lease: &Lease,
    ) -> StoreResult<ManualOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let endpoint = match manual_target(&tx, &event.team_id, webhook.as_str()).await? {
            Ok(endpoint) => endpoint,
            Err(refused) => return Ok(refused),
        };
        tx.execute(
            "INSERT INTO events (id, team_id, event_type, created_at, body) VALUES ($1, $2, $3, $4, $5)",
            &[
                &event.id.as_str(),
                &event.team_id,
                &event.event_type.as_str(),
                &event.created_at,
                &&event.body[..],
            ],
        )
        .await
        .map_err(pg_error)?;
        let delivery = insert_manual_delivery(
            &tx,
            &endpoint,
            event.id,
            event.event_type,
            event.body,
            event.created_at,
            lease,
        )
        .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(ManualOutcome::Created(delivery))
    }

    async fn create_endpoint(&self, endpoint: &Endpoint, max_per_team: usize) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // The team's row lock makes concurrent creates for one team count
        // one after the other.
        tx.execute(
            "SELECT 1 FROM teams WHERE id = $1 FOR UPDATE",
            &[&endpoint.team_id.as_str()],
        )
        .await
        .map_err(pg_error)?;
        let count: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM endpoints WHERE team_id = $1 AND kind = $2",
                &[&endpoint.team_id.as_str(), &endpoint.id.kind().as_str()],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        if usize::try_from(count).unwrap_or(usize::MAX) >= max_per_team {
            return Ok(false);
        }
        insert_endpoint(&tx, endpoint, 0).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    async fn list_webhooks(&self, team: &TeamId) -> StoreResult<Vec<Endpoint>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE team_id = $1 AND kind = $2 ORDER BY created_at, id"
                ),
                &[&team.as_str(), &EndpointKind::Webhook.as_str()],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(endpoint_from_row).collect()
    }

    async fn get_endpoint(&self, team: &TeamId, id: &EndpointId) -> StoreResult<Endpoint> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = $1 AND team_id = $2"),
                &[&id.as_str(), &team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        endpoint_from_row(&row.ok_or(StoreError::NotFound)?)
    }

    async fn update_webhook(&self, team: &TeamId, id: &EndpointId, patch: &WebhookPatch) -> StoreResult<Endpoint> {
        let types = patch.event_types.as_deref().map(event_types_json);
        let status = patch.status.map(|s| s.as_str());
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE endpoints SET name = COALESCE($3, name), url = COALESCE($4, url),
                         event_types = COALESCE($5, event_types), status = COALESCE($6, status)
                     WHERE id = $1 AND team_id = $2
                     RETURNING {ENDPOINT_COLUMNS}"
                ),
                &[&id.as_str(), &team.as_str(), &patch.name, &patch.url, &types, &status],
            )
            .await
            .map_err(pg_error)?;
        endpoint_from_row(&row.ok_or(StoreError::NotFound)?)
    }

    async fn delete_endpoint(&self, team: &TeamId, id: &EndpointId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let n = tx
            .execute(
                "DELETE FROM endpoints WHERE id = $1 AND team_id = $2",
                &[&id.as_str(), &team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        // Every delivery that left `pending` has an attempt in the log; the
        // pending ones are in the two partial indexes (schema 3).
        tx.execute(
            "DELETE FROM deliveries WHERE seq IN (
                 SELECT delivery_seq FROM attempts WHERE endpoint_id = $1
                 UNION ALL SELECT seq FROM deliveries
                     WHERE state = 'pending' AND NOT ordered AND locked_until IS NULL AND endpoint_id = $1
                 UNION ALL SELECT seq FROM deliveries
                     WHERE state = 'pending' AND NOT ordered AND locked_until IS NOT NULL AND endpoint_id = $1
                 UNION ALL SELECT seq FROM deliveries WHERE state = 'pending' AND ordered AND endpoint_id = $1)",
            &[&id.as_str()],
        )
        .await
        .map_err(pg_error)?;
        tx.execute("DELETE FROM attempts WHERE endpoint_id = $1", &[&id.as_str()])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn create_bot(&self, bot: &Bot) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO bots (id, team_id, meeting_url, metadata, recording_id, participant_events_id, transcript_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &bot.id.as_str(),
                &bot.team_id.as_str(),
                &bot.meeting_url,
                &bot.metadata,
                &bot.recording_id,
                &bot.participant_events_id,
                &bot.transcript_id,
                &bot.created_at,
            ],
        )
        .await
        .map_err(pg_error)?;
        for (position, e) in bot.endpoints.iter().enumerate() {
            insert_endpoint(&tx, e, position).await?;
        }
        tx.commit().await.map_err(pg_error)
    }

    async fn get_bot(&self, team: &TeamId, id: &BotId) -> StoreResult<Bot> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {BOT_COLUMNS} FROM bots WHERE id = $1 AND team_id = $2"),
                &[&id.as_str(), &team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        let mut bot = bot_from_row(&row.ok_or(StoreError::NotFound)?);
        bot.endpoints = bot_endpoints(&client, id.as_str()).await?;
        Ok(bot)
    }

    async fn list_bots(&self, team: &TeamId) -> StoreResult<Vec<Bot>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {BOT_COLUMNS} FROM bots WHERE team_id = $1 ORDER BY created_at DESC, id DESC"),
                &[&team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        let mut bots: Vec<Bot> = rows.iter().map(bot_from_row).collect();
        for bot in &mut bots {
            bot.endpoints = bot_endpoints(&client, bot.id.as_str()).await?;
        }
        Ok(bots)
    }

    async fn publish(&self, event: NewEvent, lease: &Lease) -> StoreResult<PublishOutcome> {
        if event.id_given {
            let client = self.client().await?;
            if let Some(outcome) = existing_event(&client, &event).await? {
                return Ok(outcome);
            }
        }
        let (done, outcome) = oneshot::channel();
        let job = batch::PublishJob {
            event,
            lease: lease.clone(),
            done,
        };
        self.publisher
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        outcome
            .await
            .map_err(|_| StoreError::Unavailable("the publisher stopped".into()))?
    }

    async fn publish_bot_events(
        &self,
        bot_id: &BotId,
        events: Vec<NewBotEvent>,
        lease: Option<&Lease>,
    ) -> StoreResult<BotPublishOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let row = tx
            .query_opt(
                &format!("SELECT {BOT_COLUMNS} FROM bots WHERE id = $1"),
                &[&bot_id.as_str()],
            )
            .await
            .map_err(pg_error)?;
        let Some(row) = row else {
            return Ok(BotPublishOutcome::UnknownBot);
        };
        let bot = bot_from_row(&row);
        let context = bot.envelope_context();
        let endpoints: Vec<Endpoint> = bot_endpoints(&tx, bot_id.as_str())
            .await?
            .into_iter()
            .filter(|e| e.status == EndpointStatus::Active)
            .collect();
        let insert_event = tx
            .prepare("INSERT INTO events (id, team_id, event_type, created_at, body) VALUES ($1, $2, $3, $4, $5)")
            .await
            .map_err(pg_error)?;
        let insert_delivery = tx
            .prepare(
                "INSERT INTO deliveries (event_id, endpoint_id, team_id, state, ordered, attempts, next_attempt_at, locked_until, locked_by, body, created_at)
                 VALUES ($1, $2, $3, 'pending', TRUE, 0, $4, $5, $6, $7, $4) RETURNING seq",
            )
            .await
            .map_err(pg_error)?;
        let (until, node) = (lease.map(|l| l.until_ms), lease.map(|l| l.node.as_str()));
        let mut stored = Vec::with_capacity(events.len());
        let mut deliveries = Vec::new();
        for event in events {
            tx.execute(
                &insert_event,
                &[
                    &event.id.as_str(),
                    &bot.team_id.as_str(),
                    &event.event_type.as_str(),
                    &event.created_at,
                    &event.data.as_bytes(),
                ],
            )
            .await
            .map_err(pg_error)?;
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
                let seq = tx
                    .query_one(
                        &insert_delivery,
                        &[
                            &event.id.as_str(),
                            &endpoint.id.as_str(),
                            &bot.team_id.as_str(),
                            &event.created_at,
                            &until,
                            &node,
                            &body,
                        ],
                    )
                    .await
                    .map_err(pg_error)?;
                deliveries.push(ClaimedDelivery::fresh(
                    DeliveryId(seq.get(0)),
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
        if lease.is_none() && !deliveries.is_empty() {
            tx.execute("SELECT pg_notify($1, '')", &[&WORK_CHANNEL])
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(BotPublishOutcome::Created {
            events: stored,
            deliveries,
        })
    }

    async fn claim_due(&self, now_ms: i64, limit: usize, lease: &Lease) -> StoreResult<Vec<ClaimedDelivery>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    // Free work in due order, then work whose lease ran out,
                    // each from its own partial index (schema 4).
                    "WITH free AS (
                         SELECT d.seq FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
                         WHERE d.state = 'pending' AND NOT d.ordered AND d.locked_until IS NULL
                           AND d.next_attempt_at <= $1 AND e.status = 'active'
                         ORDER BY d.next_attempt_at, d.seq
                         LIMIT $2
                         FOR UPDATE OF d SKIP LOCKED
                     ),
                     expired AS (
                         SELECT d.seq FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
                         WHERE d.state = 'pending' AND NOT d.ordered AND d.locked_until IS NOT NULL
                           AND d.locked_until < $1 AND d.next_attempt_at <= $1 AND e.status = 'active'
                         ORDER BY d.locked_until, d.seq
                         LIMIT $2
                         FOR UPDATE OF d SKIP LOCKED
                     ),
                     due AS (SELECT seq FROM free UNION ALL SELECT seq FROM expired LIMIT $2)
                     UPDATE deliveries d SET locked_until = $3, locked_by = $4
                     FROM due, events v, endpoints e
                     WHERE d.seq = due.seq AND v.id = d.event_id AND e.id = d.endpoint_id
                     RETURNING {CLAIM_COLUMNS}"
                ),
                &[&now_ms, &(limit as i64), &lease.until_ms, &lease.node],
            )
            .await
            .map_err(pg_error)?;
        let mut claimed = rows.iter().map(claimed_from_row).collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|d| d.id);
        Ok(claimed)
    }

    async fn claim_ordered(
        &self,
        now_ms: i64,
        endpoints: usize,
        run: usize,
        lease: &Lease,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // Candidates from a snapshot; then lock their endpoint rows (skipping
        // those another process holds) and check again in a fresh statement,
        // which sees whatever a process that held the lock has committed.
        let ready = |limit_param: &str| {
            format!(
                "SELECT h.endpoint_id FROM (
                     SELECT endpoint_id, MIN(seq) AS head_seq, MAX(COALESCE(locked_until, 0)) AS lease_end
                     FROM deliveries WHERE state = 'pending' AND ordered {limit_param}
                     GROUP BY endpoint_id
                 ) h
                 JOIN deliveries hd ON hd.seq = h.head_seq
                 JOIN endpoints e ON e.id = h.endpoint_id
                 WHERE h.lease_end < $1 AND hd.next_attempt_at <= $1 AND e.status = 'active'
                 ORDER BY hd.next_attempt_at LIMIT $2"
            )
        };
        let candidates: Vec<String> = tx
            .query(&ready(""), &[&now_ms, &(endpoints as i64)])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let locked: Vec<String> = tx
            .query(
                "SELECT id FROM endpoints WHERE id = ANY($1) AND status = 'active' ORDER BY id FOR UPDATE SKIP LOCKED",
                &[&candidates],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if locked.is_empty() {
            return Ok(Vec::new());
        }
        let rows = tx
            .query(
                &format!(
                    "WITH ready AS ({}),
                     ranked AS (
                         SELECT d.seq, ROW_NUMBER() OVER (PARTITION BY d.endpoint_id ORDER BY d.seq) AS rn
                         FROM deliveries d JOIN ready r ON r.endpoint_id = d.endpoint_id
                         WHERE d.state = 'pending' AND d.ordered
                     ),
                     claimed AS (
                         UPDATE deliveries d SET locked_until = $4, locked_by = $5
                         FROM ranked k WHERE d.seq = k.seq AND k.rn <= $3
                         RETURNING d.*
                     )
                     SELECT {}
                     FROM claimed d JOIN events v ON v.id = d.event_id JOIN endpoints e ON e.id = d.endpoint_id
                     ORDER BY d.endpoint_id, d.seq",
                    ready("AND endpoint_id = ANY($6)"),
                    CLAIM_COLUMNS
                ),
                &[
                    &now_ms,
                    &(endpoints as i64),
                    &(run as i64),
                    &lease.until_ms,
                    &lease.node,
                    &locked,
                ],
            )
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        rows.iter().map(claimed_from_row).collect()
    }

    async fn next_due_at(&self, now_ms: i64) -> StoreResult<Option<i64>> {
        let row = self
            .client()
            .await?
            .query_one(
                // Unordered: the first free delivery in due order and the
                // first lease to run out (claimable the millisecond after).
                "SELECT LEAST(
                     (SELECT d.next_attempt_at FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
                      WHERE d.state = 'pending' AND NOT d.ordered AND d.locked_until IS NULL AND e.status = 'active'
                      ORDER BY d.next_attempt_at LIMIT 1),
                     (SELECT GREATEST(d.next_attempt_at, d.locked_until + 1)
                      FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
                      WHERE d.state = 'pending' AND NOT d.ordered AND d.locked_until IS NOT NULL AND e.status = 'active'
                      ORDER BY d.locked_until LIMIT 1),
                     (SELECT MIN(GREATEST(hd.next_attempt_at, CASE WHEN h.lease_end >= $1 THEN h.lease_end + 1 ELSE 0 END))
                      FROM (SELECT endpoint_id, MIN(seq) AS head_seq, MAX(COALESCE(locked_until, 0)) AS lease_end
                            FROM deliveries WHERE state = 'pending' AND ordered GROUP BY endpoint_id) h
                      JOIN deliveries hd ON hd.seq = h.head_seq
                      JOIN endpoints e ON e.id = h.endpoint_id
                      WHERE e.status = 'active'))",
                &[&now_ms],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }

    async fn record_attempt(&self, record: AttemptRecord) -> StoreResult<()> {
        let (done, result) = oneshot::channel();
        self.recorder
            .send((record, done))
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        result
            .await
            .map_err(|_| StoreError::Unavailable("the recorder stopped".into()))?
    }

    async fn fail_endpoint(&self, last: AttemptRecord, drop_reason: &str) -> StoreResult<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        record_in(&tx, &last).await?;
        tx.execute(
            "UPDATE endpoints SET status = $1 WHERE id = $2",
            &[&EndpointStatus::Failed.as_str(), &last.endpoint_id.as_str()],
        )
        .await
        .map_err(pg_error)?;
        let pending = tx
            .query(
                "SELECT d.seq, d.event_id, v.event_type, d.attempts, e.url FROM deliveries d
                 JOIN events v ON v.id = d.event_id JOIN endpoints e ON e.id = d.endpoint_id
                 WHERE d.endpoint_id = $1 AND d.state = 'pending' AND d.ordered ORDER BY d.seq FOR UPDATE OF d",
                &[&last.endpoint_id.as_str()],
            )
            .await
            .map_err(pg_error)?;
        for row in &pending {
            let record = AttemptRecord {
                id: AttemptId::generate(last.timestamp_ms),
                delivery: DeliveryId(row.get(0)),
                team_id: last.team_id.clone(),
                endpoint_id: last.endpoint_id.clone(),
                event_id: EventId::from_stored(row.get(1)),
                event_type: event_type_from(row.get(2))?,
                attempt: row.get::<_, i32>(3) as u32 + 1,
                timestamp_ms: last.timestamp_ms,
                status: AttemptStatus::Dropped,
                duration_ms: 0,
                request_url: row.get(4),
                request_headers: Vec::new(),
                response: None,
                error: Some(drop_reason.to_owned()),
                next: DeliveryNext::Dropped,
                keep_lease_until: None,
            };
            record_in(&tx, &record).await?;
        }
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&ENDPOINT_CHANNEL, &last.endpoint_id.as_str()],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(pending.len())
    }

    async fn renew(&self, deliveries: &[DeliveryId], lease: &Lease) -> StoreResult<()> {
        let ids: Vec<i64> = deliveries.iter().map(|d| d.0).collect();
        self.client()
            .await?
            .execute(
                "UPDATE deliveries SET locked_until = $1 WHERE seq = ANY($2) AND locked_by = $3 AND state = 'pending'",
                &[&lease.until_ms, &ids, &lease.node],
            )
            .await
            .map_err(pg_error)
            .map(|_| ())
    }

    async fn release(&self, deliveries: &[DeliveryId]) -> StoreResult<()> {
        let ids: Vec<i64> = deliveries.iter().map(|d| d.0).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute(
            "UPDATE deliveries SET locked_until = NULL, locked_by = NULL WHERE seq = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(pg_error)?;
        tx.execute("SELECT pg_notify($1, '')", &[&WORK_CHANNEL])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn release_node(&self, node: &str) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let n = tx
            .execute(
                "UPDATE deliveries SET locked_until = NULL, locked_by = NULL WHERE locked_by = $1",
                &[&node],
            )
            .await
            .map_err(pg_error)?;
        if n > 0 {
            tx.execute("SELECT pg_notify($1, '')", &[&WORK_CHANNEL])
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn subscribe(&self) -> StoreResult<Option<mpsc::Receiver<StoreSignal>>> {
        let (tx, rx) = mpsc::channel(1024);
        let config = self.config.clone();
        tokio::spawn(listen(config, tx));
        Ok(Some(rx))
    }

    async fn announce_endpoint_changed(&self, endpoint: &EndpointId) -> StoreResult<()> {
        self.client()
            .await?
            .execute("SELECT pg_notify($1, $2)", &[&ENDPOINT_CHANNEL, &endpoint.as_str()])
            .await
            .map_err(pg_error)
            .map(|_| ())
    }

    async fn list_attempts(
        &self,
        team: &TeamId,
        endpoint: &EndpointId,
        filter: &AttemptFilter,
    ) -> StoreResult<Vec<Attempt>> {
        // Only the filters given go into the statement: Herald's connections
        // always plan generically (see `open_at_schema`), and a generic plan
        // of "$3 IS NULL OR status = $3" could not pick the index that serves
        // the filter.
        let mut sql = format!(
            "SELECT {ATTEMPT_COLUMNS}, NULL::bytea, NULL::bytea FROM attempts a
             WHERE a.endpoint_id = $1 AND a.team_id = $2"
        );
        let (endpoint, team, limit) = (endpoint.as_str(), team.as_str(), filter.limit as i64);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&endpoint, &team, &limit];
        let status = filter.status.map(|s| s.as_str());
        if let Some(status) = &status {
            params.push(status);
            sql.push_str(&format!(" AND a.status = ${}", params.len()));
            if *status != AttemptStatus::Success.as_str() {
                // Lets the partial index of unsuccessful attempts serve (migration 3).
                sql.push_str(" AND a.status <> 'success'");
            }
        }
        let event = filter.event_id.as_ref().map(|e| e.as_str());
        if let Some(event) = &event {
            params.push(event);
            sql.push_str(&format!(" AND a.event_id = ${}", params.len()));
        }
        let before = filter.before.map(|c| (c.timestamp_ms, c.seq));
        if let Some((timestamp, seq)) = &before {
            params.push(timestamp);
            params.push(seq);
            let n = params.len();
            sql.push_str(&format!(
                " AND (a.timestamp < ${} OR (a.timestamp = ${} AND a.seq < ${n}))",
                n - 1,
                n - 1
            ));
        }
        sql.push_str(" ORDER BY a.timestamp DESC, a.seq DESC LIMIT $3");
        let rows = self.client().await?.query(&sql, &params).await.map_err(pg_error)?;
        rows.iter().map(attempt_from_row).collect()
    }

    async fn get_attempt(&self, team: &TeamId, id: &AttemptId) -> StoreResult<Attempt> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {ATTEMPT_COLUMNS}, a.response_body, COALESCE(dl.body, v.body) FROM attempts a
                     LEFT JOIN events v ON v.id = a.event_id
                     LEFT JOIN deliveries dl ON dl.seq = a.delivery_seq
                     WHERE a.id = $1 AND a.team_id = $2"
                ),
                &[&id.as_str(), &team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        attempt_from_row(&row.ok_or(StoreError::NotFound)?)
    }
}

/// Keeps one connection listening for the other processes' announcements,
/// reconnecting with a pause when the database goes away, until `tx` closes.
async fn listen(config: tokio_postgres::Config, tx: mpsc::Sender<StoreSignal>) {
    let mut pause = Duration::from_millis(100);
    while !tx.is_closed() {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let subscribed = async {
                    client
                        .batch_execute(&format!("LISTEN {WORK_CHANNEL}; LISTEN {ENDPOINT_CHANNEL}"))
                        .await
                };
                // The LISTEN only completes while the connection is driven.
                let mut subscribed = Box::pin(subscribed);
                let mut listening = false;
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        done = &mut subscribed, if !listening => {
                            if done.is_err() { break; }
                            listening = true;
                            pause = Duration::from_millis(100);
                            // Anything committed while we were away is worth a look.
                            let _ = tx.try_send(StoreSignal::Work);
                        }
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                let signal = if n.channel() == ENDPOINT_CHANNEL {
                                    StoreSignal::EndpointChanged(EndpointId::from_stored(n.payload().to_owned()))
                                } else {
                                    StoreSignal::Work
                                };
                                let _ = tx.try_send(signal);
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break,
                        }
                    }
                }
                tracing::warn!("lost the PostgreSQL notification connection; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the PostgreSQL notification connection"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// The webhook a manual delivery goes to: the team's, and active; otherwise
/// the outcome to answer instead.
async fn manual_target(
    client: &impl deadpool_postgres::GenericClient,
    team: &str,
    webhook: &str,
) -> StoreResult<Result<Endpoint, ManualOutcome>> {
    let row = client
        .query_opt(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = $1 AND team_id = $2 AND kind = $3"),
            &[&webhook, &team, &EndpointKind::Webhook.as_str()],
        )
        .await
        .map_err(pg_error)?;
    let Some(row) = row else {
        return Ok(Err(ManualOutcome::UnknownWebhook));
    };
    let endpoint = endpoint_from_row(&row)?;
    if endpoint.status != EndpointStatus::Active {
        return Ok(Err(ManualOutcome::Deactivated));
    }
    Ok(Ok(endpoint))
}

/// A new pending delivery marked manual, due now and leased to the caller.
async fn insert_manual_delivery(
    client: &impl deadpool_postgres::GenericClient,
    endpoint: &Endpoint,
    event_id: EventId,
    event_type: EventType,
    body: Bytes,
    now_ms: i64,
    lease: &Lease,
) -> StoreResult<ClaimedDelivery> {
    let row = client
        .query_one(
            "INSERT INTO deliveries (event_id, endpoint_id, team_id, state, attempts, next_attempt_at, locked_until, locked_by, manual, created_at)
             VALUES ($1, $2, $3, 'pending', 0, $4, $5, $6, TRUE, $4) RETURNING seq",
            &[&event_id.as_str(), &endpoint.id.as_str(), &endpoint.team_id.as_str(), &now_ms, &lease.until_ms, &lease.node],
        )
        .await
        .map_err(pg_error)?;
    Ok(ClaimedDelivery::fresh(
        DeliveryId(row.get(0)),
        endpoint,
        event_id,
        event_type,
        body,
    ))
}

async fn existing_event(
    tx: &impl deadpool_postgres::GenericClient,
    event: &NewEvent,
) -> StoreResult<Option<PublishOutcome>> {
    let row = tx
        .query_opt(
            "SELECT event_type, created_at, body FROM events WHERE id = $1",
            &[&event.id.as_str()],
        )
        .await
        .map_err(pg_error)?;
    let Some(row) = row else { return Ok(None) };
    let (event_type, created_at, body): (String, i64, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
    if same_payload(
        &event_type,
        &stored_data_of(&body),
        event.event_type.as_str(),
        &event.data,
    ) {
        Ok(Some(PublishOutcome::Existing(StoredEvent {
            id: event.id.clone(),
            event_type: event_type_from(&event_type)?,
            created_at,
        })))
    } else {
        Ok(Some(PublishOutcome::Conflict))
    }
}

/// `position` orders a bot's endpoints as its Create Bot request listed them.
async fn insert_endpoint(
    client: &impl deadpool_postgres::GenericClient,
    e: &Endpoint,
    position: usize,
) -> StoreResult<()> {
    client
        .execute(
            "INSERT INTO endpoints (id, kind, team_id, bot_id, name, url, event_types, status, secret, metadata, created_at, position)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &e.id.as_str(),
                &e.id.kind().as_str(),
                &e.team_id.as_str(),
                &e.bot_id.as_ref().map(|b| b.as_str()),
                &e.name,
                &e.url,
                &event_types_json(&e.event_types),
                &e.status.as_str(),
                &e.secret.reveal(),
                &e.metadata,
                &e.created_at,
                &(position as i32),
            ],
        )
        .await
        .map_err(pg_error)
        .map(|_| ())
}

async fn bot_endpoints(client: &impl deadpool_postgres::GenericClient, bot: &str) -> StoreResult<Vec<Endpoint>> {
    let rows = client
        .query(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE bot_id = $1 ORDER BY position"),
            &[&bot],
        )
        .await
        .map_err(pg_error)?;
    rows.iter().map(endpoint_from_row).collect()
}

async fn record_in(client: &impl deadpool_postgres::GenericClient, r: &AttemptRecord) -> StoreResult<()> {
    let (state, next_at) = delivery_move(r);
    let response = r.response.as_ref();
    let (status, headers, body) = (
        response.map(|x| i32::from(x.status)),
        response.map(|x| headers_json(&x.headers)),
        response.map(|x| x.body.as_slice()),
    );
    // One statement: move the delivery on and, if it still exists (its
    // endpoint may have been deleted meanwhile), log the attempt.
    let statement = client
        .prepare_cached(
            "WITH moved AS (
                 UPDATE deliveries SET state = $1, attempts = $2, next_attempt_at = $3,
                     locked_until = $4, locked_by = CASE WHEN $4::bigint IS NULL THEN NULL ELSE locked_by END
                 WHERE seq = $5 RETURNING seq, manual
             )
             INSERT INTO attempts (id, delivery_seq, team_id, endpoint_id, event_id, event_type, attempt, timestamp, status,
                 duration_ms, request_url, request_headers, response_status, response_headers, response_body, error, manual)
             SELECT $6, seq, $7, $8, $9, $10, $2, $11, $12, $13, $14, $15, $16, $17, $18, $19, manual FROM moved",
        )
        .await
        .map_err(pg_error)?;
    client
        .execute(
            &statement,
            &[
                &state,
                &(r.attempt as i32),
                &next_at,
                &r.keep_lease_until,
                &r.delivery.0,
                &r.id.as_str(),
                &r.team_id.as_str(),
                &r.endpoint_id.as_str(),
                &r.event_id.as_str(),
                &r.event_type.as_str(),
                &r.timestamp_ms,
                &r.status.as_str(),
                &r.duration_ms,
                &r.request_url,
                &request_headers_stored(&r.request_headers, r.event_id.as_str()),
                &status,
                &headers,
                &body,
                &r.error,
            ],
        )
        .await
        .map_err(pg_error)
        .map(|_| ())
}

const ENDPOINT_COLUMNS: &str = "id, team_id, name, url, event_types, status, secret, created_at, bot_id, metadata";

fn endpoint_from_row(r: &Row) -> StoreResult<Endpoint> {
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
        created_at: r.get(7),
        bot_id: r.get::<_, Option<String>>(8).map(BotId::from_stored),
        metadata: r.get(9),
    })
}

const BOT_COLUMNS: &str =
    "id, team_id, meeting_url, metadata, recording_id, participant_events_id, transcript_id, created_at";

fn bot_from_row(r: &Row) -> Bot {
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

const CLAIM_COLUMNS: &str = "d.seq, d.team_id, d.event_id, v.event_type, COALESCE(d.body, v.body), d.endpoint_id, e.url, e.secret, d.attempts, \
     d.next_attempt_at";

fn claimed_from_row(r: &Row) -> StoreResult<ClaimedDelivery> {
    Ok(ClaimedDelivery {
        id: DeliveryId(r.get(0)),
        team_id: TeamId::from_stored(r.get(1)),
        event_id: EventId::from_stored(r.get(2)),
        event_type: event_type_from(r.get(3))?,
        body: Bytes::from(r.get::<_, Vec<u8>>(4)),
        endpoint_id: EndpointId::from_stored(r.get(5)),
        url: r.get(6),
        secret: secret_from(r.get(7))?,
        attempt: r.get::<_, i32>(8) as u32 + 1,
        due_ms: r.get(9),
    })
}

const ATTEMPT_COLUMNS: &str = "a.seq, a.id, a.endpoint_id, a.event_id, a.event_type, a.attempt, a.timestamp, a.status, \
     a.duration_ms, a.request_url, a.request_headers, a.response_status, a.response_headers, a.error, a.manual";

fn attempt_from_row(r: &Row) -> StoreResult<Attempt> {
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

fn event_type_from(raw: &str) -> StoreResult<EventType> {
    EventType::parse(raw).ok_or_else(|| StoreError::Internal(format!("unknown event type `{raw}`")))
}

fn secret_from(raw: &str) -> StoreResult<Secret> {
    Secret::parse(raw).ok_or_else(|| StoreError::Internal("stored secret is not a whsec_ secret".into()))
}

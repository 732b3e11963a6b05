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
mod import;
pub use import::ImportReport;
mod schema;
mod tls;
mod webhook_health;
pub use schema::latest_version;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, Row};

use herald_domain::attempt::AttemptStatus;
use herald_domain::event::EventType;
use herald_domain::ids::{
    AccountId, AttemptId, BotId, DeliveryId, EndpointId, EndpointKind, EventId, KeyId, RecoveryId, TeamId,
};
use herald_domain::keys::KeyHash;
use herald_domain::signing::{PreviousSecret, Secret};
use herald_domain::webhook::EndpointStatus;

use crate::codec::{
    self, delivery_move, event_types_from, event_types_json, headers_from, headers_json, request_headers_from,
    request_headers_stored,
};
use crate::health;
use crate::model::*;
use crate::plan::{self, PlannedDelivery};
use crate::{
    AttemptLog, Endpoints, Publishing, Queue, Recovering, Retention, Sessions, StoreError, StoreResult, StoreSignal,
    Tenancy,
};

mod accounts;
mod endpoints;
mod log;
mod publish;
mod queue;
mod records;
mod recover;
mod retention;
mod rows;
mod sessions;

// What each concern's file shares with the others (its `pub(super)` items).
#[allow(unused_imports)]
use endpoints::*;
#[allow(unused_imports)]
use publish::*;
#[allow(unused_imports)]
use queue::*;
#[allow(unused_imports)]
use records::*;
#[allow(unused_imports)]
use rows::*;

const WORK_CHANNEL: &str = "herald_work";

const ENDPOINT_CHANNEL: &str = "herald_endpoint";

/// How long a connection, or a wait for one from the pool, may take before
/// the request answers `Unavailable` (503 with `Retry-After`): a database
/// that is away is reported quickly rather than hung on.
const DB_WAIT: Duration = Duration::from_secs(2);

/// How many publishes may wait for their batch worker; a full queue makes
/// callers wait (backpressure).
const BATCH_QUEUE: usize = 4096;

/// The connections one node keeps to PostgreSQL.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// Herald's store on a PostgreSQL database.
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    /// How its connections do TLS (the URL's `sslmode`, [`tls`]).
    tls: tls::PgTls,
    /// Publishes to store, taken in batches by [`batch::spawn_publishers`].
    publisher: mpsc::Sender<batch::PublishJob>,
    /// Attempts to record, written in batches ([`crate::records`]).
    records: Arc<crate::records::RecordQueue>,
    flush: Arc<batch::PgFlush>,
}

/// Maps a driver error: lost connections are `Unavailable` (worth a retry
/// later), the rest `Internal`.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) if !e.is_closed() => StoreError::Internal(format!("{}: {}", db.code().code(), db.message())),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// `url` with schema `name` as the search path of its connections: Herald
/// opened on it keeps its tables there. For tests, which give each run a
/// schema of its own.
#[cfg(feature = "test-support")]
pub fn schema_url(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{name}")
}

/// Drops schema `name` of the database at `url` with everything in it,
/// after ending the connections that still hold locks on its tables; gives
/// up after a few seconds rather than wait on a lock. It blocks, on a thread
/// with its own runtime, so that it works from `Drop` inside a runtime that
/// may be ending. For tests, which give each run a schema of its own.
#[cfg(feature = "test-support")]
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
            let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
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
    // With every cause: "error performing TLS handshake" alone does not say
    // that the server's certificate was refused, nor why.
    let mut message = format!("no database connection: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = inner.source();
    }
    StoreError::Unavailable(message)
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL) and applies migrations.
    pub async fn open(url: &str, pool_size: usize) -> StoreResult<Self> {
        Self::open_at(url, pool_size, schema::latest_version()).await
    }

    /// Connects and migrates only up to schema `version`: what an older
    /// binary left behind, for the upgrade tests.
    #[cfg(feature = "test-support")]
    pub async fn open_at_schema(url: &str, pool_size: usize, version: usize) -> StoreResult<Self> {
        Self::open_at(url, pool_size, version).await
    }

    async fn open_at(url: &str, pool_size: usize, version: usize) -> StoreResult<Self> {
        let (url, tls, ssl_mode) = tls::from_url(url)?;
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))?;
        config.connect_timeout(DB_WAIT);
        config.ssl_mode(ssl_mode);
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
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(DB_WAIT))
            .create_timeout(Some(DB_WAIT))
            .recycle_timeout(Some(DB_WAIT))
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot build the connection pool: {e}")))?;
        let (publisher, publishes) = mpsc::channel(BATCH_QUEUE);
        batch::spawn_publishers(pool.clone(), publishes);
        let flush = Arc::new(batch::PgFlush::new(pool.clone()));
        let store = Self {
            pool,
            config,
            tls,
            publisher,
            records: Arc::default(),
            flush,
        };
        let mut client = store.client().await?;
        schema::migrate(&mut client, version).await?;
        schema::build_indexes(&client, version).await?;
        Ok(store)
    }

    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }
}

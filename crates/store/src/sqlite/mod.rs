//! The SQLite backend: Herald's default, an embedded file with no server.
//!
//! Writes go through the group-committing writer of [`pool`]; reads use the
//! read-only pool. WAL mode lets readers run while the writer commits.

mod pool;
mod schema;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row, params};

use herald_domain::attempt::AttemptStatus;
use herald_domain::event::EventType;
use herald_domain::ids::{
    AccountId, AttemptId, BotId, DeliveryId, EndpointId, EndpointKind, EventId, KeyId, RecoveryId, TeamId,
};
use herald_domain::keys::KeyHash;
use herald_domain::signing::{PreviousSecret, Secret};
use herald_domain::webhook::EndpointStatus;

pub use backup::{BackupReport, backup};
pub use pool::Durability;
pub use schema::latest_version;

use crate::codec::{
    self, delivery_move, event_types_from, event_types_json, headers_from, headers_json, request_headers_from,
    request_headers_stored,
};
use crate::health::{self, StreakMove};
use crate::model::*;
use crate::plan::{self, PlannedDelivery};
use crate::records::{Flush, RecordQueue, Unrun};
use crate::{
    AttemptLog, Endpoints, Publishing, Queue, Recovering, Retention, Sessions, StoreError, StoreResult, Tenancy,
};
use pool::Connections;
pub(crate) use pool::internal;

mod accounts;
mod backup;
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
use recover::*;
#[allow(unused_imports)]
use rows::*;

/// Herald's store on one SQLite file.
pub struct SqliteStore {
    conns: Connections,
    records: Arc<RecordQueue>,
    flush: Arc<SqliteFlush>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path, durability: Durability) -> StoreResult<Self> {
        Self::open_at(path, durability, schema::latest_version())
    }

    /// Opens the store migrated only up to schema `version`: what an older
    /// binary left behind, for the upgrade tests.
    #[cfg(feature = "test-support")]
    pub fn open_at_schema(path: &Path, durability: Durability, version: usize) -> StoreResult<Self> {
        Self::open_at(path, durability, version)
    }

    fn open_at(path: &Path, durability: Durability, version: usize) -> StoreResult<Self> {
        let conns = Connections::open(path, durability, 4, version)?;
        let flush = Arc::new(SqliteFlush { writer: conns.writer() });
        Ok(Self {
            conns,
            records: Arc::default(),
            flush,
        })
    }
}

#[cfg(test)]
mod tests;

//! PostgreSQL schema migrations, versioned in `herald_migrations`.
//!
//! Every process applies what is missing on start, under an advisory lock so
//! that several nodes starting together migrate once. Entries are never
//! edited once released: a change is a new entry.

use deadpool_postgres::Object;

use crate::StoreResult;
use crate::postgres::pg_error;

/// Arbitrary, fixed: the advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x6865_7261_6c64;

const MIGRATIONS: &[&str] = &[
    // 1: the core schema, as in SQLite.
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE accounts (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at BIGINT NOT NULL);
    CREATE TABLE teams (id TEXT PRIMARY KEY, account_id TEXT NOT NULL, name TEXT NOT NULL, created_at BIGINT NOT NULL);
    CREATE TABLE team_keys (hash TEXT PRIMARY KEY, team_id TEXT NOT NULL, created_at BIGINT NOT NULL);
    CREATE TABLE bots (
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        meeting_url TEXT NOT NULL,
        metadata TEXT NOT NULL,
        recording_id TEXT NOT NULL,
        participant_events_id TEXT NOT NULL,
        transcript_id TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX bots_team ON bots(team_id, created_at);
    CREATE TABLE endpoints (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        team_id TEXT NOT NULL,
        bot_id TEXT,
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        event_types TEXT NOT NULL,
        status TEXT NOT NULL,
        secret TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        -- A bot's endpoints keep the order of the Create Bot request.
        position INTEGER NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX endpoints_team ON endpoints(team_id, kind, created_at);
    CREATE INDEX endpoints_bot ON endpoints(bot_id, position) WHERE bot_id IS NOT NULL;
    CREATE TABLE events (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        team_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        body BYTEA NOT NULL
    );
    CREATE TABLE deliveries (
        seq BIGSERIAL PRIMARY KEY,
        event_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        team_id TEXT NOT NULL,
        state TEXT NOT NULL,
        ordered BOOLEAN NOT NULL DEFAULT FALSE,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        locked_until BIGINT,
        locked_by TEXT,
        body BYTEA,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE state = 'pending' AND NOT ordered;
    CREATE INDEX deliveries_ordered ON deliveries(endpoint_id, seq) WHERE state = 'pending' AND ordered;
    CREATE INDEX deliveries_endpoint ON deliveries(endpoint_id);
    CREATE TABLE attempts (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        delivery_seq BIGINT NOT NULL,
        team_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        timestamp BIGINT NOT NULL,
        status TEXT NOT NULL,
        duration_ms BIGINT NOT NULL,
        request_url TEXT NOT NULL,
        request_headers TEXT NOT NULL,
        response_status INTEGER,
        response_headers TEXT,
        response_body BYTEA,
        error TEXT
    );
    -- The log reads newest first by attempt time, ties by position.
    CREATE INDEX attempts_endpoint ON attempts(endpoint_id, timestamp, seq);
    CREATE INDEX attempts_endpoint_status ON attempts(endpoint_id, status, timestamp, seq);
    CREATE INDEX attempts_endpoint_event ON attempts(endpoint_id, event_id, timestamp, seq);
    "#,
    // 2: the dashboard: sign-in links and sessions (hashes only), and the
    // `manual` mark of deliveries asked for by a person, copied to their attempts.
    r#"
    CREATE TABLE dashboard_links (
        hash TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE dashboard_sessions (
        hash TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        created_at BIGINT NOT NULL
    );
    ALTER TABLE deliveries ADD COLUMN manual BOOLEAN NOT NULL DEFAULT FALSE;
    ALTER TABLE attempts ADD COLUMN manual BOOLEAN NOT NULL DEFAULT FALSE;
    "#,
    // 3: cheaper deliveries, as in SQLite: the status filter reads a partial
    // index of the unsuccessful attempts, the event filter an index on the
    // (time-ordered) event id, instead of two more per-endpoint indexes; and
    // deliveries lose their endpoint index (an endpoint's deliveries are found
    // through its log and the two partial pending indexes).
    r#"
    DROP INDEX deliveries_endpoint;
    DROP INDEX attempts_endpoint_status;
    DROP INDEX attempts_endpoint_event;
    CREATE INDEX attempts_endpoint_unsuccessful ON attempts(endpoint_id, status, timestamp, seq)
        WHERE status <> 'success';
    CREATE INDEX attempts_event ON attempts(event_id);
    "#,
    // 4: due work without scanning what is leased (as SQLite's schema 4):
    // free work indexed by its due time, leased work by its lease's end.
    r#"
    DROP INDEX deliveries_due;
    CREATE INDEX deliveries_due ON deliveries(next_attempt_at)
        WHERE state = 'pending' AND NOT ordered AND locked_until IS NULL;
    CREATE INDEX deliveries_leased ON deliveries(locked_until)
        WHERE state = 'pending' AND NOT ordered AND locked_until IS NOT NULL;
    "#,
    // 5: request headers in their short form, as SQLite's schema 5 (no table
    // changes; the version keeps older binaries out).
    "/* request headers in their short form */",
    // 6: team keys get an id, a name, a prefix and a last-used time, as in
    // SQLite's schema 6, so that they can be listed and revoked.
    r#"
    ALTER TABLE team_keys ADD COLUMN id TEXT;
    ALTER TABLE team_keys ADD COLUMN name TEXT;
    ALTER TABLE team_keys ADD COLUMN prefix TEXT NOT NULL DEFAULT 'hk_';
    ALTER TABLE team_keys ADD COLUMN last_used_at BIGINT;
    UPDATE team_keys SET id = 'key_' || substr(hash, 1, 26) WHERE id IS NULL;
    CREATE UNIQUE INDEX team_keys_id ON team_keys(id);
    CREATE INDEX team_keys_team ON team_keys(team_id, created_at);
    "#,
    // 7: previous secret, deactivation reason, failing streak, hourly stats
    // and recovers, as SQLite's schema 7.
    r#"
    ALTER TABLE endpoints ADD COLUMN previous_secret TEXT;
    ALTER TABLE endpoints ADD COLUMN previous_secret_expires_at BIGINT;
    ALTER TABLE endpoints ADD COLUMN deactivated_reason TEXT;
    ALTER TABLE endpoints ADD COLUMN failing_since BIGINT;
    CREATE TABLE endpoint_stats (
        endpoint_id TEXT NOT NULL,
        hour BIGINT NOT NULL,
        success BIGINT NOT NULL DEFAULT 0,
        retrying BIGINT NOT NULL DEFAULT 0,
        failed BIGINT NOT NULL DEFAULT 0,
        max_ms BIGINT NOT NULL DEFAULT 0,
        d0 BIGINT NOT NULL DEFAULT 0,
        d1 BIGINT NOT NULL DEFAULT 0,
        d2 BIGINT NOT NULL DEFAULT 0,
        d3 BIGINT NOT NULL DEFAULT 0,
        d4 BIGINT NOT NULL DEFAULT 0,
        d5 BIGINT NOT NULL DEFAULT 0,
        d6 BIGINT NOT NULL DEFAULT 0,
        d7 BIGINT NOT NULL DEFAULT 0,
        d8 BIGINT NOT NULL DEFAULT 0,
        d9 BIGINT NOT NULL DEFAULT 0,
        d10 BIGINT NOT NULL DEFAULT 0,
        d11 BIGINT NOT NULL DEFAULT 0,
        d12 BIGINT NOT NULL DEFAULT 0,
        d13 BIGINT NOT NULL DEFAULT 0,
        d14 BIGINT NOT NULL DEFAULT 0,
        d15 BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (endpoint_id, hour)
    );
    CREATE TABLE recoveries (
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        since BIGINT NOT NULL,
        until BIGINT NOT NULL,
        scan_to BIGINT NOT NULL,
        cursor_ts BIGINT NOT NULL,
        cursor_seq BIGINT NOT NULL,
        total BIGINT NOT NULL,
        made BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        finished_at BIGINT,
        locked_until BIGINT,
        locked_by TEXT
    );
    CREATE INDEX recoveries_endpoint ON recoveries(endpoint_id, created_at);
    CREATE INDEX recoveries_open ON recoveries(created_at) WHERE finished_at IS NULL;
    "#,
    // 8: retention finds old hourly stats (and, built concurrently, an old
    // event's deliveries). The tables it deletes from are vacuumed after
    // 2 % of their rows are dead rather than PostgreSQL's default 20 %, so
    // that what retention frees is reused before the tables grow past it.
    r#"
    CREATE INDEX endpoint_stats_hour ON endpoint_stats(hour);
    ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.02);
    ALTER TABLE deliveries SET (autovacuum_vacuum_scale_factor = 0.02);
    ALTER TABLE attempts SET (autovacuum_vacuum_scale_factor = 0.02);
    "#,
];

/// Indexes over tables that take writes all the time, built after the
/// migrations commit with `CREATE INDEX CONCURRENTLY` (which cannot run in a
/// transaction): building one reads the whole table, and a plain `CREATE
/// INDEX` would stop every write to it, from every node, until it is done.
/// Each is (the schema version that brings it, name, definition). Schema
/// 7's first release built its index inside the migration; stores migrated
/// by it have the index already, and the check below finds it valid.
const CONCURRENT_INDEXES: &[(usize, &str, &str)] = &[
    (
        7,
        "deliveries_manual",
        "deliveries(event_id, endpoint_id, seq) WHERE manual",
    ),
    (8, "deliveries_event", "deliveries(event_id)"),
];

/// The advisory lock under which one process at a time builds the
/// concurrent indexes of the store's schema (stores in other schemas of the
/// same database build theirs meanwhile).
const INDEX_LOCK: &str = "SELECT pg_advisory_lock(hashtext(current_schema() || '.herald_indexes'))";
const INDEX_UNLOCK: &str = "SELECT pg_advisory_unlock(hashtext(current_schema() || '.herald_indexes'))";

/// Brings the schema up to `target` (the newest version, but for the
/// upgrade tests). A database migrated by a newer binary is refused.
pub(crate) async fn migrate(client: &mut Object, target: usize) -> StoreResult<()> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS herald_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await
    .map_err(pg_error)?;
    let row = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM herald_migrations", &[])
        .await
        .map_err(pg_error)?;
    let current = row.get::<_, i32>(0).max(0) as usize;
    if current > MIGRATIONS.len() {
        return Err(crate::StoreError::Internal(format!(
            "the PostgreSQL store is at schema version {current}, newer than this binary's {}; run a newer herald",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
        let version = (i + 1) as i32;
        tx.batch_execute(sql).await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO herald_migrations (version, applied_at) VALUES ($1, (extract(epoch from now()) * 1000)::bigint)",
            &[&version],
        )
        .await
        .map_err(pg_error)?;
        tracing::info!(version, "applied PostgreSQL migration");
    }
    if current == 0 {
        // A new store's tables are empty: its indexes are built at once,
        // with the tables (a concurrent build would wait for every older
        // transaction in the database).
        for (_, name, definition) in CONCURRENT_INDEXES.iter().filter(|(version, ..)| *version <= target) {
            tx.batch_execute(&format!("CREATE INDEX {name} ON {definition}"))
                .await
                .map_err(pg_error)?;
        }
    }
    tx.commit().await.map_err(pg_error)
}

/// Builds the [`CONCURRENT_INDEXES`] of schema `target` that are missing,
/// or invalid because a build was cut short (they are dropped and built
/// again), while the other nodes go on writing. Runs on every start: it is
/// one query when they are all there.
pub(crate) async fn build_indexes(client: &Object, target: usize) -> StoreResult<()> {
    for (_, name, definition) in CONCURRENT_INDEXES.iter().filter(|(version, ..)| *version <= target) {
        if index_valid(client, name).await? == Some(true) {
            continue;
        }
        client.execute(INDEX_LOCK, &[]).await.map_err(pg_error)?;
        let built = build_index(client, name, definition).await;
        let unlocked = client.execute(INDEX_UNLOCK, &[]).await;
        built?;
        unlocked.map_err(pg_error)?;
    }
    Ok(())
}

/// Under the index lock: builds `name` unless another process has meanwhile.
async fn build_index(client: &Object, name: &str, definition: &str) -> StoreResult<()> {
    match index_valid(client, name).await? {
        Some(true) => return Ok(()),
        Some(false) => client
            .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
            .await
            .map_err(pg_error)?,
        None => {}
    }
    tracing::info!(index = name, "building a PostgreSQL index; writes go on meanwhile");
    client
        .batch_execute(&format!("CREATE INDEX CONCURRENTLY {name} ON {definition}"))
        .await
        .map_err(pg_error)
}

/// Whether index `name` (in the search path) is valid; `None` if there is none.
async fn index_valid(client: &Object, name: &str) -> StoreResult<Option<bool>> {
    let row = client
        .query_opt(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)",
            &[&name],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.map(|r| r.get(0)))
}

/// The newest schema version this binary knows.
pub fn latest_version() -> usize {
    MIGRATIONS.len()
}

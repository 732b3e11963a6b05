//! SQLite schema migrations, versioned with `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the schema one version up and runs in
//! its own transaction; a newer binary applies the ones an older store lacks.
//! Entries are never edited once released: a change is a new entry.

use rusqlite::Connection;

use crate::{StoreError, StoreResult};

const MIGRATIONS: &[&str] = &[
    // 1: the core schema.
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE teams (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE team_keys (
        hash TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE bots (
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        meeting_url TEXT NOT NULL,
        metadata TEXT NOT NULL,
        recording_id TEXT NOT NULL,
        participant_events_id TEXT NOT NULL,
        transcript_id TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX bots_team ON bots(team_id, created_at);
    -- Team webhooks (kind 'webhook') and bots' real-time endpoints (kind
    -- 'realtime', with bot_id) alike: where deliveries go.
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
        created_at INTEGER NOT NULL
    );
    CREATE INDEX endpoints_team ON endpoints(team_id, kind, created_at);
    CREATE INDEX endpoints_bot ON endpoints(bot_id, position) WHERE bot_id IS NOT NULL;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        team_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    -- One event on its way to one endpoint. `state` is pending until the
    -- delivery succeeds, fails or is dropped; a pending delivery is due at
    -- `next_attempt_at` and free to claim when its lease has run out.
    -- `ordered` deliveries (real-time endpoints) go out in `seq` order, one
    -- endpoint run at a time. `body` is set when the delivered bytes differ
    -- per endpoint (the real-time envelope); otherwise the event's body is sent.
    CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        team_id TEXT NOT NULL,
        state TEXT NOT NULL,
        ordered INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        locked_until INTEGER,
        locked_by TEXT,
        body BLOB,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE state = 'pending' AND ordered = 0;
    CREATE INDEX deliveries_ordered ON deliveries(endpoint_id, seq) WHERE state = 'pending' AND ordered = 1;
    CREATE INDEX deliveries_endpoint ON deliveries(endpoint_id);
    CREATE TABLE attempts (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        delivery_seq INTEGER NOT NULL,
        team_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        timestamp INTEGER NOT NULL,
        status TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        request_url TEXT NOT NULL,
        request_headers TEXT NOT NULL,
        response_status INTEGER,
        response_headers TEXT,
        response_body BLOB,
        error TEXT
    );
    -- The log reads newest first by attempt time, ties by position.
    CREATE INDEX attempts_endpoint ON attempts(endpoint_id, timestamp, seq);
    CREATE INDEX attempts_endpoint_status ON attempts(endpoint_id, status, timestamp, seq);
    CREATE INDEX attempts_endpoint_event ON attempts(endpoint_id, event_id, timestamp, seq);
    "#,
    // 2: the dashboard: sign-in links and sessions (hashes only), and the
    // `manual` mark of deliveries asked for by a person (resend, test event),
    // copied to each of their attempts.
    r#"
    CREATE TABLE dashboard_links (
        hash TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE dashboard_sessions (
        hash TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    ALTER TABLE deliveries ADD COLUMN manual INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE attempts ADD COLUMN manual INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3: cheaper deliveries. Each index keyed by endpoint costs a commit one
    // page per endpoint it touches. Every attempt paid for three; the log's
    // status filter is now served by a partial index of the attempts that did
    // not succeed (a successful attempt, the common case, skips it; the
    // `success` filter reads the main index), and its event filter by an
    // index on the event id, which is time-ordered and so appends. Deliveries
    // lose their endpoint index: deleting an endpoint finds its finished
    // deliveries through its log and its pending ones through the two
    // partial pending indexes.
    r#"
    DROP INDEX deliveries_endpoint;
    DROP INDEX attempts_endpoint_status;
    DROP INDEX attempts_endpoint_event;
    CREATE INDEX attempts_endpoint_unsuccessful ON attempts(endpoint_id, status, timestamp, seq)
        WHERE status <> 'success';
    CREATE INDEX attempts_event ON attempts(event_id);
    "#,
    // 4: due work without scanning what is leased. The one due index held
    // every pending unordered delivery, leased or not, so finding the next
    // due time meant reading all of them (40-75 ms with a few hundred
    // thousand retries pending) and every claim stepped over everything held
    // in memory. Free work (no lease) is now indexed by its due time and
    // leased work by its lease's end: the next due time is the first entry
    // of either, and a claim reads only what it takes.
    r#"
    DROP INDEX deliveries_due;
    CREATE INDEX deliveries_due ON deliveries(next_attempt_at)
        WHERE state = 'pending' AND ordered = 0 AND locked_until IS NULL;
    CREATE INDEX deliveries_leased ON deliveries(locked_until)
        WHERE state = 'pending' AND ordered = 0 AND locked_until IS NOT NULL;
    "#,
    // 5: an attempt's own request headers are stored in a short form
    // (`codec::request_headers_stored`). No table changes, but a binary
    // older than this one would read those rows as having no headers, so
    // the version refuses it.
    "/* request headers in their short form */",
    // 6: team keys get an id, an optional name, the first characters of the
    // key (to tell keys apart in a list) and the time they were last used,
    // so that they can be listed and revoked. Keys made before have no
    // stored prefix beyond `hk_`; their id comes from their hash.
    r#"
    ALTER TABLE team_keys ADD COLUMN id TEXT;
    ALTER TABLE team_keys ADD COLUMN name TEXT;
    ALTER TABLE team_keys ADD COLUMN prefix TEXT NOT NULL DEFAULT 'hk_';
    ALTER TABLE team_keys ADD COLUMN last_used_at INTEGER;
    UPDATE team_keys SET id = 'key_' || substr(hash, 1, 26) WHERE id IS NULL;
    CREATE UNIQUE INDEX team_keys_id ON team_keys(id);
    CREATE INDEX team_keys_team ON team_keys(team_id, created_at);
    "#,
    // 7: what the receiver's answers change (contract §4.2-4.3). A webhook
    // keeps its previous secret while a rotation's grace lasts; the reason
    // Herald deactivated it; and `failing_since`, the time of its first
    // failed delivery after its last success, from which sustained failure
    // deactivates it. `endpoint_stats` counts each webhook's attempts per
    // hour by status, with a 16-bucket histogram of their durations
    // (`health::DURATION_BUCKETS_MS`) and the longest, written once per
    // record drain, so that the stats are read without the log.
    // `recoveries` holds each recover (contract §4.1): its window, its count,
    // the last attempt logged when it was asked for (`scan_to`), how far it
    // has got in the webhook's failed attempts (`cursor_ts`, `cursor_seq`),
    // and the lease of the process working it. Manual deliveries (resends,
    // test events, recovers) are indexed by event: a recover skips an event
    // that a later delivery to the webhook already took up.
    r#"
    ALTER TABLE endpoints ADD COLUMN previous_secret TEXT;
    ALTER TABLE endpoints ADD COLUMN previous_secret_expires_at INTEGER;
    ALTER TABLE endpoints ADD COLUMN deactivated_reason TEXT;
    ALTER TABLE endpoints ADD COLUMN failing_since INTEGER;
    CREATE TABLE endpoint_stats (
        endpoint_id TEXT NOT NULL,
        hour INTEGER NOT NULL,
        success INTEGER NOT NULL DEFAULT 0,
        retrying INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        max_ms INTEGER NOT NULL DEFAULT 0,
        d0 INTEGER NOT NULL DEFAULT 0,
        d1 INTEGER NOT NULL DEFAULT 0,
        d2 INTEGER NOT NULL DEFAULT 0,
        d3 INTEGER NOT NULL DEFAULT 0,
        d4 INTEGER NOT NULL DEFAULT 0,
        d5 INTEGER NOT NULL DEFAULT 0,
        d6 INTEGER NOT NULL DEFAULT 0,
        d7 INTEGER NOT NULL DEFAULT 0,
        d8 INTEGER NOT NULL DEFAULT 0,
        d9 INTEGER NOT NULL DEFAULT 0,
        d10 INTEGER NOT NULL DEFAULT 0,
        d11 INTEGER NOT NULL DEFAULT 0,
        d12 INTEGER NOT NULL DEFAULT 0,
        d13 INTEGER NOT NULL DEFAULT 0,
        d14 INTEGER NOT NULL DEFAULT 0,
        d15 INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (endpoint_id, hour)
    ) WITHOUT ROWID;
    CREATE TABLE recoveries (
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        since INTEGER NOT NULL,
        until INTEGER NOT NULL,
        scan_to INTEGER NOT NULL,
        cursor_ts INTEGER NOT NULL,
        cursor_seq INTEGER NOT NULL,
        total INTEGER NOT NULL,
        made INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        finished_at INTEGER,
        locked_until INTEGER,
        locked_by TEXT
    );
    CREATE INDEX recoveries_endpoint ON recoveries(endpoint_id, created_at);
    CREATE INDEX recoveries_open ON recoveries(created_at) WHERE finished_at IS NULL;
    CREATE INDEX deliveries_manual ON deliveries(event_id, endpoint_id, seq) WHERE manual = 1;
    "#,
    // 8: retention finds an old event's deliveries, and old hourly stats.
    r#"
    CREATE INDEX deliveries_event ON deliveries(event_id);
    CREATE INDEX endpoint_stats_hour ON endpoint_stats(hour);
    "#,
];

/// Brings the schema up to `target` (the newest version, but for the
/// upgrade tests). A store newer than this binary is refused: its data may
/// depend on rules this binary does not know.
pub(crate) fn migrate(conn: &Connection, target: usize) -> StoreResult<()> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    let current = current.max(0) as usize;
    if current > MIGRATIONS.len() {
        return Err(crate::StoreError::Internal(format!(
            "the SQLite store is at schema version {current}, newer than this binary's {}; run a newer herald",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
        let version = i + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {version}; COMMIT;"
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            crate::StoreError::Internal(format!("migration {version} failed: {e}"))
        })?;
        tracing::info!(version, "applied SQLite migration");
    }
    Ok(())
}

/// The newest schema version this binary knows.
pub fn latest_version() -> usize {
    MIGRATIONS.len()
}

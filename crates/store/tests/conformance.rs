//! The store's own suite: the claim and lease rules every backend must keep,
//! run against SQLite always and against PostgreSQL when
//! `HERALD_TEST_POSTGRES_URL` is set (in a schema of its own, dropped after).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use herald_domain::event::EventType;
use herald_domain::ids::{BotId, EndpointId, EndpointKind, EventId, TeamId};
use herald_domain::signing::Secret;
use herald_domain::webhook::EndpointStatus;
use herald_store::postgres::PgStore;
use herald_store::sqlite::{Durability, SqliteStore};
use herald_store::*;

const NOW: i64 = 1_800_000_000_000;

fn lease(node: &str, until_ms: i64) -> Lease {
    Lease {
        node: node.into(),
        until_ms,
    }
}

struct Fixture {
    store: Arc<dyn Store>,
    team: TeamId,
    account: String,
    _scratch: Scratch,
}

/// What one backend's test store occupies: a temporary directory, and for
/// PostgreSQL a schema. Both go when the test is done with them (the store
/// must have been dropped first, as a [`Fixture`]'s fields are).
struct Scratch {
    _dir: tempfile::TempDir,
    /// The database URL and the schema's name.
    schema: Option<(String, String)>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some((base, name)) = self.schema.take() {
            herald_store::postgres::drop_schema_blocking(&base, &name);
        }
    }
}

/// Where one backend's test store lives, so that it can be opened again.
enum Place {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Place {
    async fn open(&self, version: usize) -> StoreResult<Arc<dyn Store>> {
        Ok(match self {
            Place::Sqlite(path) => Arc::new(SqliteStore::open_at_schema(path, Durability::Normal, version)?),
            Place::Postgres(url) => Arc::new(PgStore::open_at_schema(url, 4, version).await?),
        })
    }

    /// How many rows of `table` belong to `endpoint`, read with raw SQL.
    async fn rows_of(&self, table: &str, endpoint: &EndpointId) -> i64 {
        match self {
            Place::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(
                    &format!("SELECT count(*) FROM {table} WHERE endpoint_id = ?1"),
                    [endpoint.as_str()],
                    |r| r.get(0),
                )
                .unwrap(),
            Place::Postgres(url) => pg_client(url)
                .await
                .query_one(
                    &format!("SELECT count(*) FROM {table} WHERE endpoint_id = $1"),
                    &[&endpoint.as_str()],
                )
                .await
                .unwrap()
                .get(0),
        }
    }

    /// How many rows `sql` (a `SELECT count(*) …` with no parameters) counts.
    async fn count(&self, sql: &str) -> i64 {
        match self {
            Place::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap(),
            Place::Postgres(url) => pg_client(url).await.query_one(sql, &[]).await.unwrap().get(0),
        }
    }

    /// Runs `sql` beside the store, as an operator (or an accident) would.
    async fn execute(&self, sql: &str) {
        match self {
            Place::Sqlite(path) => rusqlite::Connection::open(path).unwrap().execute_batch(sql).unwrap(),
            Place::Postgres(url) => pg_client(url).await.batch_execute(sql).await.unwrap(),
        }
    }

    /// The `request_headers` column of `event`'s attempt as stored, after
    /// setting it to `set` if given (as an older binary wrote it).
    async fn stored_request_headers(&self, event: &EventId, set: Option<&str>) -> String {
        let select = "SELECT request_headers FROM attempts WHERE event_id = ";
        match self {
            Place::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                if let Some(raw) = set {
                    c.execute(
                        "UPDATE attempts SET request_headers = ?1 WHERE event_id = ?2",
                        [raw, event.as_str()],
                    )
                    .unwrap();
                }
                c.query_row(&format!("{select}?1"), [event.as_str()], |r| r.get(0))
                    .unwrap()
            }
            Place::Postgres(url) => {
                let c = pg_client(url).await;
                if let Some(raw) = set {
                    c.execute(
                        "UPDATE attempts SET request_headers = $1 WHERE event_id = $2",
                        &[&raw, &event.as_str()],
                    )
                    .await
                    .unwrap();
                }
                c.query_one(&format!("{select}$1"), &[&event.as_str()])
                    .await
                    .unwrap()
                    .get(0)
            }
        }
    }

    /// Takes a store written at the latest schema back to schema `version`,
    /// as an older binary would have left it (its rows minus what the newer
    /// versions added), with each backend's own SQL. Only the newest version's
    /// step is kept here: the upgrade test goes back one version.
    async fn downgrade_to(&self, version: usize) {
        assert_eq!(
            version + 1,
            self.latest(),
            "only the newest version's step back is written"
        );
        // Schema 8 added the indexes retention reads by (on PostgreSQL the
        // one over deliveries is built concurrently, after the migration).
        const DOWN_8: &str = "DROP INDEX IF EXISTS deliveries_event; DROP INDEX endpoint_stats_hour;";
        match self {
            Place::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(&format!("BEGIN; {DOWN_8} PRAGMA user_version = {version}; COMMIT;"))
                .unwrap(),
            Place::Postgres(url) => pg_client(url)
                .await
                .batch_execute(&format!(
                    "BEGIN; {DOWN_8} ALTER TABLE events RESET (autovacuum_vacuum_scale_factor);
                     ALTER TABLE deliveries RESET (autovacuum_vacuum_scale_factor);
                     ALTER TABLE attempts RESET (autovacuum_vacuum_scale_factor);
                     DELETE FROM herald_migrations WHERE version > {version}; COMMIT;"
                ))
                .await
                .unwrap(),
        }
    }

    /// The schema version the store is at, read with raw SQL.
    async fn version(&self) -> usize {
        match self {
            Place::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
                .unwrap() as usize,
            Place::Postgres(url) => pg_client(url)
                .await
                .query_one("SELECT max(version) FROM herald_migrations", &[])
                .await
                .unwrap()
                .get::<_, i32>(0) as usize,
        }
    }

    fn latest(&self) -> usize {
        match self {
            Place::Sqlite(_) => herald_store::sqlite::latest_version(),
            Place::Postgres(_) => herald_store::postgres::latest_version(),
        }
    }
}

/// A plain connection, for what the tests do beside the store.
async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A fresh place for each backend: a SQLite file always, a PostgreSQL schema
/// (dropped after) when `HERALD_TEST_POSTGRES_URL` is set.
async fn places() -> Vec<(&'static str, Place, Scratch)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Place::Sqlite(dir.path().join("h.db"));
    let mut out = vec![(
        "sqlite",
        sqlite,
        Scratch {
            _dir: dir,
            schema: None,
        },
    )];
    match std::env::var("HERALD_TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => {
            let schema = format!("herald_c_{}", herald_domain::ids::new_suffix(NOW));
            pg_client(&base)
                .await
                .batch_execute(&format!("CREATE SCHEMA {schema}"))
                .await
                .unwrap();
            let url = herald_store::postgres::schema_url(&base, &schema);
            let scratch = Scratch {
                _dir: tempfile::tempdir().unwrap(),
                schema: Some((base, schema)),
            };
            out.push(("postgres", Place::Postgres(url), scratch));
        }
        _ => {
            assert!(
                std::env::var("HERALD_TEST_REQUIRE_ALL").as_deref() != Ok("1"),
                "HERALD_TEST_REQUIRE_ALL=1 but HERALD_TEST_POSTGRES_URL is not set"
            );
            eprintln!("skipping PostgreSQL: HERALD_TEST_POSTGRES_URL is not set");
        }
    }
    out
}

async fn stores() -> Vec<(&'static str, Fixture)> {
    let mut out = Vec::new();
    for (name, place, scratch) in places().await {
        let store = place.open(place.latest()).await.unwrap();
        out.push((name, fixture(store, scratch).await));
    }
    out
}

async fn fixture(store: Arc<dyn Store>, scratch: Scratch) -> Fixture {
    let account = store.create_account("a", NOW).await.unwrap();
    let team = store.create_team(&account.id, "t", NOW).await.unwrap();
    Fixture {
        store,
        team: team.id,
        account: account.id.to_string(),
        _scratch: scratch,
    }
}

async fn webhook(f: &Fixture) -> EndpointId {
    let endpoint = new_webhook(&f.team);
    assert!(f.store.create_endpoint(&endpoint, 100).await.unwrap());
    endpoint.id
}

/// A team webhook of `team`, not yet stored.
fn new_webhook(team: &TeamId) -> Endpoint {
    Endpoint {
        id: EndpointId::generate(EndpointKind::Webhook, NOW),
        team_id: team.clone(),
        bot_id: None,
        name: "w".into(),
        url: "http://127.0.0.1:9/".into(),
        event_types: vec![EventType::MeetingCompleted],
        status: EndpointStatus::Active,
        secret: Secret::generate(),
        previous_secret: None,
        deactivated_reason: None,
        failing_since: None,
        metadata: "{}".into(),
        created_at: NOW,
    }
}

async fn publish(f: &Fixture, lease: &Lease) -> Vec<ClaimedDelivery> {
    publish_at(f, lease, NOW).await
}

/// Publishes an event created at `at`.
async fn publish_at(f: &Fixture, lease: &Lease, at: i64) -> Vec<ClaimedDelivery> {
    let event = NewEvent {
        id: EventId::generate(at),
        id_given: false,
        team_id: f.team.to_string(),
        account_id: f.account.clone(),
        event_type: EventType::MeetingCompleted,
        created_at: at,
        data: "{}".into(),
        body: Bytes::from_static(b"{\"data\":{}}"),
    };
    match f.store.publish(event, lease).await.unwrap() {
        PublishOutcome::Created { deliveries, .. } => deliveries,
        other => panic!("{other:?}"),
    }
}

fn record(d: &ClaimedDelivery, next: DeliveryNext, keep: Option<i64>) -> AttemptRecord {
    AttemptRecord {
        id: herald_domain::ids::AttemptId::generate(NOW),
        delivery: d.id,
        team_id: d.team_id.clone(),
        endpoint_id: d.endpoint_id.clone(),
        event_id: d.event_id.clone(),
        event_type: d.event_type,
        attempt: d.attempt,
        timestamp_ms: NOW,
        status: herald_domain::attempt::AttemptStatus::Retrying,
        duration_ms: 1,
        request_url: "http://127.0.0.1:9/".into(),
        request_headers: vec![],
        response: None,
        error: Some("refused".into()),
        next,
        keep_lease_until: keep,
        deactivate: None,
    }
}

/// A successful attempt of `d`, which ends it.
fn success(d: &ClaimedDelivery) -> AttemptRecord {
    AttemptRecord {
        status: herald_domain::attempt::AttemptStatus::Success,
        error: None,
        ..record(d, DeliveryNext::Succeeded, None)
    }
}

#[tokio::test]
async fn a_leased_delivery_is_not_claimed_until_its_lease_runs_out_or_is_released() {
    for (name, f) in stores().await {
        webhook(&f).await;
        let published = publish(&f, &lease("a", NOW + 1_000)).await;
        assert_eq!(published.len(), 1, "{name}");
        assert_eq!(
            f.store.next_due_at(NOW).await.unwrap(),
            Some(NOW + 1_001),
            "{name}: due once a's lease has run out"
        );
        assert!(
            f.store
                .claim_due(NOW, 10, &lease("b", NOW + 5_000))
                .await
                .unwrap()
                .is_empty(),
            "{name}: held by a"
        );
        let taken = f
            .store
            .claim_due(NOW + 1_001, 10, &lease("b", NOW + 5_000))
            .await
            .unwrap();
        assert_eq!(taken.len(), 1, "{name}: a's lease ran out, b takes over");
        assert_eq!(taken[0].attempt, 1);
        f.store.release_node("b").await.unwrap();
        let again = f
            .store
            .claim_due(NOW + 1_001, 10, &lease("c", NOW + 5_000))
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{name}: released leases are free at once");
        f.store.renew(&[again[0].id], &lease("c", NOW + 60_000)).await.unwrap();
        assert!(
            f.store
                .claim_due(NOW + 10_000, 10, &lease("d", NOW + 5_000))
                .await
                .unwrap()
                .is_empty(),
            "{name}: renewed"
        );
    }
}

#[tokio::test]
async fn a_retry_is_due_at_its_time_and_counts_its_attempts() {
    for (name, f) in stores().await {
        webhook(&f).await;
        let d = publish(&f, &lease("a", NOW + 1_000)).await.remove(0);
        f.store
            .record_attempt(record(&d, DeliveryNext::RetryAt(NOW + 2_000), None))
            .await
            .unwrap();
        assert_eq!(f.store.next_due_at(NOW).await.unwrap(), Some(NOW + 2_000), "{name}");
        assert!(
            f.store
                .claim_due(NOW + 1_999, 10, &lease("a", NOW + 9_000))
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        let due = f
            .store
            .claim_due(NOW + 2_000, 10, &lease("a", NOW + 9_000))
            .await
            .unwrap();
        assert_eq!(due.len(), 1, "{name}");
        assert_eq!(due[0].attempt, 2, "{name}: the second attempt");
        f.store
            .record_attempt(record(&due[0], DeliveryNext::Succeeded, None))
            .await
            .unwrap();
        assert_eq!(f.store.next_due_at(NOW).await.unwrap(), None, "{name}: nothing left");
    }
}

#[tokio::test]
async fn ordered_endpoints_are_claimed_as_runs_one_claimer_at_a_time_and_fail_as_a_whole() {
    for (name, f) in stores().await {
        let bot_id = BotId::generate(NOW);
        let endpoint_id = EndpointId::generate(EndpointKind::Realtime, NOW);
        let bot = Bot {
            id: bot_id.clone(),
            team_id: f.team.clone(),
            meeting_url: "https://meet.example.com/x".into(),
            metadata: "{}".into(),
            recording_id: "rec_1".into(),
            participant_events_id: "pe_1".into(),
            transcript_id: "tr_1".into(),
            created_at: NOW,
            endpoints: vec![Endpoint {
                id: endpoint_id.clone(),
                team_id: f.team.clone(),
                bot_id: Some(bot_id.clone()),
                name: String::new(),
                url: "http://127.0.0.1:9/rt".into(),
                event_types: vec![EventType::TranscriptData],
                status: EndpointStatus::Active,
                secret: Secret::generate(),
                previous_secret: None,
                deactivated_reason: None,
                failing_since: None,
                metadata: "{}".into(),
                created_at: NOW,
            }],
        };
        f.store.create_bot(&bot).await.unwrap();
        let events: Vec<NewBotEvent> = (0..5)
            .map(|n| NewBotEvent {
                id: EventId::generate(NOW),
                event_type: EventType::TranscriptData,
                created_at: NOW,
                data: format!("{{\"n\":{n}}}"),
            })
            .collect();
        let BotPublishOutcome::Created { deliveries, .. } =
            f.store.publish_bot_events(&bot_id, events, None).await.unwrap()
        else {
            panic!("{name}: bot exists")
        };
        assert_eq!(deliveries.len(), 5);
        let run = f
            .store
            .claim_ordered(NOW, 10, 3, &lease("a", NOW + 5_000))
            .await
            .unwrap();
        let seqs: Vec<i64> = run.iter().map(|d| d.id.0).collect();
        assert_eq!(
            seqs,
            deliveries[..3].iter().map(|d| d.id.0).collect::<Vec<_>>(),
            "{name}: the first three, in order"
        );
        assert!(
            f.store
                .claim_ordered(NOW, 10, 3, &lease("b", NOW + 5_000))
                .await
                .unwrap()
                .is_empty(),
            "{name}: nobody else takes the rest while a holds the endpoint"
        );
        // The head fails with retries left: a keeps its place.
        f.store
            .record_attempt(record(&run[0], DeliveryNext::RetryAt(NOW + 1_000), Some(NOW + 6_000)))
            .await
            .unwrap();
        assert!(
            f.store
                .claim_ordered(NOW + 5_500, 10, 3, &lease("b", NOW + 9_000))
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        // The endpoint fails: what waited is dropped and logged.
        let dropped = f
            .store
            .fail_endpoint(record(&run[0], DeliveryNext::Failed, None), "not sent")
            .await
            .unwrap();
        assert_eq!(dropped, 4, "{name}");
        let bot = f.store.get_bot(&f.team, &bot_id).await.unwrap();
        assert_eq!(bot.endpoints[0].status, EndpointStatus::Failed, "{name}");
        let filter = AttemptFilter {
            status: Some(herald_domain::attempt::AttemptStatus::Dropped),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            f.store
                .list_attempts(&f.team, &endpoint_id, &filter)
                .await
                .unwrap()
                .len(),
            4,
            "{name}"
        );
        assert!(
            f.store
                .claim_ordered(NOW + 60_000, 10, 3, &lease("b", NOW + 99_000))
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
    }
}

/// A newer binary opens a store an older one wrote (one schema version
/// behind: written through this store code, then taken back a version as
/// the older binary would have left it), migrates it, and finds everything:
/// endpoints, events with their idempotency, pending retries, and the log
/// under every filter.
#[tokio::test]
async fn a_newer_binary_upgrades_an_older_store_without_losing_data() {
    for (name, place, scratch) in places().await {
        let old = place.latest() - 1;
        let f = fixture(place.open(place.latest()).await.unwrap(), scratch).await;
        let endpoint = webhook(&f).await;
        let mut published = publish(&f, &lease("a", NOW + 1_000)).await;
        published.extend(publish(&f, &lease("a", NOW + 1_000)).await);
        let (retried, delivered) = (&published[0], &published[1]);
        f.store
            .record_attempt(record(retried, DeliveryNext::RetryAt(NOW + 2_000), None))
            .await
            .unwrap();
        f.store.record_attempt(success(delivered)).await.unwrap();
        let Fixture {
            store,
            team,
            account,
            _scratch,
        } = f;
        drop(store);
        place.downgrade_to(old).await;
        assert_eq!(place.version().await, old, "{name}: the store is at the older version");

        let f = Fixture {
            store: place.open(place.latest()).await.unwrap(),
            team,
            account,
            _scratch,
        };
        let hooks = f.store.list_webhooks(&f.team).await.unwrap();
        assert_eq!(hooks.len(), 1, "{name}");
        assert_eq!(hooks[0].id, endpoint, "{name}");

        let log = |status, event: Option<EventId>| {
            let filter = AttemptFilter {
                status,
                event_id: event,
                before: None,
                limit: 10,
            };
            let (store, team, endpoint) = (Arc::clone(&f.store), f.team.clone(), endpoint.clone());
            async move {
                store
                    .list_attempts(&team, &endpoint, &filter)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|a| a.event_id)
                    .collect::<Vec<_>>()
            }
        };
        use herald_domain::attempt::AttemptStatus::{Failed, Retrying, Success};
        assert_eq!(log(None, None).await.len(), 2, "{name}: the whole log");
        assert_eq!(
            log(Some(Retrying), None).await,
            vec![retried.event_id.clone()],
            "{name}"
        );
        assert_eq!(
            log(Some(Success), None).await,
            vec![delivered.event_id.clone()],
            "{name}"
        );
        assert!(log(Some(Failed), None).await.is_empty(), "{name}");
        assert_eq!(
            log(None, Some(delivered.event_id.clone())).await,
            vec![delivered.event_id.clone()],
            "{name}: the event filter"
        );

        let due = f
            .store
            .claim_due(NOW + 2_000, 10, &lease("b", NOW + 9_000))
            .await
            .unwrap();
        assert_eq!(due.len(), 1, "{name}: the pending retry survived");
        assert_eq!((due[0].id, due[0].attempt), (retried.id, 2), "{name}");

        let again = NewEvent {
            id: delivered.event_id.clone(),
            id_given: true,
            team_id: f.team.to_string(),
            account_id: f.account.clone(),
            event_type: EventType::MeetingCompleted,
            created_at: NOW,
            data: "{}".into(),
            body: Bytes::from_static(b"{\"data\":{}}"),
        };
        assert!(
            matches!(
                f.store.publish(again, &lease("b", NOW + 9_000)).await.unwrap(),
                PublishOutcome::Existing(_)
            ),
            "{name}: idempotency holds across the upgrade"
        );
    }
}

/// Herald's own request headers are stored in a short form and come back
/// exactly as sent; so do any other list (stored as JSON) and the JSON that
/// every attempt's headers were stored as before schema version 5.
#[tokio::test]
async fn request_headers_come_back_exactly_as_sent_in_either_stored_form() {
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    for (name, place, scratch) in places().await {
        let f = fixture(place.open(place.latest()).await.unwrap(), scratch).await;
        let endpoint = webhook(&f).await;
        let mut published = Vec::new();
        for _ in 0..3 {
            published.extend(publish(&f, &lease("a", NOW + 1_000)).await);
        }
        let (short, other, legacy) = (&published[0], &published[1], &published[2]);
        let herald = |d: &ClaimedDelivery| {
            pairs(&[
                ("content-type", "application/json"),
                ("user-agent", "Herald/0.1.0"),
                ("webhook-id", d.event_id.as_str()),
                ("webhook-timestamp", "1800000000"),
                ("webhook-signature", "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="),
            ])
        };
        let others = pairs(&[("content-type", "text/plain"), ("x-note", "a \"quoted\" value")]);
        let sent = [(short, herald(short)), (other, others), (legacy, herald(legacy))];
        for (d, headers) in &sent {
            f.store
                .record_attempt(AttemptRecord {
                    request_headers: headers.clone(),
                    ..success(d)
                })
                .await
                .unwrap();
        }
        assert!(
            place
                .stored_request_headers(&short.event_id, None)
                .await
                .starts_with('='),
            "{name}: the short form"
        );
        let json = serde_json::to_string(&herald(legacy)).unwrap();
        place.stored_request_headers(&legacy.event_id, Some(&json)).await;
        let filter = AttemptFilter {
            limit: 10,
            ..AttemptFilter::default()
        };
        let log = f.store.list_attempts(&f.team, &endpoint, &filter).await.unwrap();
        assert_eq!(log.len(), 3, "{name}");
        for (d, headers) in &sent {
            let attempt = log.iter().find(|a| a.event_id == d.event_id).unwrap();
            assert_eq!(&attempt.request_headers, headers, "{name}");
        }
    }
}

/// An older binary refuses a store that a newer one migrated, rather than
/// writing to a schema it does not know.
#[tokio::test]
async fn an_older_binary_refuses_a_newer_store() {
    for (name, place, _scratch) in places().await {
        drop(place.open(place.latest()).await.unwrap());
        let newer = place.latest() + 1;
        match &place {
            Place::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.pragma_update(None, "user_version", newer as i64).unwrap();
            }
            Place::Postgres(url) => {
                pg_client(url)
                    .await
                    .execute(
                        "INSERT INTO herald_migrations (version, applied_at) VALUES ($1, 0)",
                        &[&(newer as i32)],
                    )
                    .await
                    .unwrap();
            }
        }
        let err = match place.open(place.latest()).await {
            Ok(_) => panic!("{name}: a newer store was opened"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("newer than this binary"), "{name}: {err}");
    }
}

/// A team's webhooks stop at the limit given, even when created all at
/// once; another team's count apart. Each create answers whether it stored.
#[tokio::test]
async fn webhooks_stop_at_the_teams_limit_even_when_created_together() {
    for (name, f) in stores().await {
        let creates: Vec<_> = (0..8)
            .map(|_| {
                let (store, e) = (Arc::clone(&f.store), new_webhook(&f.team));
                tokio::spawn(async move { store.create_endpoint(&e, 3).await.unwrap() })
            })
            .collect();
        let mut stored = 0;
        for create in creates {
            stored += usize::from(create.await.unwrap());
        }
        assert_eq!(stored, 3, "{name}");
        assert_eq!(f.store.list_webhooks(&f.team).await.unwrap().len(), 3, "{name}");
        let account = f.store.create_account("b", NOW).await.unwrap();
        let other = f.store.create_team(&account.id, "u", NOW).await.unwrap();
        assert!(
            f.store.create_endpoint(&new_webhook(&other.id), 3).await.unwrap(),
            "{name}"
        );
    }
}

/// Deleting an endpoint takes every delivery of it (finished, waiting for a
/// retry, never tried) and its log, and nothing of another endpoint.
#[tokio::test]
async fn deleting_an_endpoint_removes_all_its_deliveries_and_its_log() {
    for (name, place, scratch) in places().await {
        let f = fixture(place.open(place.latest()).await.unwrap(), scratch).await;
        let (gone, kept) = (webhook(&f).await, webhook(&f).await);
        let done = publish(&f, &lease("a", NOW + 1_000)).await;
        let retrying = publish(&f, &lease("a", NOW + 1_000)).await;
        let untried = publish(&f, &lease("a", NOW + 1_000)).await;
        for d in &done {
            f.store.record_attempt(success(d)).await.unwrap();
        }
        for d in &retrying {
            f.store
                .record_attempt(record(d, DeliveryNext::RetryAt(NOW + 2_000), None))
                .await
                .unwrap();
        }
        assert_eq!(place.rows_of("deliveries", &gone).await, 3, "{name}");
        f.store.delete_endpoint(&f.team, &gone).await.unwrap();
        assert_eq!(place.rows_of("deliveries", &gone).await, 0, "{name}: deliveries");
        assert_eq!(place.rows_of("attempts", &gone).await, 0, "{name}: log");
        // An attempt that was in flight while its endpoint went is answered
        // and leaves nothing behind.
        let in_flight: Vec<_> = untried.iter().filter(|d| d.endpoint_id == gone).collect();
        assert_eq!(in_flight.len(), 1, "{name}");
        f.store.record_attempt(success(in_flight[0])).await.unwrap();
        assert_eq!(place.rows_of("attempts", &gone).await, 0, "{name}: late log");
        assert_eq!(place.rows_of("deliveries", &gone).await, 0, "{name}: late delivery");
        assert_eq!(
            place.rows_of("deliveries", &kept).await,
            3,
            "{name}: the other endpoint's"
        );
        assert_eq!(
            place.rows_of("attempts", &kept).await,
            2,
            "{name}: the other endpoint's log"
        );
    }
}

/// Publishes that arrive together (PostgreSQL sends them as one statement)
/// each get their own answer: stored with their own delivery, an unknown
/// team, a team of another account, a replay of the same id and body, a
/// conflicting body under a taken id. The attempts recorded together are
/// each logged once.
#[tokio::test]
async fn publishes_and_records_that_arrive_together_are_answered_one_by_one() {
    for (name, f) in stores().await {
        let endpoint = webhook(&f).await;
        let other_account = f.store.create_account("b", NOW).await.unwrap();
        let event = |id: &str, given: bool, team: &str, account: &str, data: &str| NewEvent {
            id: EventId::from_stored(id.to_owned()),
            id_given: given,
            team_id: team.to_owned(),
            account_id: account.to_owned(),
            event_type: EventType::MeetingCompleted,
            created_at: NOW,
            data: data.to_owned(),
            body: Bytes::from(format!("{{\"data\":{data}}}")),
        };
        let team = f.team.to_string();
        let mut events = Vec::new();
        for i in 0..20 {
            events.push(event(&format!("evt_fresh_{i}"), false, &team, &f.account, "{}"));
        }
        events.push(event("evt_no_team", false, "team_missing", &f.account, "{}"));
        events.push(event(
            "evt_other_account",
            false,
            &team,
            other_account.id.as_str(),
            "{}",
        ));
        events.push(event("evt_twice", true, &team, &f.account, "{\"n\":1}"));
        events.push(event("evt_twice", true, &team, &f.account, "{\"n\":1}"));
        events.push(event("evt_clash", true, &team, &f.account, "{\"n\":1}"));
        events.push(event("evt_clash", true, &team, &f.account, "{\"n\":2}"));
        let l = lease("a", NOW + 1_000);
        let outcomes = futures_util::future::join_all(events.into_iter().map(|e| f.store.publish(e, &l))).await;
        let outcomes: Vec<PublishOutcome> = outcomes.into_iter().map(|o| o.unwrap()).collect();

        let mut deliveries = Vec::new();
        for (i, outcome) in outcomes[..20].iter().enumerate() {
            let PublishOutcome::Created {
                event,
                deliveries: made,
            } = outcome
            else {
                panic!("{name}: {outcome:?}")
            };
            assert_eq!(event.id.as_str(), format!("evt_fresh_{i}"), "{name}");
            assert_eq!(made.len(), 1, "{name}");
            assert_eq!(made[0].event_id, event.id, "{name}");
            assert_eq!(made[0].endpoint_id, endpoint, "{name}");
            deliveries.push(made[0].clone());
        }
        assert!(matches!(outcomes[20], PublishOutcome::UnknownTeam), "{name}");
        assert!(matches!(outcomes[21], PublishOutcome::AccountMismatch), "{name}");
        let twice: Vec<_> = outcomes[22..24]
            .iter()
            .map(|o| matches!(o, PublishOutcome::Created { .. }))
            .collect();
        assert_eq!(
            twice.iter().filter(|c| **c).count(),
            1,
            "{name}: {:?}",
            &outcomes[22..24]
        );
        assert!(
            outcomes[22..24]
                .iter()
                .any(|o| matches!(o, PublishOutcome::Existing(_))),
            "{name}: {:?}",
            &outcomes[22..24]
        );
        assert!(
            outcomes[24..26]
                .iter()
                .any(|o| matches!(o, PublishOutcome::Created { .. }))
                && outcomes[24..26].iter().any(|o| matches!(o, PublishOutcome::Conflict)),
            "{name}: {:?}",
            &outcomes[24..26]
        );
        let mut ids: Vec<_> = deliveries.iter().map(|d| d.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 20, "{name}: one delivery id each");

        let recorded =
            futures_util::future::join_all(deliveries.iter().map(|d| f.store.record_attempt(success(d)))).await;
        assert!(recorded.iter().all(Result::is_ok), "{name}: {recorded:?}");
        let filter = AttemptFilter {
            limit: 100,
            ..AttemptFilter::default()
        };
        let log = f.store.list_attempts(&f.team, &endpoint, &filter).await.unwrap();
        let mut logged: Vec<_> = log.iter().map(|a| a.event_id.to_string()).collect();
        logged.sort();
        let mut expected: Vec<_> = (0..20).map(|i| format!("evt_fresh_{i}")).collect();
        expected.sort();
        assert_eq!(logged, expected, "{name}: each attempt logged once");
        // Only the deliveries of the two stored given-id events are left.
        let mut left: Vec<_> = f
            .store
            .claim_due(NOW + 10_000, 100, &l)
            .await
            .unwrap()
            .iter()
            .map(|d| d.event_id.to_string())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["evt_clash", "evt_twice"],
            "{name}: the recorded deliveries ended"
        );
    }
}

/// An attempt and what it changes in its webhook's health (hourly stats,
/// failing streak, a 410's deactivation) are written together or not at
/// all: while the stats table cannot be written, the record fails and
/// leaves no log row and an active webhook (its delivery is tried again
/// when its lease runs out); once it can, the same record is kept with all
/// of it.
#[tokio::test]
async fn an_attempt_and_its_webhooks_health_are_written_together_or_not_at_all() {
    for (name, place, scratch) in places().await {
        let f = fixture(place.open(place.latest()).await.unwrap(), scratch).await;
        let endpoint = webhook(&f).await;
        let delivered = publish(&f, &lease("a", NOW + 1_000)).await;
        let gone = AttemptRecord {
            status: herald_domain::attempt::AttemptStatus::Failed,
            deactivate: Some(Deactivation::Now("it answered 410 Gone".into())),
            ..record(&delivered[0], DeliveryNext::Failed, None)
        };
        place
            .execute("ALTER TABLE endpoint_stats RENAME TO endpoint_stats_away")
            .await;
        assert!(f.store.record_attempt(gone.clone()).await.is_err(), "{name}");
        assert_eq!(
            place.rows_of("attempts", &endpoint).await,
            0,
            "{name}: no log row without its stats"
        );
        let webhook = f.store.get_endpoint(&f.team, &endpoint).await.unwrap();
        assert_eq!(webhook.status, EndpointStatus::Active, "{name}");

        place
            .execute("ALTER TABLE endpoint_stats_away RENAME TO endpoint_stats")
            .await;
        let recorded = f.store.record_attempt(gone).await.unwrap();
        assert!(recorded.deactivated, "{name}");
        assert_eq!(place.rows_of("attempts", &endpoint).await, 1, "{name}");
        assert_eq!(place.rows_of("endpoint_stats", &endpoint).await, 1, "{name}");
        let webhook = f.store.get_endpoint(&f.team, &endpoint).await.unwrap();
        assert_eq!(webhook.status, EndpointStatus::Deactivated, "{name}");
        assert_eq!(
            webhook.deactivated_reason.as_deref(),
            Some("it answered 410 Gone"),
            "{name}"
        );
    }
}

/// PostgreSQL: the newest schema's index over `deliveries` is built while the other
/// nodes go on writing (`CREATE INDEX CONCURRENTLY`, after the migration's
/// transaction): with a writer's transaction open, the upgrade waits for
/// it, and another write meanwhile is not held up behind the upgrade. An
/// index left invalid by a build cut short is built again on the next start.
#[tokio::test]
async fn a_postgres_upgrade_builds_its_index_without_stopping_writes() {
    for (name, place, scratch) in places().await {
        let Place::Postgres(url) = &place else { continue };
        let f = fixture(place.open(place.latest()).await.unwrap(), scratch).await;
        webhook(&f).await;
        webhook(&f).await;
        for _ in 0..3 {
            publish(&f, &lease("a", NOW + 1_000)).await;
        }
        place.downgrade_to(place.latest() - 1).await;

        // An old node's write, in a transaction still open.
        let old_node = pg_client(url).await;
        old_node
            .batch_execute(
                "BEGIN; UPDATE deliveries SET attempts = attempts WHERE seq = (SELECT min(seq) FROM deliveries)",
            )
            .await
            .unwrap();
        let upgrade = tokio::spawn({
            let url = url.clone();
            async move { PgStore::open_at_schema(&url, 2, herald_store::postgres::latest_version()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        // Another old node writes meanwhile; a plain CREATE INDEX, queued
        // behind the open transaction, would hold this write up too.
        let other = pg_client(url).await;
        other.batch_execute("SET statement_timeout = '3s'").await.unwrap();
        let written = other
            .execute(
                "UPDATE deliveries SET attempts = attempts WHERE seq = (SELECT max(seq) FROM deliveries)",
                &[],
            )
            .await;
        assert!(written.is_ok(), "{name}: a write waited for the upgrade: {written:?}");
        if upgrade.is_finished() {
            let early = upgrade.await.unwrap().map(|_| ());
            panic!("{name}: the upgrade ended before the open transaction did: {early:?}");
        }
        old_node.batch_execute("COMMIT").await.unwrap();
        drop(upgrade.await.unwrap().unwrap());
        let index = "SELECT indisvalid, pg_get_indexdef(indexrelid) FROM pg_index WHERE indexrelid = to_regclass('deliveries_event')";
        let row = other.query_one(index, &[]).await.unwrap();
        assert!(row.get::<_, bool>(0), "{name}");
        assert!(row.get::<_, String>(1).ends_with("(event_id)"), "{name}");

        // A build cut short leaves an invalid index (here: a unique one that
        // the rows break); the next start drops it and builds the right one.
        other.batch_execute("DROP INDEX deliveries_event").await.unwrap();
        let broken = other
            .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY deliveries_event ON deliveries(endpoint_id)")
            .await;
        assert!(broken.is_err(), "{name}: the endpoints have several deliveries each");
        let row = other.query_one(index, &[]).await.unwrap();
        assert!(
            !row.get::<_, bool>(0),
            "{name}: the cut-short build left an invalid index"
        );
        drop(place.open(place.latest()).await.unwrap());
        let row = other.query_one(index, &[]).await.unwrap();
        assert!(row.get::<_, bool>(0), "{name}: valid again");
        assert!(
            row.get::<_, String>(1).ends_with("(event_id)"),
            "{name}: {}",
            row.get::<_, String>(1)
        );
    }
}

/// Retention deletes the events created before the cutoff whose deliveries
/// have all finished, with their deliveries and attempts, in batches that
/// go on from where the last stopped; an old event with a pending delivery
/// stays, and so does every event after the first young one. Old hourly
/// stats and finished recovers go too.
#[tokio::test]
async fn retention_deletes_old_finished_events_and_keeps_pending_and_young_ones() {
    for (name, place, scratch) in places().await {
        let f = fixture(place.open(place.latest()).await.unwrap(), scratch).await;
        let endpoint = webhook(&f).await;
        let l = lease("a", NOW + 1_000);
        let mut old = Vec::new();
        for _ in 0..3 {
            old.extend(publish_at(&f, &l, NOW).await);
        }
        let pending = publish_at(&f, &l, NOW).await;
        let young = publish_at(&f, &l, NOW + 60_000).await;
        for d in &old {
            f.store.record_attempt(success(d)).await.unwrap();
        }
        f.store
            .record_attempt(record(&pending[0], DeliveryNext::RetryAt(NOW + 2_000), None))
            .await
            .unwrap();
        f.store.record_attempt(success(&young[0])).await.unwrap();
        assert_eq!(place.count("SELECT count(*) FROM events").await, 5, "{name}");

        // Batches of two: the three done, then the pending one kept, then
        // the young one stops the round.
        let cutoff = NOW + 1;
        let (mut after, mut deleted, mut kept, mut batches) = (0, 0, 0, 0);
        loop {
            let pruned = f.store.prune_events(cutoff, after, 2).await.unwrap();
            batches += 1;
            deleted += pruned.events;
            kept += pruned.kept;
            assert!(pruned.after >= after, "{name}: the cursor moves on");
            after = pruned.after;
            if !pruned.more {
                break;
            }
        }
        assert_eq!((deleted, kept, batches), (3, 1, 3), "{name}");
        assert_eq!(
            place.count("SELECT count(*) FROM events").await,
            2,
            "{name}: the pending and the young"
        );
        assert_eq!(place.rows_of("deliveries", &endpoint).await, 2, "{name}");
        assert_eq!(place.rows_of("attempts", &endpoint).await, 2, "{name}");
        for d in &old {
            let sql = format!("SELECT count(*) FROM attempts WHERE event_id = '{}'", d.event_id);
            assert_eq!(place.count(&sql).await, 0, "{name}: the old log");
        }
        // Nothing more to do at that cutoff.
        let again = f.store.prune_events(cutoff, 0, 500).await.unwrap();
        assert_eq!((again.events, again.kept, again.more), (0, 1, false), "{name}");

        // The pending one finishes: it goes next round.
        f.store.record_attempt(success(&pending[0])).await.unwrap();
        let last = f.store.prune_events(cutoff, 0, 500).await.unwrap();
        assert_eq!((last.events, last.kept), (1, 0), "{name}");

        // Stats of hours that ended by the cutoff go; the young hour stays.
        let stats = "SELECT count(*) FROM endpoint_stats";
        assert_eq!(place.count(stats).await, 1, "{name}: the attempts' hour");
        f.store.prune_history(cutoff).await.unwrap();
        assert_eq!(
            place.count(stats).await,
            1,
            "{name}: its hour has not ended by the cutoff"
        );
        f.store.prune_history(NOW + 2 * 3_600_000).await.unwrap();
        assert_eq!(place.count(stats).await, 0, "{name}");
    }
}

/// PostgreSQL over TLS (contract §7.1), as libpq reads the URL: `require`
/// and `verify-full` (against the CA that signed the server's certificate)
/// connect over TLS, `disable` does not, and `verify-full` against a CA that
/// did not sign it is refused with a message that says why. Needs the
/// server's CA (`HERALD_TEST_POSTGRES_TLS_CA`, and another CA in
/// `HERALD_TEST_POSTGRES_TLS_OTHER_CA`), which `.ci/run` makes.
#[tokio::test]
async fn postgres_connections_honour_sslmode_and_sslrootcert() {
    let Ok(base) = std::env::var("HERALD_TEST_POSTGRES_URL") else {
        eprintln!("skipping PostgreSQL TLS: HERALD_TEST_POSTGRES_URL is not set");
        return;
    };
    let (Ok(ca), Ok(other_ca)) = (
        std::env::var("HERALD_TEST_POSTGRES_TLS_CA"),
        std::env::var("HERALD_TEST_POSTGRES_TLS_OTHER_CA"),
    ) else {
        assert!(
            std::env::var("HERALD_TEST_REQUIRE_ALL").as_deref() != Ok("1"),
            "HERALD_TEST_REQUIRE_ALL=1 but HERALD_TEST_POSTGRES_TLS_CA / _OTHER_CA are not set"
        );
        eprintln!("skipping PostgreSQL TLS: HERALD_TEST_POSTGRES_TLS_CA is not set (.ci/run makes one)");
        return;
    };
    let schema = format!("herald_tls_{}", herald_domain::ids::new_suffix(NOW));
    let plain = pg_client(&base).await;
    plain.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let scratch = Scratch {
        _dir: tempfile::tempdir().unwrap(),
        schema: Some((base.clone(), schema.clone())),
    };
    let url = herald_store::postgres::schema_url(&base, &schema);
    let with = |params: &str| format!("{url}&{params}");
    // Whether the store's own connections (named by application_name) use TLS.
    let over_tls = |app: &'static str| {
        let plain = &plain;
        async move {
            let row = plain
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_ssl s
                     JOIN pg_stat_activity a ON a.pid = s.pid WHERE a.application_name = $1",
                    &[&app],
                )
                .await
                .unwrap();
            let (all, tls): (i64, i64) = (row.get(0), row.get(1));
            assert!(all > 0, "{app}: no connection");
            all == tls
        }
    };
    for (params, app, tls) in [
        (
            "sslmode=require&application_name=herald_require".to_owned(),
            "herald_require",
            true,
        ),
        (
            format!("sslmode=verify-full&sslrootcert={ca}&application_name=herald_full"),
            "herald_full",
            true,
        ),
        (
            format!("sslmode=verify-ca&sslrootcert={ca}&application_name=herald_ca"),
            "herald_ca",
            true,
        ),
        (
            "sslmode=disable&application_name=herald_plain".to_owned(),
            "herald_plain",
            false,
        ),
    ] {
        let store = PgStore::open(&with(&params), 2)
            .await
            .unwrap_or_else(|e| panic!("{params}: {e}"));
        store.create_account("a", NOW).await.unwrap();
        assert_eq!(over_tls(app).await, tls, "{params}");
        drop(store);
    }
    let refused = PgStore::open(&with(&format!("sslmode=verify-full&sslrootcert={other_ca}")), 2)
        .await
        .err()
        .expect("a certificate from an unknown CA is refused");
    let message = refused.to_string();
    assert!(message.contains("certificate"), "{message}");
    drop(scratch);
}

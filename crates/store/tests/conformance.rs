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
    _dir: tempfile::TempDir,
}

async fn stores() -> Vec<(&'static str, Fixture)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("h.db"), Durability::Normal).unwrap());
    out.push(("sqlite", fixture(sqlite, dir).await));
    match std::env::var("HERALD_TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => {
            let schema = format!("herald_c_{}", herald_domain::ids::new_suffix(NOW));
            let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
            let pg: Arc<dyn Store> = Arc::new(PgStore::open(&url, 4).await.unwrap());
            out.push(("postgres", fixture(pg, tempfile::tempdir().unwrap()).await));
            // The schema goes when the suite's runtime ends; tests are short.
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(20)).await;
                let _ = client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await;
            });
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

async fn fixture(store: Arc<dyn Store>, dir: tempfile::TempDir) -> Fixture {
    let account = store.create_account("a", NOW).await.unwrap();
    let team = store.create_team(&account.id, "t", NOW).await.unwrap();
    Fixture {
        store,
        team: team.id,
        account: account.id.to_string(),
        _dir: dir,
    }
}

async fn webhook(f: &Fixture) -> EndpointId {
    let id = EndpointId::generate(EndpointKind::Webhook, NOW);
    let endpoint = Endpoint {
        id: id.clone(),
        team_id: f.team.clone(),
        bot_id: None,
        name: "w".into(),
        url: "http://127.0.0.1:9/".into(),
        event_types: vec![EventType::MeetingCompleted],
        status: EndpointStatus::Active,
        secret: Secret::generate(),
        metadata: "{}".into(),
        created_at: NOW,
    };
    f.store.create_endpoint(&endpoint).await.unwrap();
    id
}

async fn publish(f: &Fixture, lease: &Lease) -> Vec<ClaimedDelivery> {
    let event = NewEvent {
        id: EventId::generate(NOW),
        id_given: false,
        team_id: f.team.to_string(),
        account_id: f.account.clone(),
        event_type: EventType::MeetingCompleted,
        created_at: NOW,
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
    }
}

#[tokio::test]
async fn a_leased_delivery_is_not_claimed_until_its_lease_runs_out_or_is_released() {
    for (name, f) in stores().await {
        webhook(&f).await;
        let published = publish(&f, &lease("a", NOW + 1_000)).await;
        assert_eq!(published.len(), 1, "{name}");
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

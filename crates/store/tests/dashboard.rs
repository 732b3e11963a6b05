//! The store's dashboard methods on SQLite: one-time links, sessions, and
//! manual deliveries (resend, test event) with their `manual` mark.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use herald_domain::dashboard::Token;
use herald_domain::event::EventType;
use herald_domain::ids::{EndpointId, EndpointKind, EventId, TeamId};
use herald_domain::signing::Secret;
use herald_domain::webhook::EndpointStatus;
use herald_store::sqlite::{Durability, SqliteStore};
use herald_store::{Endpoint, Lease, ManualOutcome, NewEvent, StoreError, WebhookPatch};
use herald_store::{Endpoints, Publishing, Sessions, Tenancy};

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db"), Durability::Normal).unwrap();
    (dir, store)
}

async fn team(store: &SqliteStore) -> TeamId {
    let account = store.create_account("Acme", 1).await.unwrap();
    store.create_team(&account.id, "Talent", 1).await.unwrap().id
}

async fn webhook(store: &SqliteStore, team: &TeamId) -> EndpointId {
    let endpoint = Endpoint {
        id: EndpointId::generate(EndpointKind::Webhook, 1),
        team_id: team.clone(),
        bot_id: None,
        name: "CRM".into(),
        url: "https://example.com/h".into(),
        event_types: vec![EventType::MeetingCompleted],
        status: EndpointStatus::Active,
        secret: Secret::generate(),
        previous_secret: None,
        deactivated_reason: None,
        failing_since: None,
        metadata: "{}".into(),
        created_at: 1,
    };
    assert!(store.create_endpoint(&endpoint, 100).await.unwrap());
    endpoint.id
}

fn lease() -> Lease {
    Lease {
        node: "test".into(),
        until_ms: 10_000,
    }
}

fn event(team: &TeamId, id: &str) -> NewEvent {
    let body = format!(r#"{{"id":"{id}","eventType":"meeting.completed","createdAt":5,"data":{{}}}}"#);
    NewEvent {
        id: EventId::parse(id).unwrap(),
        id_given: false,
        team_id: team.as_str().to_owned(),
        account_id: String::new(),
        event_type: EventType::MeetingCompleted,
        created_at: 5,
        data: "{}".into(),
        body: Bytes::from(body),
    }
}

#[tokio::test]
async fn a_link_opens_one_session_once_and_only_before_it_expires() {
    let (_dir, store) = open();
    let team = team(&store).await;
    let (link, expired) = (Token::generate(), Token::generate());
    store
        .create_dashboard_link(&team, &link.hash(), 1_000, 100)
        .await
        .unwrap();
    store
        .create_dashboard_link(&team, &expired.hash(), 200, 100)
        .await
        .unwrap();

    let session = Token::generate();
    let opened = store
        .redeem_dashboard_link(&link.hash(), &session.hash(), 5_000, 500)
        .await
        .unwrap();
    assert_eq!(opened, Some(team.clone()));
    let again = store
        .redeem_dashboard_link(&link.hash(), &Token::generate().hash(), 5_000, 501)
        .await
        .unwrap();
    assert_eq!(again, None, "a used link opens nothing");
    let late = store
        .redeem_dashboard_link(&expired.hash(), &Token::generate().hash(), 5_000, 500)
        .await
        .unwrap();
    assert_eq!(late, None, "an expired link opens nothing");

    let found = store.dashboard_session(&session.hash(), 600).await.unwrap().unwrap();
    assert_eq!(found.team_id, team);
    assert_eq!(store.dashboard_session(&session.hash(), 5_000).await.unwrap(), None);
    store.delete_dashboard_session(&session.hash()).await.unwrap();
    assert_eq!(store.dashboard_session(&session.hash(), 600).await.unwrap(), None);

    let missing = TeamId::parse("team_nope").unwrap();
    let refused = store
        .create_dashboard_link(&missing, &Token::generate().hash(), 1_000, 100)
        .await;
    assert!(matches!(refused, Err(StoreError::NotFound)));
}

#[tokio::test]
async fn resends_and_test_events_are_manual_deliveries_of_the_stored_body() {
    let (_dir, store) = open();
    let team = team(&store).await;
    let other = team_of_another_account(&store).await;
    let hook = webhook(&store, &team).await;

    let test = event(&team, "evt_test_1");
    let sent = store.publish_test_event(test.clone(), &hook, &lease()).await.unwrap();
    let ManualOutcome::Created(delivery) = sent else {
        panic!("expected a delivery, got {sent:?}");
    };
    assert_eq!(delivery.body, test.body);
    assert_eq!(delivery.endpoint_id, hook);

    let resent = store.resend(&team, &hook, &test.id, &lease(), 50).await.unwrap();
    let ManualOutcome::Created(again) = resent else {
        panic!("expected a delivery, got {resent:?}");
    };
    assert_eq!(again.body, test.body);
    assert_eq!(again.event_id, test.id);
    assert_ne!(again.id, delivery.id, "a resend is a new delivery");

    let unknown = EventId::parse("evt_nope").unwrap();
    assert!(matches!(
        store.resend(&team, &hook, &unknown, &lease(), 50).await.unwrap(),
        ManualOutcome::UnknownEvent
    ));
    assert!(matches!(
        store.resend(&other, &hook, &test.id, &lease(), 50).await.unwrap(),
        ManualOutcome::UnknownWebhook
    ));
    let patch = WebhookPatch {
        status: Some(EndpointStatus::Deactivated),
        ..WebhookPatch::default()
    };
    store.update_webhook(&team, &hook, &patch).await.unwrap();
    assert!(matches!(
        store.resend(&team, &hook, &test.id, &lease(), 50).await.unwrap(),
        ManualOutcome::Deactivated
    ));
}

async fn team_of_another_account(store: &SqliteStore) -> TeamId {
    let account = store.create_account("Other", 1).await.unwrap();
    store.create_team(&account.id, "Other", 1).await.unwrap().id
}

/// Regression: endpoints created in the same millisecond came back sorted by
/// their random id, not in the order the Create Bot request listed them.
#[tokio::test]
async fn a_bots_endpoints_come_back_in_the_order_given() {
    let (_dir, store) = open();
    let team = team(&store).await;
    let bot_id = herald_domain::ids::BotId::generate(7);
    let endpoints: Vec<Endpoint> = (0..8)
        .map(|i| Endpoint {
            id: EndpointId::generate(EndpointKind::Realtime, 7),
            team_id: team.clone(),
            bot_id: Some(bot_id.clone()),
            name: String::new(),
            url: format!("https://example.com/{i}"),
            event_types: vec![EventType::ParticipantJoin],
            status: EndpointStatus::Active,
            secret: Secret::generate(),
            previous_secret: None,
            deactivated_reason: None,
            failing_since: None,
            metadata: "{}".into(),
            created_at: 7,
        })
        .collect();
    let bot = herald_store::Bot {
        id: bot_id.clone(),
        team_id: team.clone(),
        meeting_url: "https://meet.example.com/x".into(),
        metadata: "{}".into(),
        recording_id: "rec_1".into(),
        participant_events_id: "pe_1".into(),
        transcript_id: "tr_1".into(),
        created_at: 7,
        endpoints: endpoints.clone(),
    };
    store.create_bot(&bot).await.unwrap();
    let read = store.get_bot(&team, &bot_id).await.unwrap();
    let urls: Vec<&str> = read.endpoints.iter().map(|e| e.url.as_str()).collect();
    let given: Vec<&str> = endpoints.iter().map(|e| e.url.as_str()).collect();
    assert_eq!(urls, given);
}

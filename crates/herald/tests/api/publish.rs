//! Publishing `meeting.completed`: the 202, the exact delivered bytes and
//! headers, idempotency, routing, and refusals that change nothing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(5);

on_every_store! {
async fn a_published_event_reaches_every_active_subscribed_webhook_exactly_as_specified() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let first = app.create_webhook(&team, &receiver.url("/one?token=abc&x=%2F1")).await;
    let second = app.create_webhook(&team, &receiver.url("/two")).await;
    let off = app.create_webhook(&team, &receiver.url("/off")).await;
    let off_id = off["id"].as_str().unwrap();
    let (status, _) = app
        .patch(
            &format!("/api/v1/webhooks/{off_id}"),
            &team.key,
            json!({"status": "deactivated"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let mut event = meeting_event(&team, "mtg_01H2J3K4L");
    event["data"]["futureField"] = json!({"nested": [1, 2, 3]});
    let (status, accepted) = app.publish(event.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["id"].as_str().unwrap();
    assert!(id.starts_with("evt_"));
    assert_eq!(accepted["eventType"], "meeting.completed");
    let created_at = accepted["createdAt"].as_i64().unwrap();

    let expected_body = format!(
        r#"{{"id":"{id}","eventType":"meeting.completed","createdAt":{created_at},"data":{}}}"#,
        serde_json::to_string(&event["data"]).unwrap()
    );
    let mut paths = Vec::new();
    for _ in 0..2 {
        let got = receiver.next(WAIT).await.expect("a delivery");
        assert_eq!(std::str::from_utf8(&got.body).unwrap(), expected_body);
        assert_eq!(got.header("content-type"), "application/json");
        assert!(
            got.header("user-agent").starts_with("Herald/"),
            "{}",
            got.header("user-agent")
        );
        assert_eq!(got.header("webhook-id"), id);
        let now_s = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let ts: i64 = got.header("webhook-timestamp").parse().unwrap();
        assert!((now_s - ts).abs() <= 5, "timestamp {ts} vs now {now_s}");
        let secret = if got.path_and_query.starts_with("/one") {
            &first["secret"]
        } else {
            &second["secret"]
        };
        assert!(
            signature_is_valid(secret.as_str().unwrap(), &got),
            "signature must verify"
        );
        paths.push(got.path_and_query);
    }
    paths.sort();
    assert_eq!(paths, vec!["/one?token=abc&x=%2F1".to_owned(), "/two".to_owned()]);
    receiver.assert_quiet(Duration::from_millis(300)).await;
}
}

on_every_store! {
async fn a_publisher_id_is_an_idempotency_key() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    app.create_webhook(&team, &receiver.url("/hook")).await;
    let mut event = meeting_event(&team, "m1");
    event["id"] = json!("evt_from_publisher_1");

    let (status, first) = app.publish(event.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["id"], "evt_from_publisher_1");
    let got = receiver.next(WAIT).await.expect("delivery");
    assert_eq!(got.header("webhook-id"), "evt_from_publisher_1");

    let (status, again) = app.publish(event.clone()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, first, "the stored event comes back");

    event["data"]["meeting"]["name"] = json!("Another name");
    let (status, conflict) = app.publish(event).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(conflict["error"]["code"], "conflict");
    receiver.assert_quiet(Duration::from_millis(500)).await;
}
}

on_every_store! {
async fn bad_publishes_are_refused_and_deliver_nothing() {
    let app = spawn_app_with(|c| c.max_body_bytes = 8192).await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let other = app.create_team().await;
    app.create_webhook(&team, &receiver.url("/hook")).await;

    let mut unknown_team = meeting_event(&team, "m");
    unknown_team["data"]["organization"]["teamId"] = json!("team_doesnotexist");
    let mut wrong_account = meeting_event(&team, "m");
    wrong_account["data"]["organization"]["accountId"] = json!(other.account_id);
    let mut no_meeting_id = meeting_event(&team, "m");
    no_meeting_id["data"]["meeting"].as_object_mut().unwrap().remove("id");
    let mut mistyped = meeting_event(&team, "m");
    mistyped["data"]["meeting"]["isPrivate"] = json!("yes");
    let mut unknown_type = meeting_event(&team, "m");
    unknown_type["eventType"] = json!("meeting.started");
    let mut realtime_type = meeting_event(&team, "m");
    realtime_type["eventType"] = json!("transcript.data");
    let mut no_data = meeting_event(&team, "m");
    no_data.as_object_mut().unwrap().remove("data");
    let mut bad_id = meeting_event(&team, "m");
    bad_id["id"] = json!("has spaces");
    let mut too_big = meeting_event(&team, "m");
    too_big["data"]["meeting"]["name"] = json!("x".repeat(10_000));

    let cases = [
        (
            unknown_team,
            StatusCode::UNPROCESSABLE_ENTITY,
            "data.organization.teamId",
        ),
        (
            wrong_account,
            StatusCode::UNPROCESSABLE_ENTITY,
            "data.organization.accountId",
        ),
        (no_meeting_id, StatusCode::BAD_REQUEST, "data.meeting"),
        (mistyped, StatusCode::BAD_REQUEST, "data.meeting.isPrivate"),
        (unknown_type, StatusCode::BAD_REQUEST, "eventType"),
        (realtime_type, StatusCode::BAD_REQUEST, "eventType"),
        (no_data, StatusCode::BAD_REQUEST, "data"),
        (bad_id, StatusCode::BAD_REQUEST, "id"),
        (too_big, StatusCode::PAYLOAD_TOO_LARGE, "bytes"),
    ];
    for (body, expected, field) in cases {
        let (status, answer) = app.publish(body).await;
        assert_eq!(status, expected, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "`{message}` should name `{field}`");
    }
    let (status, answer) = app
        .raw(
            Method::POST,
            "/api/v1/events",
            Some(&format!("Bearer {ADMIN_KEY}")),
            "{\"eventType\":",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["code"], "malformed_json");
    receiver.assert_quiet(Duration::from_millis(500)).await;
    let (_, metrics) = app.raw(Method::GET, "/metrics", None, "").await;
    assert!(metrics.as_str().unwrap().contains("herald_events_published_total 0"));
}
}

on_every_store! {
async fn events_go_only_to_the_team_named_in_the_event() {
    let app = spawn_app().await;
    let receiver_a = TestReceiver::start().await;
    let receiver_b = TestReceiver::start().await;
    let alice = app.create_team().await;
    let bob = app.create_team().await;
    app.create_webhook(&alice, &receiver_a.url("/a")).await;
    app.create_webhook(&bob, &receiver_b.url("/b")).await;
    let (status, accepted) = app.publish(meeting_event(&bob, "m-bob")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let got = receiver_b.next(WAIT).await.expect("bob's delivery");
    assert_eq!(got.header("webhook-id"), accepted["id"].as_str().unwrap());
    receiver_a.assert_quiet(Duration::from_millis(300)).await;
}
}

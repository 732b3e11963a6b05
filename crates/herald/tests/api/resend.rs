//! `POST /api/v1/webhooks/{id}/events/{eventId}/resend`: a new delivery of a
//! stored event (same id, identical body) with its own attempts, marked
//! manual in the log; and every way it is refused.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(5);

fn resend_path(webhook: &str, event: &str) -> String {
    format!("/api/v1/webhooks/{webhook}/events/{event}/resend")
}

on_every_store! {
async fn a_resend_is_a_new_manual_delivery_of_the_same_id_and_bytes() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/one")).await;
    let id = webhook["id"].as_str().unwrap();
    let (_, event) = app.publish(meeting_event(&team, "m1")).await;
    let event_id = event["id"].as_str().unwrap();
    let first = receiver.next(WAIT).await.expect("first delivery");
    app.wait_for_attempts(&team, id, 1, WAIT).await;

    let (status, body) = app.post(&resend_path(id, event_id), &team.key, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["eventId"], event_id);
    let again = receiver.next(WAIT).await.expect("resent delivery");
    assert_eq!(again.header("webhook-id"), event_id);
    assert_eq!(again.body, first.body, "identical bytes");
    assert!(signature_is_valid(webhook["secret"].as_str().unwrap(), &again));

    let attempts = app.wait_for_attempts(&team, id, 2, WAIT).await;
    assert_eq!(attempts[0]["manual"], true);
    assert_eq!(attempts[0]["attempt"], 1, "a new series of attempts");
    assert_eq!(attempts[1]["manual"], false);
    let (_, detail) = app
        .get(
            &format!("/api/v1/attempts/{}", attempts[0]["id"].as_str().unwrap()),
            &team.key,
        )
        .await;
    assert_eq!(detail["manual"], true);
}
}

on_every_store! {
async fn any_event_of_the_team_may_be_resent_to_any_of_its_webhooks() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let (_, event) = app.publish(meeting_event(&team, "before-the-webhook")).await;
    let webhook = app.create_webhook(&team, &receiver.url("/late")).await;
    let id = webhook["id"].as_str().unwrap();
    let (status, _) = app
        .post(&resend_path(id, event["id"].as_str().unwrap()), &team.key, json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let got = receiver.next(WAIT).await.expect("delivery");
    assert_eq!(got.header("webhook-id"), event["id"].as_str().unwrap());
}
}

on_every_store! {
async fn resends_are_refused_for_foreign_missing_deactivated_or_bot_events() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let other = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/mine")).await;
    let id = webhook["id"].as_str().unwrap();
    let their_webhook = app.create_webhook(&other, &receiver.url("/theirs")).await;
    let (_, mine) = app.publish(meeting_event(&team, "m1")).await;
    let (_, theirs) = app.publish(meeting_event(&other, "m2")).await;
    let (mine, theirs) = (mine["id"].as_str().unwrap(), theirs["id"].as_str().unwrap());
    receiver.next(WAIT).await.expect("mine");
    receiver.next(WAIT).await.expect("theirs");

    let (status, _) = app.post(&resend_path(id, theirs), &team.key, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another team's event");
    let (status, _) = app
        .post(
            &resend_path(their_webhook["id"].as_str().unwrap(), mine),
            &team.key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another team's webhook");
    let (status, _) = app.post(&resend_path(id, "evt_missing"), &team.key, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.post(&resend_path(id, mine), ADMIN_KEY, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let bot = app
        .create_bot(&team, &[(receiver.url("/rt"), &["participant_events.join"][..])])
        .await;
    let (_, published) = app
        .bot_events(
            bot["id"].as_str().unwrap(),
            &[("participant_events.join", json!({"participant": {"id": 1}}))],
        )
        .await;
    let bot_event = published["data"][0]["id"].as_str().unwrap();
    let (status, body) = app.post(&resend_path(id, bot_event), &team.key, json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    app.patch(
        &format!("/api/v1/webhooks/{id}"),
        &team.key,
        json!({"status": "deactivated"}),
    )
    .await;
    let (status, body) = app.post(&resend_path(id, mine), &team.key, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    receiver.next(WAIT).await.expect("the bot event");
    receiver.assert_quiet(Duration::from_millis(300)).await;
}
}

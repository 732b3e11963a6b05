//! Retention (contract §7.1) through the running server: events older than
//! `HERALD_RETENTION` leave the attempt log and can no longer be resent,
//! while an event with a delivery still pending stays, on both stores.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

on_every_store! {
async fn events_past_the_retention_leave_the_log_and_pending_ones_stay() {
    let app = spawn_app_with(|c| {
        c.retention = Duration::from_secs(2);
        c.attempt_timeout = Duration::from_secs(8);
    })
    .await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let done = app.create_webhook(&team, &receiver.url("/done")).await;
    let done_id = done["id"].as_str().unwrap().to_owned();
    let (status, old) = app.publish(meeting_event(&team, "old")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let old_id = old["id"].as_str().unwrap().to_owned();
    app.wait_for_attempts(&team, &done_id, 1, Duration::from_secs(10)).await;

    // A second webhook whose receiver holds its delivery past the retention.
    receiver.answer_path("/hang", Answer::Hang);
    app.create_webhook(&team, &receiver.url("/hang")).await;
    let (_, held) = app.publish(meeting_event(&team, "held")).await;
    let held_id = held["id"].as_str().unwrap().to_owned();

    // Within the retention and a round, the old event is gone: from the
    // log, and from resend (404, unknown event).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = app.attempts(&team, &done_id, &format!("eventId={old_id}")).await;
        if log.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the old event was never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, answer) = app
        .post(&format!("/api/v1/webhooks/{done_id}/events/{old_id}/resend"), &team.key, json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");

    // The held event is older than the retention by now, but its delivery
    // to the hanging receiver is pending: it is kept, and can be resent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, answer) = app
        .post(&format!("/api/v1/webhooks/{done_id}/events/{held_id}/resend"), &team.key, json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
}
}

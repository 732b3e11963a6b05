//! The standard retry policy: which outcomes retry, the schedule (fast and,
//! once, the real 2/4/8/16 s), the log of each attempt, and deactivation.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use herald_domain::retry::RetryPolicy;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(5);

on_every_store! {
async fn a_failing_endpoint_gets_five_attempts_with_the_same_id_and_body_then_the_delivery_fails() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(503));
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/down")).await;
    let (_, accepted) = app.publish(meeting_event(&team, "m")).await;
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let got = receiver.next(WAIT).await.expect("attempt");
        assert_eq!(got.header("webhook-id"), accepted["id"].as_str().unwrap());
        bodies.push(got.body.clone());
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "identical bytes on every attempt"
    );
    receiver.assert_quiet(Duration::from_millis(1_000)).await;

    let attempts = app
        .wait_for_attempts(&team, webhook["id"].as_str().unwrap(), 5, WAIT)
        .await;
    let statuses: Vec<&str> = attempts.iter().rev().map(|a| a["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["retrying", "retrying", "retrying", "retrying", "failed"]);
    let numbers: Vec<i64> = attempts.iter().rev().map(|a| a["attempt"].as_i64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    assert!(attempts.iter().all(|a| a["response"]["status"] == 503));
}
}

on_every_store! {
async fn a_recovering_endpoint_succeeds_on_a_later_attempt() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    receiver.answer_next(&[Answer::Status(500), Answer::Status(429)]);
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/flaky")).await;
    app.publish(meeting_event(&team, "m")).await;
    for _ in 0..3 {
        receiver.next(WAIT).await.expect("attempt");
    }
    receiver.assert_quiet(Duration::from_millis(800)).await;
    let attempts = app
        .wait_for_attempts(&team, webhook["id"].as_str().unwrap(), 3, WAIT)
        .await;
    let statuses: Vec<&str> = attempts.iter().rev().map(|a| a["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["retrying", "retrying", "success"]);
    assert_eq!(attempts[0]["response"]["status"], 204);
}
}

on_every_store! {
async fn timeouts_and_refused_connections_are_retried_and_logged_with_the_error() {
    let app = spawn_app_with(|c| c.attempt_timeout = Duration::from_millis(300)).await;
    let hanging = TestReceiver::start().await;
    hanging.answer_always(Answer::Hang);
    let team = app.create_team().await;
    let slow = app.create_webhook(&team, &hanging.url("/hang")).await;
    // A port nobody listens on: bind one, note it, close it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let refused = app.create_webhook(&team, &format!("http://{closed}/nobody")).await;
    app.publish(meeting_event(&team, "m")).await;

    let slow_attempts = app
        .wait_for_attempts(&team, slow["id"].as_str().unwrap(), 5, Duration::from_secs(15))
        .await;
    assert_eq!(slow_attempts[0]["status"], "failed");
    for a in &slow_attempts {
        assert!(a["response"].is_null());
        assert!(a["error"].as_str().unwrap().contains("timed out"), "{a}");
        assert!(a["durationMs"].as_i64().unwrap() >= 290, "{a}");
    }
    let refused_attempts = app
        .wait_for_attempts(&team, refused["id"].as_str().unwrap(), 5, WAIT)
        .await;
    assert_eq!(refused_attempts[0]["status"], "failed");
    for a in &refused_attempts {
        assert!(a["error"].as_str().unwrap().starts_with("connection failed"), "{a}");
    }
}
}

on_every_store! {
async fn the_real_schedule_is_0_2_6_14_30_seconds() {
    let app = spawn_app_with(|c| c.standard_retry = RetryPolicy::standard()).await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(500));
    let team = app.create_team().await;
    app.create_webhook(&team, &receiver.url("/real")).await;
    app.publish(meeting_event(&team, "m")).await;
    let first = receiver.next(WAIT).await.expect("first attempt").at;
    let mut offsets = Vec::new();
    for _ in 0..4 {
        let got = receiver.next(Duration::from_secs(20)).await.expect("retry");
        offsets.push(got.at.duration_since(first));
    }
    println!("retry offsets: {offsets:?}");
    for (offset, expected) in offsets.iter().zip([2_000u64, 6_000, 14_000, 30_000]) {
        let diff = offset.as_millis() as i64 - expected as i64;
        assert!(
            (0..200).contains(&diff),
            "offset {offset:?} should be {expected} ms (+<200 ms)"
        );
    }
    receiver.assert_quiet(Duration::from_secs(3)).await;
}
}

on_every_store! {
async fn deactivating_stops_delivery_at_once_and_reactivating_resumes_pending_retries() {
    let app = spawn_app_with(|c| {
        c.standard_retry = RetryPolicy::Standard {
            delays: [600, 600, 600, 600].map(Duration::from_millis).to_vec(),
        }
    })
    .await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(500));
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/toggle")).await;
    let id = webhook["id"].as_str().unwrap();
    let (_, first_event) = app.publish(meeting_event(&team, "before")).await;
    receiver.next(WAIT).await.expect("first attempt");

    let (status, _) = app
        .patch(
            &format!("/api/v1/webhooks/{id}"),
            &team.key,
            json!({"status": "deactivated"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.publish(meeting_event(&team, "while-off")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The retry was due 600 ms after the first attempt; nothing may come.
    receiver.assert_quiet(Duration::from_millis(1_500)).await;
    assert_eq!(app.attempts(&team, id, "").await.len(), 1, "the log stays");

    receiver.answer_always(Answer::Status(204));
    let reactivated = Instant::now();
    let (status, _) = app
        .patch(
            &format!("/api/v1/webhooks/{id}"),
            &team.key,
            json!({"status": "active"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let resumed = receiver.next(WAIT).await.expect("the pending retry resumes");
    assert!(reactivated.elapsed() < Duration::from_secs(2));
    assert_eq!(resumed.header("webhook-id"), first_event["id"].as_str().unwrap());
    receiver.assert_quiet(Duration::from_millis(1_000)).await;
}
}

/// Publishes `n` events one after another; returns the ids accepted and the
/// refusals (status, `Retry-After`, error code).
async fn publish_many(app: &TestApp, team: &TestTeam, n: usize) -> (HashSet<String>, Vec<(u16, String, String)>) {
    let mut accepted = HashSet::new();
    let mut refused = Vec::new();
    for i in 0..n {
        let response = app
            .client
            .post(app.url("/api/v1/events"))
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .json(&meeting_event(team, &format!("m{i}")))
            .send()
            .await
            .expect("publish");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: Value = response.json().await.expect("json answer");
        if status == 202 {
            accepted.insert(body["id"].as_str().expect("id").to_owned());
        } else {
            let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
            refused.push((status, retry_after, code));
        }
    }
    (accepted, refused)
}

on_every_store! {
async fn while_most_attempts_fail_publishes_past_the_retry_capacity_answer_503_and_store_nothing() {
    // A capacity of 20 attempts/s: each 100 ms slot holds two retries.
    let app = spawn_app_with(|c| {
        c.standard_retry = RetryPolicy::Standard {
            delays: vec![Duration::from_secs(1); 2],
        };
        c.retry_capacity_per_s = Some(20.0);
    })
    .await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(503));
    let team = app.create_team().await;
    app.create_webhook(&team, &receiver.url("/down")).await;

    // The first few hundred attempts make the failure share; from then on
    // each delivery would add a retry 1 s ahead, and far more than two
    // publishes come per 100 ms.
    let (accepted, refused) = publish_many(&app, &team, 500).await;
    assert!(!refused.is_empty(), "no publish was held back");
    assert!(accepted.len() >= 150, "only {} accepted", accepted.len());
    for (status, retry_after, code) in &refused {
        assert_eq!((*status, retry_after.as_str(), code.as_str()), (503, "1", "overloaded"));
    }

    // Every accepted event is attempted and nothing refused ever is.
    let mut seen = HashSet::new();
    while let Some(got) = receiver.next(Duration::from_millis(2_500)).await {
        seen.insert(got.header("webhook-id").to_owned());
    }
    assert_eq!(seen, accepted);
}
}

#[tokio::test]
async fn healthy_traffic_is_not_held_back_by_the_retry_capacity() {
    let app = spawn_app_with(|c| c.retry_capacity_per_s = Some(20.0)).await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    app.create_webhook(&team, &receiver.url("/up")).await;
    let (accepted, refused) = publish_many(&app, &team, 500).await;
    assert!(refused.is_empty(), "{} refused: {:?}", refused.len(), refused.first());
    assert_eq!(accepted.len(), 500);
}

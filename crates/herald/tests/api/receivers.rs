//! When receivers fail (contract §4.2-4.3): 410 Gone deactivates with a
//! reason, `Retry-After` moves the next attempt, sustained failure
//! deactivates, secrets rotate with both signatures during the grace, and
//! each webhook's hourly stats count the attempts made.

use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(5);

async fn webhook(app: &TestApp, team: &TestTeam, id: &str) -> Value {
    let (status, webhook) = app.get(&format!("/api/v1/webhooks/{id}"), &team.key).await;
    assert_eq!(status, StatusCode::OK, "{webhook}");
    webhook
}

/// Waits until the webhook's status is `status`.
async fn wait_for_status(app: &TestApp, team: &TestTeam, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = webhook(app, team, id).await;
        if got["status"] == status {
            return got;
        }
        assert!(Instant::now() < deadline, "webhook still {}: {got}", got["status"]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

on_every_store! {
async fn a_410_fails_the_delivery_at_once_and_deactivates_the_webhook_with_a_reason() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(410));
    let team = app.create_team().await;
    let created = app.create_webhook(&team, &receiver.url("/gone")).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["deactivatedReason"], Value::Null);

    app.publish(meeting_event(&team, "m1")).await;
    receiver.next(WAIT).await.expect("the one attempt");
    let deactivated = wait_for_status(&app, &team, id, "deactivated").await;
    let reason = deactivated["deactivatedReason"].as_str().expect("a reason");
    assert!(reason.contains("410 Gone"), "{reason}");
    let attempts = app.wait_for_attempts(&team, id, 1, WAIT).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status"], "failed");
    assert_eq!(attempts[0]["response"]["status"], 410);

    // Nothing more goes to it, neither retries nor new events.
    app.publish(meeting_event(&team, "m2")).await;
    receiver.assert_quiet(Duration::from_millis(800)).await;

    // A person activating it clears the reason.
    let (status, active) = app
        .patch(&format!("/api/v1/webhooks/{id}"), &team.key, json!({"status": "active"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{active}");
    assert_eq!(active["deactivatedReason"], Value::Null);
    assert_eq!(webhook(&app, &team, id).await["deactivatedReason"], Value::Null);
}
}

on_every_store! {
async fn retry_after_in_seconds_or_as_an_http_date_moves_the_next_attempt() {
    // The fast schedule retries after 100 ms; the receiver asks for more.
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let created = app.create_webhook(&team, &receiver.url("/busy")).await;
    let id = created["id"].as_str().unwrap();

    receiver.answer_next(&[Answer::RetryAfter(503, "1".into())]);
    app.publish(meeting_event(&team, "seconds")).await;
    let first = receiver.next(WAIT).await.expect("first attempt");
    let second = receiver.next(WAIT).await.expect("second attempt");
    let waited = second.at - first.at;
    assert!(waited >= Duration::from_millis(1_000), "retried after {waited:?}");
    assert!(waited < Duration::from_millis(2_500), "retried after {waited:?}");

    // An HTTP date 2 s ahead (whole seconds: at least 1 s from now).
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    receiver.answer_next(&[Answer::RetryAfter(429, date)]);
    app.publish(meeting_event(&team, "date")).await;
    let first = receiver.next(WAIT).await.expect("first attempt");
    let second = receiver.next(WAIT).await.expect("second attempt");
    let waited = second.at - first.at;
    assert!(waited >= Duration::from_millis(900), "retried after {waited:?}");
    assert!(waited < Duration::from_millis(3_500), "retried after {waited:?}");

    // On a 500 the header is not obeyed: the schedule's 100 ms.
    receiver.answer_next(&[Answer::RetryAfter(500, "30".into())]);
    app.publish(meeting_event(&team, "ignored")).await;
    let first = receiver.next(WAIT).await.expect("first attempt");
    let second = receiver.next(WAIT).await.expect("second attempt");
    assert!(second.at - first.at < Duration::from_millis(1_500));

    let attempts = app.wait_for_attempts(&team, id, 6, WAIT).await;
    let retrying = attempts.iter().filter(|a| a["status"] == "retrying").count();
    assert_eq!(retrying, 3, "each asked-for wait still counts as an attempt");
}
}

on_every_store! {
async fn a_webhook_that_fails_every_delivery_for_the_set_time_is_deactivated() {
    let app = spawn_app_with(|c| c.auto_deactivate_after = Duration::from_millis(600)).await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(500));
    let team = app.create_team().await;
    let created = app.create_webhook(&team, &receiver.url("/down")).await;
    let id = created["id"].as_str().unwrap();

    // The first failed delivery starts the streak (five attempts, ~1 s).
    app.publish(meeting_event(&team, "m1")).await;
    app.wait_for_attempts(&team, id, 5, WAIT).await;
    assert_eq!(webhook(&app, &team, id).await["status"], "active");
    // A success ends it: the next failure starts a new one.
    receiver.answer_next(&[Answer::Status(204)]);
    app.publish(meeting_event(&team, "ok")).await;
    app.wait_for_attempts(&team, id, 6, WAIT).await;
    app.publish(meeting_event(&team, "m2")).await;
    app.wait_for_attempts(&team, id, 11, WAIT).await;
    assert_eq!(
        webhook(&app, &team, id).await["status"],
        "active",
        "a new streak is younger than the limit"
    );
    // The next failed delivery ends more than 600 ms after the streak began.
    app.publish(meeting_event(&team, "m3")).await;
    let deactivated = wait_for_status(&app, &team, id, "deactivated").await;
    let reason = deactivated["deactivatedReason"].as_str().expect("a reason");
    assert!(reason.contains("Every delivery failed for 600 ms"), "{reason}");
}
}

on_every_store! {
async fn a_rotated_secret_signs_first_and_the_old_one_second_until_the_grace_ends() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let created = app.create_webhook(&team, &receiver.url("/signed")).await;
    let id = created["id"].as_str().unwrap();
    let old = created["secret"].as_str().unwrap().to_owned();
    let rotate = format!("/api/v1/webhooks/{id}/secret/rotate");

    for bad in [json!({"graceSeconds": -1}), json!({"graceSeconds": 604_801}), json!({"grace": 5})] {
        let (status, body) = app.post(&rotate, &team.key, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(webhook(&app, &team, id).await["secret"], old.as_str(), "a refused rotation changes nothing");

    let before = herald_engine::now_ms();
    let (status, rotated) = app.post(&rotate, &team.key, json!({"graceSeconds": 2})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let expires = rotated["previousSecretExpiresAt"].as_i64().unwrap();
    assert!((before + 2_000..before + 3_000).contains(&expires), "{expires}");
    assert_eq!(webhook(&app, &team, id).await["secret"], new.as_str());

    app.publish(meeting_event(&team, "during")).await;
    let during = receiver.next(WAIT).await.expect("delivery");
    let signatures: Vec<&str> = during.header("webhook-signature").split(' ').collect();
    assert_eq!(
        signatures,
        [expected_signature(&new, &during), expected_signature(&old, &during)],
        "the new secret's signature first, then the old one's"
    );

    // After the grace, only the new secret signs.
    let wait = expires - herald_engine::now_ms();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64 + 50)).await;
    app.publish(meeting_event(&team, "after")).await;
    let after = receiver.next(WAIT).await.expect("delivery");
    assert_eq!(after.header("webhook-signature"), expected_signature(&new, &after));
    assert!(!signature_is_valid(&old, &after));

    // A second rotation within a grace would drop the first secret early:
    // refused, unless it asks for no grace at all.
    let (status, _) = app.post(&rotate, &team.key, json!({"graceSeconds": 3600})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.post(&rotate, &team.key, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("graceSeconds 0"), "{body}");

    // No grace: every old secret is dropped at once.
    let (status, again) = app.post(&rotate, &team.key, json!({"graceSeconds": 0})).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    let newest = again["secret"].as_str().unwrap();
    app.publish(meeting_event(&team, "no-grace")).await;
    let got = receiver.next(WAIT).await.expect("delivery");
    assert_eq!(got.header("webhook-signature"), expected_signature(newest, &got));

    // Another team's webhook is not found.
    let other = app.create_team().await;
    let (status, _) = app.post(&rotate, &other.key, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
}

on_every_store! {
async fn stats_count_every_attempt_by_status_in_hourly_buckets() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let created = app.create_webhook(&team, &receiver.url("/mixed")).await;
    let id = created["id"].as_str().unwrap();
    let stats_path = format!("/api/v1/webhooks/{id}/stats");

    let (status, empty) = app.get(&stats_path, &team.key).await;
    assert_eq!(status, StatusCode::OK, "{empty}");
    let buckets = empty["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 24, "one bucket per hour, 24 by default");
    assert!(buckets.windows(2).all(|w| w[0]["start"].as_i64() < w[1]["start"].as_i64()));
    assert_eq!(buckets[23]["p50Ms"], Value::Null);

    // The first webhook: one 503 among four events (4 successes, 1
    // retrying); the second, created for the last event only, fails it
    // five times (4 retrying, 1 failed).
    receiver.answer_path("/failing", Answer::Status(500));
    receiver.answer_next(&[Answer::Status(503)]);
    for name in ["a", "b", "c"] {
        app.publish(meeting_event(&team, name)).await;
    }
    app.wait_for_attempts(&team, id, 4, WAIT).await;
    let failing = app.create_webhook(&team, &receiver.url("/failing")).await;
    let failing_id = failing["id"].as_str().unwrap();
    app.publish(meeting_event(&team, "d")).await;
    app.wait_for_attempts(&team, id, 5, WAIT).await;
    app.wait_for_attempts(&team, failing_id, 5, WAIT).await;

    let counts = |stats: &Value| -> (i64, i64, i64) {
        let buckets = stats["buckets"].as_array().unwrap();
        let sum = |k: &str| buckets.iter().map(|b| b[k].as_i64().unwrap()).sum::<i64>();
        (sum("success"), sum("retrying"), sum("failed"))
    };
    let deadline = Instant::now() + WAIT;
    let stats = loop {
        let (_, stats) = app.get(&format!("{stats_path}?hours=2"), &team.key).await;
        if counts(&stats) == (4, 1, 0) || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log = app.attempts(&team, id, "").await;
    let by = |status: &str| log.iter().filter(|a| a["status"] == status).count() as i64;
    assert_eq!(counts(&stats), (by("success"), by("retrying"), by("failed")), "{stats}");
    let buckets = stats["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 2);
    let now = buckets[1].clone();
    assert!(now["p50Ms"].as_i64().is_some() && now["p95Ms"].as_i64() >= now["p50Ms"].as_i64(), "{now}");

    let deadline = Instant::now() + WAIT;
    loop {
        let (_, stats) = app.get(&format!("/api/v1/webhooks/{failing_id}/stats?hours=1"), &team.key).await;
        if counts(&stats) == (0, 4, 1) {
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for bad in ["?hours=0", "?hours=169", "?hours=x"] {
        let (status, body) = app.get(&format!("{stats_path}{bad}"), &team.key).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let other = app.create_team().await;
    let (status, _) = app.get(&stats_path, &other.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
}

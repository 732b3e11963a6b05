//! Delivery behaviour: speed on loopback, isolation of slow endpoints, and
//! the attempt log with its filters, paging and detail.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

on_every_store! {
async fn deliveries_arrive_within_milliseconds_of_the_202() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    app.create_webhook(&team, &receiver.url("/fast")).await;
    let mut latencies = Vec::new();
    for i in 0..50 {
        let (status, _) = app.publish(meeting_event(&team, &format!("m{i}"))).await;
        let answered = Instant::now();
        assert_eq!(status, StatusCode::ACCEPTED);
        let got = receiver.next(Duration::from_secs(5)).await.expect("delivery");
        latencies.push(got.at.saturating_duration_since(answered));
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    println!(
        "202 -> receipt on loopback: median {median:?}, max {:?}",
        latencies[latencies.len() - 1]
    );
    assert!(median < Duration::from_millis(50), "median {median:?}");
}
}

on_every_store! {
async fn a_hanging_endpoint_does_not_hold_up_other_endpoints() {
    let app = spawn_app_with(|c| c.attempt_timeout = Duration::from_secs(10)).await;
    let stuck = TestReceiver::start().await;
    stuck.answer_always(Answer::Hang);
    let healthy = TestReceiver::start().await;
    let slow_team = app.create_team().await;
    let team = app.create_team().await;
    app.create_webhook(&slow_team, &stuck.url("/stuck")).await;
    app.create_webhook(&team, &healthy.url("/ok")).await;
    for i in 0..100 {
        let (status, _) = app.publish(meeting_event(&slow_team, &format!("s{i}"))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let started = Instant::now();
    let mut ids = HashSet::new();
    for i in 0..100 {
        let (status, accepted) = app.publish(meeting_event(&team, &format!("h{i}"))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        ids.insert(accepted["id"].as_str().unwrap().to_owned());
    }
    while !ids.is_empty() {
        let got = healthy
            .next(Duration::from_secs(3))
            .await
            .expect("healthy endpoint starved");
        ids.remove(got.header("webhook-id"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}
}

on_every_store! {
async fn the_attempt_log_filters_pages_and_shows_detail() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(500));
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/log")).await;
    let id = webhook["id"].as_str().unwrap();
    let mut events = Vec::new();
    for i in 0..2 {
        let (_, accepted) = app.publish(meeting_event(&team, &format!("m{i}"))).await;
        events.push(accepted["id"].as_str().unwrap().to_owned());
    }
    let all = app.wait_for_attempts(&team, id, 10, Duration::from_secs(10)).await;
    assert_eq!(all.len(), 10);
    let timestamps: Vec<i64> = all.iter().map(|a| a["timestamp"].as_i64().unwrap()).collect();
    assert!(
        timestamps.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {timestamps:?}"
    );
    assert!(
        all.iter().all(|a| a["request"].get("body").is_none()),
        "lists leave bodies out"
    );

    let failed = app.attempts(&team, id, "status=failed").await;
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|a| a["attempt"] == 5));
    assert_eq!(app.attempts(&team, id, "status=retrying").await.len(), 8);
    assert_eq!(app.attempts(&team, id, "status=success").await.len(), 0);
    let for_first = app.attempts(&team, id, &format!("eventId={}", events[0])).await;
    assert_eq!(for_first.len(), 5);
    assert!(for_first.iter().all(|a| a["eventId"] == events[0].as_str()));

    // Page through three at a time.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = app
            .get(
                &format!("/api/v1/webhooks/{id}/attempts?limit=3&cursor={cursor}"),
                &team.key,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let expected: Vec<String> = all.iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(seen, expected);

    for query in ["status=bogus", "limit=0", "limit=1000", "cursor=garbage!"] {
        let (status, answer) = app
            .get(&format!("/api/v1/webhooks/{id}/attempts?{query}"), &team.key)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
    }

    let (status, detail) = app
        .get(
            &format!("/api/v1/attempts/{}", all[0]["id"].as_str().unwrap()),
            &team.key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["webhookId"], id);
    assert_eq!(detail["response"]["status"], 500);
    assert_eq!(detail["response"]["body"], "receiver says hi");
    assert!(detail["response"]["headers"]["content-type"].is_string());
    assert_eq!(detail["request"]["url"], receiver.url("/log"));
    assert_eq!(detail["request"]["headers"]["content-type"], "application/json");
    assert!(
        detail["request"]["headers"]["webhook-signature"]
            .as_str()
            .unwrap()
            .starts_with("v1,")
    );
    let sent: Value = serde_json::from_str(detail["request"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["id"], detail["eventId"]);
    assert!(detail["durationMs"].is_i64());
    assert!(detail["error"].is_null());
    let (status, _) = app.get("/api/v1/attempts/att_nope", &team.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
}

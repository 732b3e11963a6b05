//! Real-time bot endpoints: Create Bot, the fleet's events, the envelope, the
//! exact URL, per-endpoint order across retries and restarts, the 1 s × 60
//! retry policy and endpoint failure, and isolation between endpoints.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use herald_domain::retry::RetryPolicy;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(5);

fn transcript(n: usize) -> Value {
    json!({"words": [{"text": format!("word {n}")}], "participant": {"id": 1, "name": "Ada"}, "n": n})
}

/// The sequence number the test put in an envelope's data.
fn seq_of(r: &Received) -> u64 {
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["data"]["data"]["n"].as_u64().unwrap()
}

on_every_store! {
async fn create_bot_validates_its_endpoints_and_answers_with_ids_secrets_and_status() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let other = app.create_team().await;
    let bot = app
        .create_bot(
            &team,
            &[("http://127.0.0.1:9/rt?token=abc".into(), &["participant_events.join"])],
        )
        .await;
    let id = bot["id"].as_str().unwrap();
    assert!(id.starts_with("bot_"));
    assert_eq!(bot["meeting_url"], "https://meet.google.com/hzj-adhd-inu");
    assert_eq!(bot["metadata"], json!({"customer": "acme"}));
    let endpoint = &bot["recording_config"]["realtime_endpoints"][0];
    assert!(endpoint["id"].as_str().unwrap().starts_with("rte_"));
    assert_eq!(endpoint["type"], "webhook");
    assert_eq!(endpoint["url"], "http://127.0.0.1:9/rt?token=abc");
    assert_eq!(endpoint["events"], json!(["participant_events.join"]));
    assert_eq!(endpoint["status"], "active");
    assert!(endpoint["secret"].as_str().unwrap().starts_with("whsec_"));

    for path in [format!("/api/v1/bot/{id}/"), format!("/api/v1/bot/{id}")] {
        let (status, again) = app.get(&path, &team.key).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again, bot);
        let (status, _) = app.get(&path, &other.key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "another team's bot is missing to them");
    }
    let (status, _) = app
        .post(
            &format!("/api/v1/bot/{id}/events"),
            &team.key,
            json!({"event": "participant_events.join", "data": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the fleet publishes with the admin key");

    let bad = |endpoint: Value| json!({"meeting_url": "https://meet.google.com/x", "recording_config": {"realtime_endpoints": [endpoint]}});
    let cases = [
        (
            bad(json!({"type": "websocket", "url": "http://127.0.0.1:9/", "events": ["transcript.data"]})),
            "realtime_endpoints[0].type",
        ),
        (
            bad(json!({"type": "webhook", "url": "http://127.0.0.1:9/", "events": []})),
            "realtime_endpoints[0].events",
        ),
        (
            bad(json!({"type": "webhook", "url": "http://127.0.0.1:9/", "events": ["transcript.nope"]})),
            "realtime_endpoints[0].events[0]",
        ),
        (
            bad(json!({"type": "webhook", "url": "http://127.0.0.1:9/", "events": ["meeting.completed"]})),
            "events[0]",
        ),
        (
            bad(json!({"type": "webhook", "events": ["transcript.data"]})),
            "realtime_endpoints[0]",
        ),
        (json!({"recording_config": {"realtime_endpoints": []}}), "meeting_url"),
    ];
    for (body, field) in cases {
        let (status, answer) = app.post("/api/v1/bot/", &team.key, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "`{message}` should name `{field}`");
    }
    let (_, list) = app.get("/api/v1/bot/", &team.key).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "refused bots were not stored"
    );

    let strict = spawn_app_with(|c| c.allow_insecure_targets = false).await;
    let team = strict.create_team().await;
    let (status, answer) = strict
        .post(
            "/api/v1/bot/",
            &team.key,
            bad(json!({"type": "webhook", "url": "https://10.1.1.1/rt", "events": ["transcript.data"]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
}
}

on_every_store! {
async fn each_endpoint_gets_only_its_events_in_the_envelope_signed_at_the_exact_url() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let people_url = receiver.url("/people?token=a%20b&x=1");
    let bot = app
        .create_bot(
            &team,
            &[
                (people_url, &["participant_events.join", "participant_events.leave"]),
                (receiver.url("/words"), &["transcript.data"]),
            ],
        )
        .await;
    let bot_id = bot["id"].as_str().unwrap();
    let people = &bot["recording_config"]["realtime_endpoints"][0];
    let words = &bot["recording_config"]["realtime_endpoints"][1];

    let join = json!({"participant": {"id": 7, "name": "Ada", "is_host": true, "platform": "desktop", "extra_data": {}, "email": null},
                      "timestamp": {"absolute": "2025-10-10T10:23:27Z", "relative": 12.5}});
    let (status, answer) = app
        .post(
            &format!("/api/v1/bot/{bot_id}/events"),
            ADMIN_KEY,
            json!({"event": "participant_events.join", "data": join}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let join_id = answer["data"][0]["id"].as_str().unwrap().to_owned();
    let got = receiver.next(WAIT).await.expect("join delivered");
    let join_body = got.body.clone();
    assert_eq!(
        got.path_and_query, "/people?token=a%20b&x=1",
        "the URL exactly as given"
    );
    assert_eq!(got.header("webhook-id"), join_id);
    assert!(signature_is_valid(people["secret"].as_str().unwrap(), &got));
    let envelope: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(envelope["event"], "participant_events.join");
    assert_eq!(envelope["data"]["data"], join);
    assert_eq!(
        envelope["data"]["realtime_endpoint"],
        json!({"id": people["id"], "metadata": {}})
    );
    assert_eq!(
        envelope["data"]["participant_events"],
        json!({"id": bot["participant_events"]["id"], "metadata": {}})
    );
    assert_eq!(
        envelope["data"]["recording"],
        json!({"id": bot["recording"]["id"], "metadata": {}})
    );
    assert_eq!(
        envelope["data"]["bot"],
        json!({"id": bot_id, "metadata": {"customer": "acme"}})
    );

    let (status, _) = app
        .bot_events(
            bot_id,
            &[
                ("participant_events.speech_on", json!({"n": 1})),
                ("transcript.data", transcript(2)),
                ("participant_events.leave", json!({"n": 3})),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut got = HashMap::new();
    for _ in 0..2 {
        let r = receiver.next(WAIT).await.expect("delivery");
        got.insert(r.path_and_query.split('?').next().unwrap().to_owned(), r);
    }
    let words_got = &got["/words"];
    let envelope: Value = serde_json::from_slice(&words_got.body).unwrap();
    assert_eq!(envelope["event"], "transcript.data");
    assert_eq!(
        envelope["data"]["transcript"],
        json!({"id": bot["transcript"]["id"], "metadata": {}})
    );
    assert!(envelope["data"].get("participant_events").is_none());
    assert!(signature_is_valid(words["secret"].as_str().unwrap(), words_got));
    let leave: Value = serde_json::from_slice(&got["/people"].body).unwrap();
    assert_eq!(
        leave["event"], "participant_events.leave",
        "speech_on was not subscribed"
    );
    receiver.assert_quiet(Duration::from_millis(300)).await;

    // A batch with one unknown event stores nothing.
    let (status, answer) = app
        .bot_events(
            bot_id,
            &[
                ("participant_events.join", json!({})),
                ("participant_events.dance", json!({})),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("events[1].event"),
        "{answer}"
    );
    let (status, _) = app
        .bot_events("bot_missing", &[("participant_events.join", json!({}))])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    receiver.assert_quiet(Duration::from_millis(300)).await;

    let people_id = people["id"].as_str().unwrap();
    let (status, log) = app
        .get(
            &format!("/api/v1/bot/{bot_id}/realtime_endpoints/{people_id}/attempts"),
            &team.key,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(log["data"].as_array().unwrap().len(), 2);
    assert_eq!(log["data"][0]["endpointId"], people_id);
    assert_eq!(log["data"][0]["status"], "success");
    let attempt_id = log["data"][1]["id"].as_str().unwrap();
    let (_, detail) = app.get(&format!("/api/v1/attempts/{attempt_id}"), &team.key).await;
    assert_eq!(
        detail["request"]["body"].as_str().unwrap().as_bytes(),
        &join_body[..],
        "the envelope as sent"
    );
}
}

on_every_store! {
async fn order_holds_while_the_head_is_retried() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    receiver.answer_next(&[Answer::Status(500), Answer::Status(503), Answer::Status(500)]);
    let team = app.create_team().await;
    let bot = app
        .create_bot(&team, &[(receiver.url("/ordered"), &["transcript.data"])])
        .await;
    let bot_id = bot["id"].as_str().unwrap();
    let events: Vec<(&str, Value)> = (0..20).map(|n| ("transcript.data", transcript(n))).collect();
    let (status, _) = app.bot_events(bot_id, &events).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut seen = Vec::new();
    let mut times = Vec::new();
    for _ in 0..23 {
        let got = receiver.next(WAIT).await.expect("delivery");
        seen.push(seq_of(&got));
        times.push(got.at);
    }
    let mut expected = vec![0, 0, 0];
    expected.extend(0..20);
    assert_eq!(seen, expected, "nothing overtakes a head that is being retried");
    for gap in times.windows(2).take(3) {
        assert!(
            gap[1].duration_since(gap[0]) >= Duration::from_millis(95),
            "retries wait the interval"
        );
    }
    receiver.assert_quiet(Duration::from_millis(300)).await;
}
}

on_every_store! {
async fn order_holds_across_a_restart() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(500));
    let team = app.create_team().await;
    let bot = app
        .create_bot(&team, &[(receiver.url("/restart"), &["transcript.data"])])
        .await;
    let bot_id = bot["id"].as_str().unwrap().to_owned();
    for n in 0..10 {
        let (status, _) = app.bot_events(&bot_id, &[("transcript.data", transcript(n))]).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    for _ in 0..2 {
        assert_eq!(seq_of(&receiver.next(WAIT).await.expect("attempt")), 0);
    }
    let dir = app.stop().await;
    while receiver.next(Duration::from_millis(200)).await.is_some() {}
    receiver.answer_always(Answer::Status(204));
    let app = spawn_app_in(dir, |_| {}).await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(seq_of(&receiver.next(WAIT).await.expect("delivery after restart")));
    }
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    // Publishing after the restart keeps the order too.
    app.bot_events(
        &bot_id,
        &[("transcript.data", transcript(10)), ("transcript.data", transcript(11))],
    )
    .await;
    assert_eq!(seq_of(&receiver.next(WAIT).await.expect("next")), 10);
    assert_eq!(seq_of(&receiver.next(WAIT).await.expect("next")), 11);
}
}

on_every_store! {
async fn many_bots_stream_at_once_each_in_order_and_a_hanging_one_holds_up_nobody() {
    let app = spawn_app_with(|c| c.attempt_timeout = Duration::from_secs(10)).await;
    let receiver = TestReceiver::start().await;
    receiver.answer_path("/bot/0/", Answer::Hang);
    let team = app.create_team().await;
    let mut bots = Vec::new();
    for b in 0..50 {
        let bot = app
            .create_bot(&team, &[(receiver.url(&format!("/bot/{b}/")), &["transcript.data"])])
            .await;
        bots.push(bot["id"].as_str().unwrap().to_owned());
    }
    let started = Instant::now();
    let mut publishers = Vec::new();
    for (b, bot) in bots.iter().enumerate() {
        let (client, url) = (app.client.clone(), app.url(&format!("/api/v1/bot/{bot}/events")));
        publishers.push(tokio::spawn(async move {
            for n in 0..20 {
                let body = json!({"event": "transcript.data", "data": transcript(n)});
                let r = client
                    .post(&url)
                    .bearer_auth(ADMIN_KEY)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED, "bot {b}");
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    let mut per_bot: HashMap<String, Vec<u64>> = HashMap::new();
    let healthy_total = 49 * 20;
    let mut healthy_seen = 0;
    while healthy_seen < healthy_total {
        let got = receiver
            .next(Duration::from_secs(5))
            .await
            .expect("healthy bots keep flowing");
        let bot = got.path_and_query.split('/').nth(2).unwrap().to_owned();
        if bot != "0" {
            healthy_seen += 1;
        }
        per_bot.entry(bot).or_default().push(seq_of(&got));
    }
    println!(
        "49 healthy bots x 20 events delivered in {:?} while bot 0 hangs",
        started.elapsed()
    );
    for (bot, seqs) in &per_bot {
        if bot != "0" {
            assert_eq!(seqs, &(0..20).collect::<Vec<_>>(), "bot {bot} in order");
        }
    }
    assert_eq!(
        per_bot.get("0").map(Vec::len),
        Some(1),
        "the hanging endpoint has only its head in flight"
    );
}
}

on_every_store! {
async fn after_60_retries_one_second_apart_the_endpoint_fails_and_its_queue_is_dropped() {
    let app = spawn_app_with(|c| c.realtime_retry = RetryPolicy::realtime()).await;
    let receiver = TestReceiver::start().await;
    receiver.answer_path("/broken", Answer::Status(500));
    let team = app.create_team().await;
    let bot = app
        .create_bot(
            &team,
            &[
                (receiver.url("/broken"), &["participant_events.join"]),
                (receiver.url("/fine"), &["participant_events.join"]),
            ],
        )
        .await;
    let other_bot = app
        .create_bot(&team, &[(receiver.url("/other"), &["participant_events.join"])])
        .await;
    let bot_id = bot["id"].as_str().unwrap();
    let broken_id = bot["recording_config"]["realtime_endpoints"][0]["id"].as_str().unwrap();
    let (status, _) = app
        .bot_events(
            bot_id,
            &[
                ("participant_events.join", json!({"n": 0})),
                ("participant_events.join", json!({"n": 1})),
                ("participant_events.join", json!({"n": 2})),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let mut broken_times = Vec::new();
    let mut fine = 0;
    let deadline = Instant::now() + Duration::from_secs(75);
    while broken_times.len() < 61 {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = receiver.next(left).await.expect("attempts keep coming");
        if got.path_and_query == "/broken" {
            assert_eq!(seq_of(&got), 0, "only the head is tried");
            broken_times.push(got.at);
        } else if got.path_and_query == "/fine" {
            fine += 1;
            if fine == 2 {
                // Meanwhile another bot is unaffected.
                app.bot_events(
                    other_bot["id"].as_str().unwrap(),
                    &[("participant_events.join", json!({"n": 9}))],
                )
                .await;
            }
        }
    }
    assert_eq!(fine, 3, "the same bot's healthy endpoint got everything at once");
    let gaps: Vec<u128> = broken_times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_millis())
        .collect();
    println!(
        "real-time retry gaps: min {:?} ms, max {:?} ms",
        gaps.iter().min(),
        gaps.iter().max()
    );
    assert!(gaps.iter().all(|g| (1_000..1_250).contains(g)), "1 s apart: {gaps:?}");
    receiver.assert_quiet(Duration::from_millis(1_500)).await;

    let (_, after) = app.get(&format!("/api/v1/bot/{bot_id}/"), &team.key).await;
    let statuses: Vec<&str> = after["recording_config"]["realtime_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "active"]);
    let log_path = format!("/api/v1/bot/{bot_id}/realtime_endpoints/{broken_id}/attempts?limit=250");
    let (_, log) = app.get(&log_path, &team.key).await;
    let log = log["data"].as_array().unwrap().clone();
    let count = |s: &str| log.iter().filter(|a| a["status"] == s).count();
    assert_eq!((count("retrying"), count("failed"), count("dropped")), (60, 1, 2));
    assert!(
        log.iter()
            .filter(|a| a["status"] == "dropped")
            .all(|a| a["error"].as_str().unwrap().contains("not sent"))
    );

    // Later events are not delivered to the failed endpoint; the healthy one still gets them.
    app.bot_events(bot_id, &[("participant_events.join", json!({"n": 3}))])
        .await;
    let got = receiver.next(WAIT).await.expect("healthy endpoint");
    assert_eq!(got.path_and_query, "/fine");
    receiver.assert_quiet(Duration::from_millis(1_500)).await;
    let (_, log_after) = app.get(&log_path, &team.key).await;
    assert_eq!(
        log_after["data"].as_array().unwrap().len(),
        log.len(),
        "nothing new queued for it"
    );
}
}

//! Recover after a receiver's outage (contract §4.1), through the API on
//! both stores: which events it sends (failed ones, once; not those whose
//! latest delivery succeeded), the window, the refusals, and a recover that
//! outlives the server it started on.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(10);

/// Publishes `n` events and waits until each delivery to `webhook` has
/// failed (five attempts each); returns the accepted events.
async fn fail_events(app: &TestApp, team: &TestTeam, webhook: &str, prefix: &str, n: usize) -> Vec<Value> {
    let before = app.attempts(team, webhook, "status=failed&limit=250").await.len();
    let mut events = Vec::new();
    for i in 0..n {
        let (status, event) = app.publish(meeting_event(team, &format!("{prefix}{i}"))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{event}");
        events.push(event);
        // Each event in its own millisecond, so that windows can tell them apart.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let deadline = Instant::now() + WAIT;
    while app.attempts(team, webhook, "status=failed&limit=250").await.len() < before + n {
        assert!(Instant::now() < deadline, "the deliveries did not all fail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    events
}

/// Forgets what the receiver has seen so far.
async fn forget(receiver: &TestReceiver) {
    while receiver.next(Duration::from_millis(50)).await.is_some() {}
}

/// Receives deliveries until `quiet` passes with none; counts them by `webhook-id`.
async fn drain(receiver: &TestReceiver, first_within: Duration, quiet: Duration) -> HashMap<String, usize> {
    let mut got = HashMap::new();
    let mut within = first_within;
    while let Some(r) = receiver.next(within).await {
        *got.entry(r.header("webhook-id").to_owned()).or_default() += 1;
        within = quiet;
    }
    got
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

on_every_store! {
async fn a_recover_sends_each_failed_event_once_and_skips_what_later_succeeded() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(500));
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/deploying")).await;
    let wh = id(&webhook);
    let recover = format!("/api/v1/webhooks/{wh}/recover");
    let events = fail_events(&app, &team, &wh, "down", 4).await;
    let [e0, e1, e2, e3] = [&events[0], &events[1], &events[2], &events[3]].map(id);

    // e1 is resent by hand while the receiver still fails: its latest
    // delivery failed too, and it is still sent once.
    let (status, _) = app.post(&format!("/api/v1/webhooks/{wh}/events/{e1}/resend"), &team.key, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = Instant::now() + WAIT;
    while app.attempts(&team, &wh, "status=failed&limit=250").await.len() < 5 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The receiver is back. e0 is resent by hand and succeeds: its latest
    // delivery succeeded, so recovers skip it. A new event succeeds at once.
    receiver.answer_always(Answer::Status(204));
    forget(&receiver).await;
    let (status, _) = app.post(&format!("/api/v1/webhooks/{wh}/events/{e0}/resend"), &team.key, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, ok) = app.publish(meeting_event(&team, "up")).await;
    let before = drain(&receiver, WAIT, Duration::from_millis(500)).await;
    assert_eq!(before.keys().cloned().collect::<HashSet<_>>(), HashSet::from([e0.clone(), id(&ok)]));

    // A window: only e2 was created in [e2, e3).
    let created = |e: &Value| e["createdAt"].as_i64().unwrap();
    let (status, answer) = app
        .post(&recover, &team.key, json!({"since": created(&events[2]), "until": created(&events[3])}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer, json!({"count": 1}));
    let got = drain(&receiver, WAIT, Duration::from_millis(500)).await;
    assert_eq!(got, HashMap::from([(e2.clone(), 1)]));

    // Everything since the start: e1 and e3 (e0 and e2 succeeded last, `up` never failed).
    let (status, answer) = app.post(&recover, &team.key, json!({"since": 0})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer, json!({"count": 2}));
    let got = drain(&receiver, WAIT, Duration::from_millis(500)).await;
    assert_eq!(got, HashMap::from([(e1.clone(), 1), (e3.clone(), 1)]));

    // The recovered deliveries are manual, with the same id and bytes.
    let log = app.attempts(&team, &wh, &format!("eventId={e3}")).await;
    assert_eq!(log[0]["status"], "success");
    assert_eq!(log[0]["manual"], true);

    // Nothing is left to recover.
    let (_, answer) = app.post(&recover, &team.key, json!({"since": 0})).await;
    assert_eq!(answer, json!({"count": 0}));
    receiver.assert_quiet(Duration::from_millis(300)).await;
}
}

on_every_store! {
async fn a_recover_is_refused_for_bad_windows_deactivated_or_foreign_webhooks_and_while_one_runs() {
    let app = spawn_app_with(|c| {
        c.endpoint_concurrency = 1;
        c.attempt_timeout = Duration::from_millis(3_000);
    })
    .await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(500));
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/x")).await;
    let wh = id(&webhook);
    let recover = format!("/api/v1/webhooks/{wh}/recover");

    for bad in [json!({}), json!({"since": -1}), json!({"since": 10, "until": 10}), json!({"since": "yesterday"}), json!({"since": 0, "extra": 1})] {
        let (status, body) = app.post(&recover, &team.key, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let other = app.create_team().await;
    let (status, _) = app.post(&recover, &other.key, json!({"since": 0})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // 20 failed events; with one attempt at a time a chunk is 16 deliveries,
    // and the receiver now hangs, so the recover is still running.
    fail_events(&app, &team, &wh, "f", 20).await;
    receiver.answer_always(Answer::Hang);
    forget(&receiver).await;
    let (status, answer) = app.post(&recover, &team.key, json!({"since": 0})).await;
    assert_eq!((status, answer), (StatusCode::ACCEPTED, json!({"count": 20})));
    receiver.next(WAIT).await.expect("the recover's first delivery");
    let (status, body) = app.post(&recover, &team.key, json!({"since": 0})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("still running"), "{body}");

    let (status, _) = app.patch(&format!("/api/v1/webhooks/{wh}"), &team.key, json!({"status": "deactivated"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.post(&recover, &team.key, json!({"since": 0})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("deactivated"), "{body}");
}
}

on_every_store! {
/// On PostgreSQL the restarted server has another node name, so this is
/// also another node taking the recover over once the first one's lease
/// has run out.
async fn a_recover_cut_short_by_a_restart_finishes_after_it() {
    let slow = |c: &mut herald::Config| c.endpoint_concurrency = 2;
    let app = spawn_app_with(slow).await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(500));
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/restart")).await;
    let wh = id(&webhook);
    let events = fail_events(&app, &team, &wh, "r", 60).await;
    let all: HashSet<String> = events.iter().map(id).collect();

    // Each recovered delivery takes 50 ms, two at a time: 60 take 1.5 s.
    receiver.answer_always(Answer::Slow(204, Duration::from_millis(50)));
    forget(&receiver).await;
    let (status, answer) = app.post(&format!("/api/v1/webhooks/{wh}/recover"), &team.key, json!({"since": 0})).await;
    assert_eq!((status, answer), (StatusCode::ACCEPTED, json!({"count": 60})));
    let mut got: HashSet<String> = HashSet::new();
    while got.len() < 10 {
        let r = receiver.next(WAIT).await.expect("a recovered delivery");
        got.insert(r.header("webhook-id").to_owned());
    }
    let data = app.stop().await;
    let app = spawn_app_in(data, slow).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < all.len() {
        assert!(Instant::now() < deadline, "{} of {} recovered", got.len(), all.len());
        if let Some(r) = receiver.next(Duration::from_millis(500)).await {
            got.insert(r.header("webhook-id").to_owned());
        }
    }
    assert_eq!(got, all, "every failed event was delivered again");
    // And the recover is over: a new one finds nothing.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, answer) = app.post(&format!("/api/v1/webhooks/{wh}/recover"), &team.key, json!({"since": 0})).await;
        if status == StatusCode::ACCEPTED {
            assert_eq!(answer, json!({"count": 0}));
            break;
        }
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert!(Instant::now() < deadline, "the first recover never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
}

on_every_store! {
/// Recovers of different teams take turns: a small one asked for while a
/// long one runs is done long before the long one, and both send each
/// event once.
async fn a_long_recover_does_not_keep_another_teams_waiting() {
    let app = spawn_app_with(|c| {
        c.endpoint_concurrency = 4;
        // 16 deliveries a chunk, one chunk every 0.8 s for all recovers.
        c.recover_rate_per_s = 20.0;
    })
    .await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(500));
    let (long_team, short_team) = (app.create_team().await, app.create_team().await);
    let long = id(&app.create_webhook(&long_team, &receiver.url("/long")).await);
    let short = id(&app.create_webhook(&short_team, &receiver.url("/short")).await);
    let long_events = fail_events(&app, &long_team, &long, "l", 60).await;
    let short_events = fail_events(&app, &short_team, &short, "s", 4).await;

    receiver.answer_always(Answer::Status(204));
    forget(&receiver).await;
    let (status, answer) = app.post(&format!("/api/v1/webhooks/{long}/recover"), &long_team.key, json!({"since": 0})).await;
    assert_eq!((status, answer), (StatusCode::ACCEPTED, json!({"count": 60})));
    let (status, answer) = app.post(&format!("/api/v1/webhooks/{short}/recover"), &short_team.key, json!({"since": 0})).await;
    assert_eq!((status, answer), (StatusCode::ACCEPTED, json!({"count": 4})));

    let (mut long_got, mut short_got) = (HashMap::<String, usize>::new(), HashMap::<String, usize>::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut long_when_short_done = None;
    while long_got.len() < 60 || short_got.len() < 4 {
        assert!(Instant::now() < deadline, "{} and {} recovered", long_got.len(), short_got.len());
        let Some(r) = receiver.next(Duration::from_millis(500)).await else { continue };
        let got = if r.path_and_query.starts_with("/long") { &mut long_got } else { &mut short_got };
        *got.entry(r.header("webhook-id").to_owned()).or_default() += 1;
        if short_got.len() == 4 && long_when_short_done.is_none() {
            long_when_short_done = Some(long_got.len());
        }
    }
    // At 20 a second the long recover takes at least 2.4 s; the short one
    // got its turn after the long one's first chunk or two.
    let long_then = long_when_short_done.expect("the short recover finished");
    assert!(long_then < 60, "the short recover waited for the long one ({long_then} of 60 sent first)");
    receiver.assert_quiet(Duration::from_millis(300)).await;
    assert_eq!(long_got.keys().cloned().collect::<HashSet<_>>(), long_events.iter().map(id).collect());
    assert_eq!(short_got.keys().cloned().collect::<HashSet<_>>(), short_events.iter().map(id).collect());
    assert!(long_got.values().chain(short_got.values()).all(|n| *n == 1), "each event once");
}
}

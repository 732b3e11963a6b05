//! The dashboard's half of "when receivers fail", over HTTP: the list's
//! 24-hour success rate and Herald's deactivation badge, the webhook page's
//! banner, health card and its numbers, and Rotate.

use std::time::Duration;

use reqwest::StatusCode;

use crate::dashboard_http::DashSession;
use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(5);

on_every_store! {
async fn a_deactivated_webhook_stands_out_on_the_list_and_its_page_says_why() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    receiver.answer_path("/gone", Answer::Status(410));
    let team = app.create_team().await;
    let healthy = app.create_webhook(&team, &receiver.url("/ok")).await;
    let gone = app.create_webhook(&team, &receiver.url("/gone")).await;
    let (healthy_id, gone_id) = (healthy["id"].as_str().unwrap(), gone["id"].as_str().unwrap());
    app.publish(meeting_event(&team, "m1")).await;
    app.wait_for_attempts(&team, healthy_id, 1, WAIT).await;
    app.wait_for_attempts(&team, gone_id, 1, WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    while app.get(&format!("/api/v1/webhooks/{gone_id}"), &team.key).await.1["status"] != "deactivated" {
        assert!(std::time::Instant::now() < deadline, "not deactivated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let session = DashSession::sign_in(&app, &team).await;
    let list = session.get("/webhooks").await.body;
    let row = |id: &str| {
        let start = list.find(&format!(r#"data-id="{id}""#)).expect("row");
        list[start..].split("</tr>").next().unwrap().to_owned()
    };
    let (healthy_row, gone_row) = (row(healthy_id), row(gone_id));
    assert!(healthy_row.contains("100%"), "{healthy_row}");
    assert!(healthy_row.contains(">Active<"), "{healthy_row}");
    assert!(gone_row.contains("Deactivated by Herald"), "{gone_row}");
    assert!(gone_row.contains("Failing · 0%"), "{gone_row}");
    assert!(gone_row.contains("410 Gone"), "the reason is the badge's title: {gone_row}");

    let page = session.get(&format!("/webhooks/{gone_id}")).await.body;
    assert!(page.contains(r#"id="deactivated-banner""#), "banner");
    assert!(page.contains("Herald deactivated this webhook."));
    assert!(page.contains("The endpoint answered 410 Gone"));
    assert!(page.contains("0%</strong> of 1 attempts in the last 24 hours succeeded"), "headline");
    assert!(page.contains(r#"<svg class="chart""#), "chart");
    assert!(page.contains("Every delivery has failed since"), "the streak's start is shown");
    let healthy_page = session.get(&format!("/webhooks/{healthy_id}")).await.body;
    assert!(!healthy_page.contains(r#"id="deactivated-banner""#));
    assert!(!healthy_page.contains("Every delivery has failed since"));

    // Activating it from the banner clears the reason.
    let origin = app.url("");
    let done = session
        .post(
            &format!("/webhooks/{gone_id}/status"),
            &[("status", "active"), ("back", "detail")],
            Some(&session.csrf),
            Some(&origin),
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let page = session.get(&format!("/webhooks/{gone_id}")).await.body;
    assert!(!page.contains(r#"id="deactivated-banner""#));
    assert!(!page.contains("Every delivery has failed since"));
    let (_, after) = app.get(&format!("/api/v1/webhooks/{gone_id}"), &team.key).await;
    assert_eq!(after["deactivatedReason"], serde_json::Value::Null);
}
}

on_every_store! {
async fn the_health_table_shows_the_counts_the_api_gives() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    receiver.answer_next(&[Answer::Status(500)]);
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/flaky")).await;
    let id = webhook["id"].as_str().unwrap();
    app.publish(meeting_event(&team, "a")).await;
    app.publish(meeting_event(&team, "b")).await;
    app.wait_for_attempts(&team, id, 3, WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    let stats = loop {
        let (_, stats) = app.get(&format!("/api/v1/webhooks/{id}/stats?hours=1"), &team.key).await;
        if stats["buckets"][0]["success"] == 2 || std::time::Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let now = &stats["buckets"][0];
    assert_eq!((now["success"].as_i64(), now["retrying"].as_i64()), (Some(2), Some(1)), "{stats}");

    let session = DashSession::sign_in(&app, &team).await;
    let page = session.get(&format!("/webhooks/{id}")).await.body;
    let table = page.split(r#"id="health-table""#).nth(1).expect("health table");
    let first_row = table.split("<tbody>").nth(1).unwrap().split("</tr>").next().unwrap();
    let cells: Vec<&str> = first_row
        .split("<td>")
        .skip(2)
        .map(|c| c.split("</td>").next().unwrap())
        .collect();
    assert_eq!(&cells[..3], ["2", "1", "0"], "{first_row}");
    let p50 = now["p50Ms"].as_i64().unwrap();
    assert_eq!(cells[3], format!("{p50} ms"));
    assert!(page.contains("67%</strong> of 3 attempts"), "headline");
}
}

on_every_store! {
async fn rotate_on_the_page_makes_a_new_secret_and_says_until_when_the_old_one_signs() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/signed")).await;
    let id = webhook["id"].as_str().unwrap();
    let old = webhook["secret"].as_str().unwrap();
    let session = DashSession::sign_in(&app, &team).await;
    let origin = app.url("");
    let path = format!("/webhooks/{id}/secret/rotate");

    let page = session.get(&format!("/webhooks/{id}")).await.body;
    assert!(page.contains("Rotate the signing secret"));
    assert!(!page.contains("previous-secret-note"));
    for bad in ["-1", "604801", "soon", ""] {
        let refused = session.post(&path, &[("grace", bad)], Some(&session.csrf), Some(&origin)).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "grace {bad:?}");
    }
    let (_, unchanged) = app.get(&format!("/api/v1/webhooks/{id}"), &team.key).await;
    assert_eq!(unchanged["secret"], old);

    let done = session.post(&path, &[("grace", "3600")], Some(&session.csrf), Some(&origin)).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.headers["location"], format!("/webhooks/{id}?notice=rotated").as_str());
    let (_, rotated) = app.get(&format!("/api/v1/webhooks/{id}"), &team.key).await;
    let new = rotated["secret"].as_str().unwrap();
    assert_ne!(new, old);
    let page = session.get(&format!("/webhooks/{id}?notice=rotated")).await.body;
    assert!(page.contains("Signing secret rotated."));
    assert!(page.contains(r#"id="previous-secret-note""#), "the grace is shown");
    assert!(!page.contains(new) && !page.contains(old), "no secret in the page source");

    app.publish(meeting_event(&team, "m")).await;
    let got = receiver.next(WAIT).await.expect("delivery");
    let signatures: Vec<String> = got.header("webhook-signature").split(' ').map(str::to_owned).collect();
    assert_eq!(signatures, [expected_signature(new, &got), expected_signature(old, &got)]);

    // Again within the grace: refused with a reason, the secret unchanged.
    let again = session.post(&path, &[("grace", "3600")], Some(&session.csrf), Some(&origin)).await;
    assert_eq!(again.headers["location"], format!("/webhooks/{id}?notice=rotate-in-grace").as_str());
    let (_, same) = app.get(&format!("/api/v1/webhooks/{id}"), &team.key).await;
    assert_eq!(same["secret"], new);
    let page = session.get(&format!("/webhooks/{id}?notice=rotate-in-grace")).await.body;
    assert!(page.contains("The previous secret still signs until its grace period ends"));
}
}

on_every_store! {
async fn recover_on_the_page_counts_first_then_sends_and_shows_progress() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(500));
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/outage")).await;
    let id = webhook["id"].as_str().unwrap();
    let mut sent = std::collections::HashSet::new();
    for n in 0..3 {
        let (_, event) = app.publish(meeting_event(&team, &format!("m{n}"))).await;
        sent.insert(event["id"].as_str().unwrap().to_owned());
    }
    let deadline = std::time::Instant::now() + WAIT;
    while app.attempts(&team, id, "status=failed").await.len() < 3 {
        assert!(std::time::Instant::now() < deadline, "the deliveries did not fail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.answer_always(Answer::Status(204));
    while receiver.next(Duration::from_millis(50)).await.is_some() {}

    let session = DashSession::sign_in(&app, &team).await;
    let page = session.get(&format!("/webhooks/{id}")).await.body;
    assert!(page.contains("Recover failed deliveries"));
    assert!(page.contains("Five minutes before the first failure since the last success."), "the picker starts there");
    let since = page
        .split(r#"id="recover-since" name="since" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the picker's value")
        .to_owned();

    for bad in ["", "yesterday", "2999-01-01T00:00"] {
        let refused = session.get(&format!("/webhooks/{id}/recover?since={bad}")).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
    let preview = session.get(&format!("/webhooks/{id}/recover?since={since}")).await;
    assert_eq!(preview.status, StatusCode::OK);
    assert!(preview.body.contains("<strong>3 events</strong>"), "the count is shown before anything is sent");
    receiver.assert_quiet(Duration::from_millis(300)).await;
    let field = |name: &str| -> String {
        let marker = format!(r#"name="{name}" value=""#);
        preview.body.split(&marker).nth(1).unwrap().split('"').next().unwrap().to_owned()
    };
    let (from, until) = (field("since"), field("until"));

    let origin = app.url("");
    let started = session
        .post(&format!("/webhooks/{id}/recover"), &[("since", &from), ("until", &until)], Some(&session.csrf), Some(&origin))
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER);
    assert_eq!(started.headers["location"], format!("/webhooks/{id}?notice=recovering").as_str());
    let mut got = std::collections::HashSet::new();
    while got.len() < 3 {
        let r = receiver.next(WAIT).await.expect("a recovered delivery");
        got.insert(r.header("webhook-id").to_owned());
    }
    assert_eq!(got, sent);

    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let poll = session.get(&format!("/webhooks/{id}/attempts.json")).await;
        let json: serde_json::Value = serde_json::from_str(&poll.body).unwrap();
        if json["recover"] == "The last recover sent 3 of 3 events again." {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", json["recover"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = session.get(&format!("/webhooks/{id}?notice=recovering")).await.body;
    assert!(page.contains("Recover started"));
    assert!(page.contains("The last recover sent 3 of 3 events again."));
}
}

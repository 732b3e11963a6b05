//! The dashboard's health, deactivation and rotation in a real browser, on
//! a desktop and a phone width, with screenshots, and every page checked
//! with axe-core for WCAG 2 A/AA violations (there must be none).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dashboard_ui::{Ui, with_browser};
use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(10);

async fn assert_accessible(ui: &Ui, page: &str) {
    let violations = ui.accessibility_violations().await;
    assert!(violations.is_empty(), "{page}: {violations:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_health_rates_the_deactivation_banner_and_rotate_are_clear_and_accessible() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    receiver.answer_path("/gone", Answer::Status(410));
    receiver.answer_path("/flaky", Answer::Status(503));
    let team = app.create_team().await;
    let healthy = app.create_webhook(&team, &receiver.url("/ok")).await;
    let flaky = app.create_webhook(&team, &receiver.url("/flaky")).await;
    let gone = app.create_webhook(&team, &receiver.url("/gone")).await;
    let id = |w: &Value| w["id"].as_str().unwrap().to_owned();
    let (healthy_id, flaky_id, gone_id) = (id(&healthy), id(&flaky), id(&gone));
    for n in 0..3 {
        app.publish(meeting_event(&team, &format!("m{n}"))).await;
    }
    app.wait_for_attempts(&team, &healthy_id, 3, WAIT).await;
    app.wait_for_attempts(&team, &flaky_id, 15, WAIT).await;
    let deadline = Instant::now() + WAIT;
    while app.get(&format!("/api/v1/webhooks/{gone_id}"), &team.key).await.1["status"] != "deactivated" {
        assert!(Instant::now() < deadline, "not deactivated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bot = app
        .create_bot(&team, &[(receiver.url("/rt"), &["participant_events.join"][..])])
        .await;
    let bot_id = bot["id"].as_str().unwrap().to_owned();
    let link = app.dashboard_link(&team).await;

    with_browser("health", |ui| async move {
        ui.goto(&link).await;
        ui.goto(&app.url("/webhooks")).await;
        let row = |id: &str| format!(r#"#webhooks tr[data-id="{id}"]"#);
        assert!(ui.text(&row(&healthy_id)).await.contains("100%"));
        let flaky_row = ui.text(&row(&flaky_id)).await;
        assert!(flaky_row.contains("Failing · 0%"), "{flaky_row}");
        assert!(ui.text(&row(&gone_id)).await.contains("Deactivated by Herald"));
        ui.shot("list").await;
        assert_accessible(&ui, "the webhook list").await;

        ui.goto(&app.url(&format!("/webhooks/{gone_id}"))).await;
        let banner = ui.text("#deactivated-banner").await;
        assert!(banner.contains("410 Gone"), "{banner}");
        ui.shot("deactivated-banner").await;
        assert_accessible(&ui, "a deactivated webhook").await;

        ui.goto(&app.url(&format!("/webhooks/{flaky_id}"))).await;
        let headline = ui.text("#health-headline").await;
        assert!(headline.contains("0% of 15 attempts"), "{headline}");
        assert!(headline.contains("Every delivery has failed since"), "{headline}");
        ui.find("svg.chart rect.bar-failed").await;
        ui.find("svg.chart rect.bar-retrying").await;
        ui.find("#health").await.scroll_into_view().await.unwrap();
        ui.shot("health-chart").await;
        assert_accessible(&ui, "a failing webhook's page").await;
        ui.resize(390, 844).await;
        ui.find("#health").await.scroll_into_view().await.unwrap();
        ui.shot("health-phone").await;
        assert_accessible(&ui, "a failing webhook's page on a phone").await;
        ui.resize(1280, 900).await;

        // Rotate: the disclosure explains, the grace is chosen, the page says until when.
        ui.goto(&app.url(&format!("/webhooks/{healthy_id}"))).await;
        ui.click("#rotate summary").await;
        assert!(
            ui.text("#rotate")
                .await
                .contains("During the grace period the current secret signs too")
        );
        ui.find("#grace option[value='3600']").await.click().await.unwrap();
        ui.shot("rotate-confirm").await;
        ui.click("#confirm-rotate").await;
        ui.wait_for_text(".notice", "Signing secret rotated").await;
        assert!(ui.text("#previous-secret-note").await.contains("until"));
        let (_, rotated) = app.get(&format!("/api/v1/webhooks/{healthy_id}"), &team.key).await;
        ui.click("#reveal-secret").await;
        ui.wait_for_text("#secret-value", "whsec_").await;
        assert_eq!(ui.text("#secret-value").await, rotated["secret"].as_str().unwrap());
        assert_ne!(rotated["secret"], healthy["secret"]);
        ui.shot("rotated").await;
        ui.resize(390, 844).await;
        ui.shot("rotated-phone").await;
        ui.resize(1280, 900).await;

        // The other pages hold to the same standard.
        for (page, path) in [
            ("create webhook", "/webhooks/new".to_owned()),
            ("bots", "/bots".to_owned()),
            ("a healthy webhook's page", format!("/webhooks/{healthy_id}")),
        ] {
            ui.goto(&app.url(&path)).await;
            assert_accessible(&ui, page).await;
        }
        ui.goto(&app.url(&format!("/webhooks/{flaky_id}"))).await;
        ui.click("#log tbody tr .inspect").await;
        assert_accessible(&ui, "an attempt's inspect page").await;
        let _ = bot_id;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_recover_counts_first_then_sends_again_with_progress_in_the_live_log() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(503));
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/deploy")).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    for n in 0..4 {
        app.publish(meeting_event(&team, &format!("outage-{n}"))).await;
    }
    let deadline = Instant::now() + WAIT;
    while app.attempts(&team, &id, "status=failed").await.len() < 4 {
        assert!(Instant::now() < deadline, "the deliveries did not fail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.answer_always(Answer::Status(204));
    let link = app.dashboard_link(&team).await;

    with_browser("recover", |ui| async move {
        ui.goto(&link).await;
        ui.goto(&app.url(&format!("/webhooks/{id}"))).await;
        ui.find("#recover").await.scroll_into_view().await.unwrap();
        assert!(
            ui.text("#recover")
                .await
                .contains("Five minutes before the first failure since the last success.")
        );
        ui.shot("panel").await;
        ui.click("#recover-preview").await;
        let count = ui.text("#recover-count").await;
        assert!(count.starts_with("4 events created between"), "{count}");
        ui.shot("confirm").await;
        assert_accessible(&ui, "the recover confirmation").await;
        ui.resize(390, 844).await;
        ui.shot("confirm-phone").await;
        ui.resize(1280, 900).await;
        ui.click("#confirm-recover").await;
        ui.wait_for_text(".notice", "Recover started").await;
        // The live log shows the recovered attempts, marked manual, and the
        // progress line catches up without a reload.
        ui.wait_for_text("#recover-progress", "The last recover sent 4 of 4 events again.")
            .await;
        ui.wait_for_text("#log tbody tr", "MANUAL").await;
        let rows = ui.texts("#log tbody tr").await;
        let recovered = rows
            .iter()
            .filter(|r| r.contains("Success") && r.contains("MANUAL"))
            .count();
        assert_eq!(recovered, 4, "{rows:?}");
        ui.shot("recovered").await;
        assert_accessible(&ui, "a webhook after a recover").await;
        ui.resize(390, 844).await;
        ui.find("#recover").await.scroll_into_view().await.unwrap();
        ui.shot("recovered-phone").await;
    })
    .await;
    let got = {
        let mut ids = std::collections::HashSet::new();
        while let Some(r) = receiver.next(Duration::from_millis(300)).await {
            if r.header("webhook-signature").starts_with("v1,") {
                ids.insert(r.header("webhook-id").to_owned());
            }
        }
        ids
    };
    assert!(got.len() >= 4, "the four events were sent again: {got:?}");
}

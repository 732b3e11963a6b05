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

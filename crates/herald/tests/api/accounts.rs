//! Tenancy and keys: accounts, teams, team keys, and who may call what.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

on_every_store! {
async fn operator_creates_accounts_teams_and_keys() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    assert!(team.account_id.starts_with("acc_"));
    assert!(team.team_id.starts_with("team_"));
    assert!(team.key.starts_with("hk_"));

    let (status, body) = app
        .post("/api/v1/accounts/acc_missing/teams", ADMIN_KEY, json!({"name": "x"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app.post("/api/v1/teams/team_missing/keys", ADMIN_KEY, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app.post("/api/v1/accounts", ADMIN_KEY, json!({"name": 5})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"].as_str().unwrap().starts_with("name:"),
        "{body}"
    );
}
}

on_every_store! {
async fn keys_are_checked_in_every_accepted_form() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    for auth in [
        format!("Bearer {}", team.key),
        format!("Token {}", team.key),
        team.key.clone(),
    ] {
        let (status, body) = app.raw(Method::GET, "/api/v1/webhooks", Some(&auth), "").await;
        assert_eq!(status, StatusCode::OK, "{auth}: {body}");
    }
    let (status, body) = app.raw(Method::GET, "/api/v1/webhooks", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = app
        .raw(Method::GET, "/api/v1/webhooks", Some("Bearer hk_wrong"), "")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .raw(Method::POST, "/api/v1/accounts", Some("Bearer not-the-admin-key"), "{}")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Right key, wrong kind.
    let (status, body) = app.post("/api/v1/accounts", &team.key, json!({"name": "x"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = app.post("/api/v1/events", &team.key, meeting_event(&team, "m")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.get("/api/v1/webhooks", ADMIN_KEY).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
}

on_every_store! {
async fn a_team_never_sees_another_teams_webhooks_or_attempts() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let alice = app.create_team().await;
    let bob = app.create_team().await;
    let webhook = app.create_webhook(&alice, &receiver.url("/a")).await;
    let id = webhook["id"].as_str().unwrap();
    let (status, _) = app.publish(meeting_event(&alice, "m1")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let attempts = app
        .wait_for_attempts(&alice, id, 1, std::time::Duration::from_secs(5))
        .await;
    let attempt_id = attempts[0]["id"].as_str().unwrap();

    for (method, path) in [
        (Method::GET, format!("/api/v1/webhooks/{id}")),
        (Method::PATCH, format!("/api/v1/webhooks/{id}")),
        (Method::DELETE, format!("/api/v1/webhooks/{id}")),
        (Method::GET, format!("/api/v1/webhooks/{id}/attempts")),
        (Method::GET, format!("/api/v1/attempts/{attempt_id}")),
    ] {
        let body = json!({"name": "stolen"});
        let (status, answer) = app.request(method.clone(), &path, Some(&bob.key), Some(&body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "not_found");
    }
    let (_, list) = app.get("/api/v1/webhooks", &bob.key).await;
    assert_eq!(list["data"], json!([]));
    // Alice's webhook is untouched.
    let (status, mine) = app.get(&format!("/api/v1/webhooks/{id}"), &alice.key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["name"], "CRM sync");
}
}

on_every_store! {
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    let (status, _) = app.raw(Method::GET, "/healthz", None, "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.raw(Method::GET, "/readyz", None, "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, text) = app.raw(Method::GET, "/metrics", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.as_str().unwrap().contains("herald_events_published_total 0"),
        "{text}"
    );
    let (status, body) = app.raw(Method::GET, "/api/v1/nothing-here", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}
}

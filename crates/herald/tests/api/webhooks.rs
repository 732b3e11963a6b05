//! Webhook management through the API: create, list, read, update, delete,
//! and every way a request can be refused without changing anything.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

on_every_store! {
async fn webhooks_can_be_created_listed_read_updated_and_deleted() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let created = app.create_webhook(&team, "http://127.0.0.1:9/hook?token=abc").await;
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("wh_"));
    assert_eq!(created["status"], "active");
    assert_eq!(created["url"], "http://127.0.0.1:9/hook?token=abc");
    assert_eq!(created["eventTypes"], json!(["meeting.completed"]));
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert!(created["createdAt"].as_i64().unwrap() > 1_700_000_000_000);

    let (status, list) = app.get("/api/v1/webhooks", &team.key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"], json!([created.clone()]));
    let (_, one) = app.get(&format!("/api/v1/webhooks/{id}"), &team.key).await;
    assert_eq!(one, created);

    let (status, updated) = app
        .patch(
            &format!("/api/v1/webhooks/{id}"),
            &team.key,
            json!({"name": "Renamed", "url": "http://127.0.0.1:9/other", "status": "deactivated"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(updated["url"], "http://127.0.0.1:9/other");
    assert_eq!(updated["status"], "deactivated");
    assert_eq!(updated["secret"], created["secret"]);
    let (_, again) = app.get(&format!("/api/v1/webhooks/{id}"), &team.key).await;
    assert_eq!(again, updated);

    let (status, _) = app.delete(&format!("/api/v1/webhooks/{id}"), &team.key).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("/api/v1/webhooks/{id}"), &team.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.delete(&format!("/api/v1/webhooks/{id}"), &team.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
}

on_every_store! {
async fn bad_webhook_input_is_refused_with_the_field_named_and_changes_nothing() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let cases = [
        (
            json!({"url": "http://127.0.0.1:9/", "eventTypes": ["meeting.completed"]}),
            "name",
        ),
        (json!({"name": "x", "eventTypes": ["meeting.completed"]}), "url"),
        (json!({"name": "x", "url": "http://127.0.0.1:9/"}), "eventTypes"),
        (
            json!({"name": 7, "url": "http://127.0.0.1:9/", "eventTypes": ["meeting.completed"]}),
            "name",
        ),
        (
            json!({"name": "x", "url": "http://127.0.0.1:9/", "eventTypes": "meeting.completed"}),
            "eventTypes",
        ),
        (
            json!({"name": "x", "url": "http://127.0.0.1:9/", "eventTypes": ["meeting.started"]}),
            "eventTypes[0]",
        ),
        (
            json!({"name": "x", "url": "http://127.0.0.1:9/", "eventTypes": []}),
            "eventTypes",
        ),
        (
            json!({"name": " ", "url": "http://127.0.0.1:9/", "eventTypes": ["meeting.completed"]}),
            "name",
        ),
        (
            json!({"name": "x", "url": "not a url", "eventTypes": ["meeting.completed"]}),
            "url",
        ),
        (
            json!({"name": "x", "url": "http://127.0.0.1:9/", "eventTypes": ["meeting.completed"], "status": "paused"}),
            "status",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = app.post("/api/v1/webhooks", &team.key, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{body}: message `{message}` should name `{field}`"
        );
    }
    let (status, answer) = app
        .raw(Method::POST, "/api/v1/webhooks", Some(&team.key), "{\"name\": ")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["code"], "malformed_json");

    // Unknown fields are ignored.
    let (status, _) = app
        .post(
            "/api/v1/webhooks",
            &team.key,
            json!({"name": "x", "url": "http://127.0.0.1:9/", "eventTypes": ["meeting.completed"], "color": "red"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, list) = app.get("/api/v1/webhooks", &team.key).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "only the valid webhook exists"
    );

    // A bad PATCH changes nothing.
    let id = list["data"][0]["id"].as_str().unwrap();
    let (status, _) = app
        .patch(
            &format!("/api/v1/webhooks/{id}"),
            &team.key,
            json!({"name": "ok", "eventTypes": ["nope"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, after) = app.get(&format!("/api/v1/webhooks/{id}"), &team.key).await;
    assert_eq!(after["name"], "x");
}
}

on_every_store! {
async fn targets_must_be_public_https_unless_insecure_targets_are_allowed() {
    let app = spawn_app_with(|c| c.allow_insecure_targets = false).await;
    let team = app.create_team().await;
    for url in [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://10.0.0.8/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[fd00::1]/hook",
        "https://100.64.1.1/hook",
        "https://localhost/hook",
    ] {
        let (status, answer) = app
            .post(
                "/api/v1/webhooks",
                &team.key,
                json!({"name": "x", "url": url, "eventTypes": ["meeting.completed"]}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {answer}");
        assert_eq!(answer["error"]["code"], "target_not_allowed");
        assert!(
            answer["error"]["message"].as_str().unwrap().starts_with("url "),
            "{answer}"
        );
    }
    let (status, answer) = app
        .post(
            "/api/v1/webhooks",
            &team.key,
            json!({"name": "x", "url": "https://hooks.example.com/in?token=a", "eventTypes": ["meeting.completed"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let id = answer["id"].as_str().unwrap();
    let (status, _) = app
        .patch(
            &format!("/api/v1/webhooks/{id}"),
            &team.key,
            json!({"url": "https://192.168.0.1/"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}
}

on_every_store! {
async fn bodies_over_the_limit_answer_413() {
    let app = spawn_app_with(|c| c.max_body_bytes = 4096).await;
    let team = app.create_team().await;
    let big = json!({"name": "x".repeat(5000), "url": "http://127.0.0.1:9/", "eventTypes": ["meeting.completed"]});
    let (status, answer) = app.post("/api/v1/webhooks", &team.key, big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"]["code"], "payload_too_large");
    let (_, list) = app.get("/api/v1/webhooks", &team.key).await;
    assert_eq!(list["data"], json!([]));
}
}

//! The dashboard over plain HTTP, where a browser is not needed: sign-in
//! links and the session cookie's flags, CSRF and origin checks on every
//! state-changing route, tenancy (another team's ids answer 404), sign-out,
//! and the signing secret kept out of page source.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::helpers::*;

/// A signed-in browser, played by hand: the session cookie and the page's CSRF token.
pub struct DashSession {
    client: reqwest::Client,
    base: String,
    pub cookie: String,
    pub csrf: String,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl DashSession {
    pub async fn sign_in(app: &TestApp, team: &TestTeam) -> Self {
        Self::open(&app.url(""), &app.dashboard_link(team).await).await
    }

    /// Opens a sign-in `link` of the server at `base`.
    pub async fn open(base: &str, link: &str) -> Self {
        let client = no_redirects();
        let response = client.get(link).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let mut session = Self {
            client,
            base: base.to_owned(),
            cookie,
            csrf: String::new(),
        };
        let page = session.get("/webhooks").await;
        assert_eq!(page.status, StatusCode::OK);
        session.csrf = csrf_of(&page.body);
        session
    }

    pub async fn get(&self, path: &str) -> Answer {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        answer(response).await
    }

    /// POSTs a form with the session's CSRF token (unless `csrf` says otherwise).
    pub async fn post(&self, path: &str, form: &[(&str, &str)], csrf: Option<&str>, origin: Option<&str>) -> Answer {
        let mut pairs: Vec<(&str, &str)> = form.to_vec();
        if let Some(token) = csrf {
            pairs.push(("_csrf", token));
        }
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded(&pairs));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        answer(request.send().await.unwrap()).await
    }
}

fn serde_urlencoded(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    Answer { status, headers, body }
}

pub fn csrf_of(page: &str) -> String {
    let start =
        page.find(r#"name="csrf-token" content=""#).expect("csrf meta") + r#"name="csrf-token" content=""#.len();
    page[start..].split('"').next().unwrap().to_owned()
}

on_every_store! {
async fn a_dashboard_link_opens_one_session_for_its_team_with_a_safe_cookie() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let before = herald_engine::now_ms();
    let (status, link) = app
        .post(
            &format!("/api/v1/teams/{}/dashboard-links", team.team_id),
            ADMIN_KEY,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&app.url("/sign-in?token=")), "{url}");
    let expires = link["expiresAt"].as_i64().unwrap();
    assert!(
        (before + 14 * 60_000..=before + 16 * 60_000).contains(&expires),
        "{expires}"
    );

    let client = no_redirects();
    let first = client.get(url).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(first.headers()[LOCATION], "/webhooks");
    let cookie = first.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("herald_session="), "{cookie}");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    assert!(!cookie.contains("Secure"), "plain http public URL: {cookie}");

    let again = client.get(url).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::FORBIDDEN, "a link works once");
    assert!(again.headers().get(SET_COOKIE).is_none());
    let forged = client
        .get(app.url("/sign-in?token=not-a-real-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    let page = client
        .get(app.url("/webhooks"))
        .header("cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        page.text().await.unwrap().contains("Recruiting"),
        "the team's name is shown"
    );
    let signed_out = client.get(app.url("/webhooks")).send().await.unwrap();
    assert_eq!(signed_out.status(), StatusCode::UNAUTHORIZED);
}
}

on_every_store! {
async fn dashboard_links_need_the_admin_key_and_an_existing_team() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let path = format!("/api/v1/teams/{}/dashboard-links", team.team_id);
    let (status, _) = app.post(&path, &team.key, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.request(reqwest::Method::POST, &path, None, Some(&json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = app
        .post(
            "/api/v1/teams/team_0000000000000000000000000/dashboard-links",
            ADMIN_KEY,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
}

on_every_store! {
async fn an_expired_link_opens_nothing_and_a_session_ends_at_its_time() {
    let (clock, time) = herald_engine::Clock::manual(herald_engine::now_ms());
    let app = spawn_app_with(|c| c.clock = clock).await;
    let team = app.create_team().await;
    // A link works for 15 minutes: one minted now is refused 15 minutes and
    // a millisecond later.
    let link = app.dashboard_link(&team).await;
    time.fetch_add(15 * 60_000 + 1, std::sync::atomic::Ordering::Relaxed);
    let response = no_redirects().get(&link).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get(SET_COOKIE).is_none());
    assert!(response.text().await.unwrap().contains("expired or was already used"));

    // A session lasts 12 hours: still open a minute before, signed out after.
    let session = DashSession::sign_in(&app, &team).await;
    time.fetch_add(12 * 3_600_000 - 60_000, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(session.get("/webhooks").await.status, StatusCode::OK);
    time.fetch_add(60_001, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(session.get("/webhooks").await.status, StatusCode::UNAUTHORIZED);
}
}

on_every_store! {
async fn an_https_public_url_makes_the_cookie_secure() {
    let app = spawn_app_with(|c| c.public_url = Some("https://herald.example.com".into())).await;
    let team = app.create_team().await;
    let link = app.dashboard_link(&team).await;
    let path = link
        .strip_prefix("https://herald.example.com")
        .expect("built on the public URL");
    let response = no_redirects().get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
}
}

on_every_store! {
async fn every_state_changing_request_needs_the_csrf_token_and_this_origin() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, "http://127.0.0.1:9/h").await;
    let id = webhook["id"].as_str().unwrap();
    let (_, event) = app.publish(meeting_event(&team, "m1")).await;
    let event_id = event["id"].as_str().unwrap();
    let session = DashSession::sign_in(&app, &team).await;

    let routes: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/webhooks".into(),
            vec![
                ("name", "x"),
                ("url", "http://127.0.0.1:9/x"),
                ("eventTypes", "meeting.completed"),
            ],
        ),
        (format!("/webhooks/{id}/status"), vec![("status", "deactivated")]),
        (format!("/webhooks/{id}/secret"), vec![]),
        (format!("/webhooks/{id}/secret/rotate"), vec![("grace", "86400")]),
        (format!("/webhooks/{id}/recover"), vec![("since", "0"), ("until", "1")]),
        (format!("/webhooks/{id}/test-event"), vec![]),
        (format!("/webhooks/{id}/resend"), vec![("event_id", event_id)]),
        ("/sign-out".into(), vec![]),
    ];
    for (path, form) in &routes {
        let missing = session.post(path, form, None, None).await;
        assert_eq!(missing.status, StatusCode::FORBIDDEN, "{path} without a token");
        let wrong = session.post(path, form, Some("forged-token"), None).await;
        assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{path} with a wrong token");
        let cross = session
            .post(path, form, Some(&session.csrf), Some("https://evil.example"))
            .await;
        assert_eq!(cross.status, StatusCode::FORBIDDEN, "{path} from another origin");
    }
    // None of it happened.
    let (_, list) = app.get("/api/v1/webhooks", &team.key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["status"], "active");
    assert_eq!(session.get("/webhooks").await.status, StatusCode::OK, "still signed in");

    // The same request with the token, from this origin, is carried out.
    let origin = app.url("");
    let done = session
        .post(
            &format!("/webhooks/{id}/status"),
            &[("status", "deactivated")],
            Some(&session.csrf),
            Some(&origin),
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let (_, after) = app.get(&format!("/api/v1/webhooks/{id}"), &team.key).await;
    assert_eq!(after["status"], "deactivated");
}
}

on_every_store! {
async fn another_teams_ids_answer_404_on_every_page_and_action() {
    let app = spawn_app().await;
    let mine = app.create_team().await;
    let theirs = app.create_team().await;
    let receiver = TestReceiver::start().await;
    let webhook = app.create_webhook(&theirs, &receiver.url("/theirs")).await;
    let id = webhook["id"].as_str().unwrap();
    let (_, event) = app.publish(meeting_event(&theirs, "m1")).await;
    let event_id = event["id"].as_str().unwrap();
    let attempts = app.wait_for_attempts(&theirs, id, 1, Duration::from_secs(5)).await;
    let attempt_id = attempts[0]["id"].as_str().unwrap();
    let bot = app
        .create_bot(&theirs, &[(receiver.url("/rt"), &["participant_events.join"][..])])
        .await;
    let bot_id = bot["id"].as_str().unwrap();
    let endpoint_id = bot["recording_config"]["realtime_endpoints"][0]["id"].as_str().unwrap();

    let session = DashSession::sign_in(&app, &mine).await;
    for path in [
        format!("/webhooks/{id}"),
        format!("/webhooks/{id}/attempts.json"),
        format!("/webhooks/{id}/attempts/{attempt_id}"),
        format!("/bots/{bot_id}/endpoints/{endpoint_id}"),
        format!("/bots/{bot_id}/endpoints/{endpoint_id}/attempts.json"),
        format!("/webhooks/{id}/recover?since=2025-01-01T00:00"),
        "/webhooks/wh_doesnotexist".into(),
        "/webhooks/not-an-id".into(),
    ] {
        assert_eq!(session.get(&path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    for (path, form) in [
        (format!("/webhooks/{id}/status"), vec![("status", "deactivated")]),
        (format!("/webhooks/{id}/secret"), vec![]),
        (format!("/webhooks/{id}/secret/rotate"), vec![("grace", "0")]),
        (format!("/webhooks/{id}/recover"), vec![("since", "0"), ("until", "1")]),
        (format!("/webhooks/{id}/test-event"), vec![]),
        (format!("/webhooks/{id}/resend"), vec![("event_id", event_id)]),
    ] {
        let answer = session.post(&path, &form, Some(&session.csrf), None).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!answer.body.contains(webhook["secret"].as_str().unwrap()));
    }
    let (_, after) = app.get(&format!("/api/v1/webhooks/{id}"), &theirs.key).await;
    assert_eq!(after["status"], "active", "their webhook is untouched");
    assert_eq!(after["secret"], webhook["secret"], "and keeps its secret");
    let list = session.get("/webhooks").await;
    assert!(!list.body.contains(id), "their webhook is not listed");
    let bots = session.get("/bots").await;
    assert!(!bots.body.contains(bot_id), "their bot is not listed");
}
}

on_every_store! {
async fn the_secret_is_not_in_the_page_until_revealed_with_a_post() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, "http://127.0.0.1:9/h?token=abc123").await;
    let id = webhook["id"].as_str().unwrap();
    let secret = webhook["secret"].as_str().unwrap();
    let session = DashSession::sign_in(&app, &team).await;

    let page = session.get(&format!("/webhooks/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains(secret), "the secret is not in the page source");
    assert!(!page.body.contains("abc123"), "query values are masked");
    assert!(page.body.contains("?token=•••"));
    let list = session.get("/webhooks").await;
    assert!(!list.body.contains("abc123") && !list.body.contains(secret));

    let revealed = session
        .post(&format!("/webhooks/{id}/secret"), &[], Some(&session.csrf), None)
        .await;
    assert_eq!(revealed.status, StatusCode::OK);
    let body: Value = serde_json::from_str(&revealed.body).unwrap();
    assert_eq!(body["secret"], secret);
    let get = session.get(&format!("/webhooks/{id}/secret")).await;
    assert_ne!(get.status, StatusCode::OK, "only a POST reveals it");
}
}

on_every_store! {
async fn signing_out_ends_the_session_on_the_server() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let session = DashSession::sign_in(&app, &team).await;
    let out = session.post("/sign-out", &[], Some(&session.csrf), None).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.headers[LOCATION], "/signed-out");
    let cleared = out.headers[SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The old cookie, replayed, opens nothing: the session row is gone.
    assert_eq!(session.get("/webhooks").await.status, StatusCode::UNAUTHORIZED);
}
}

on_every_store! {
async fn create_webhook_keeps_the_input_and_names_each_bad_field() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let session = DashSession::sign_in(&app, &team).await;
    let refused = session
        .post(
            "/webhooks",
            &[
                ("name", "  "),
                ("url", "ftp://example.com/<b>hook</b>"),
                ("status", "active"),
            ],
            Some(&session.csrf),
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    for id in ["name-error", "url-error", "eventTypes-error"] {
        assert!(refused.body.contains(&format!(r#"id="{id}""#)), "{id} missing");
    }
    assert!(refused.body.contains("Must use https."), "{}", refused.body);
    assert!(
        refused.body.contains("ftp://example.com/&lt;b&gt;hook&lt;/b&gt;"),
        "input kept, escaped"
    );
    let (_, list) = app.get("/api/v1/webhooks", &team.key).await;
    assert_eq!(list["data"], json!([]));

    let created = session
        .post(
            "/webhooks",
            &[
                ("name", "ATS sync"),
                ("url", "http://127.0.0.1:9/hook"),
                ("eventTypes", "meeting.completed"),
                ("status", "deactivated"),
            ],
            Some(&session.csrf),
            None,
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER);
    let (_, list) = app.get("/api/v1/webhooks", &team.key).await;
    assert_eq!(list["data"][0]["name"], "ATS sync");
    assert_eq!(list["data"][0]["status"], "deactivated");
    assert_eq!(list["data"][0]["eventTypes"], json!(["meeting.completed"]));
}
}

on_every_store! {
async fn herald_dashboard_link_prints_a_working_link_from_the_store() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let data = app.stop().await;
    let database_url = data.database_url();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "dashboard-link",
            "--team",
            &team.team_id,
            "--database-url",
            &database_url,
        ])
        .args(["--public-url", "https://herald.example.com/"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let url = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let path = url
        .strip_prefix("https://herald.example.com")
        .unwrap_or_else(|| panic!("built on the public URL: {url}"));
    assert!(path.starts_with("/sign-in?token="), "{url}");

    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "dashboard-link",
            "--team",
            "team_nobody",
            "--database-url",
            &database_url,
        ])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no team"));

    let app = spawn_app_in(data, |_| {}).await;
    let response = no_redirects().get(app.url(path)).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "the printed link opens a session"
    );
}
}

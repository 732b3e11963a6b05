//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! through every flow a person uses. Each test starts its own chromedriver
//! and Herald, runs one browser at a time (the machine has two cores), and
//! saves screenshots under `target/ui-screenshots/` in the workspace.
//!
//! Without `/usr/bin/chromedriver` the tests say why and pass, unless
//! `HERALD_TEST_REQUIRE_ALL=1`, which makes the missing browser a failure.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_domain::retry::RetryPolicy;
use reqwest::StatusCode;
use serde_json::{Value, json};
use thirtyfour::prelude::*;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::helpers::*;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(10);

/// One browser at a time: Chromium is heavy and the machine has two cores.
static BROWSERS: Semaphore = Semaphore::const_new(1);

/// A chromedriver process, ended when the test ends however it ends.
struct Chromedriver {
    child: Child,
    url: String,
    _turn: SemaphorePermit<'static>,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_chromedriver(test: &str) -> Option<Chromedriver> {
    let turn = BROWSERS.acquire().await.expect("the semaphore is never closed");
    for program in [CHROMEDRIVER, CHROMIUM] {
        if !Path::new(program).exists() {
            let why = format!("{program} is missing (apt-get install chromium chromium-driver)");
            if std::env::var("HERALD_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
                panic!("{test}: {why}, and HERALD_TEST_REQUIRE_ALL=1");
            }
            eprintln!("skipping browser test {test}: {why}");
            return None;
        }
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Chromedriver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _turn: turn,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = client.get(format!("{}/status", driver.url)).send().await
            && r.status().is_success()
        {
            return Some(driver);
        }
        assert!(Instant::now() < deadline, "chromedriver did not start within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `body` with a fresh headless Chromium, and quits it whatever happens.
pub(crate) async fn with_browser<F, Fut>(test: &'static str, body: F)
where
    F: FnOnce(Ui) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(chromedriver) = start_chromedriver(test).await else {
        return;
    };
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary(CHROMIUM).unwrap();
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--lang=en-US",
    ] {
        caps.add_arg(arg).unwrap();
    }
    let driver = WebDriver::new(&chromedriver.url, caps).await.expect("start Chromium");
    let started = Instant::now();
    driver
        .run_and_quit(|driver| async move {
            body(Ui { driver, test }).await;
            Ok::<(), WebDriverError>(())
        })
        .await
        .unwrap();
    eprintln!("{test}: browser part took {:?}", started.elapsed());
    drop(chromedriver);
}

/// The browser, with the few moves these tests make.
pub(crate) struct Ui {
    driver: WebDriver,
    test: &'static str,
}

impl Ui {
    pub(crate) async fn goto(&self, url: &str) {
        self.driver.goto(url).await.unwrap();
    }

    pub(crate) async fn find(&self, css: &str) -> WebElement {
        self.driver
            .query(By::Css(css))
            .wait(WAIT, Duration::from_millis(50))
            .first()
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
    }

    pub(crate) async fn all(&self, css: &str) -> Vec<WebElement> {
        self.driver.find_all(By::Css(css)).await.unwrap()
    }

    pub(crate) async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    pub(crate) async fn click(&self, css: &str) {
        let element = self.find(css).await;
        element.scroll_into_view().await.unwrap();
        element.click().await.unwrap();
    }

    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let input = self.find(css).await;
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    pub(crate) async fn value(&self, css: &str) -> String {
        self.find(css).await.value().await.unwrap().unwrap_or_default()
    }

    pub(crate) async fn source(&self) -> String {
        self.driver.source().await.unwrap()
    }

    pub(crate) async fn heading(&self) -> String {
        self.text("h1").await
    }

    /// Waits until the text of `css` contains `wanted` (the page may update itself).
    pub(crate) async fn wait_for_text(&self, css: &str, wanted: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let texts = self.texts(css).await;
            if let Some(found) = texts.iter().find(|t| t.contains(wanted)) {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no `{css}` containing `{wanted}`; saw {texts:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for element in self.all(css).await {
            out.push(element.text().await.unwrap_or_default());
        }
        out
    }

    /// Waits until exactly `n` elements match `css`.
    pub(crate) async fn wait_for_count(&self, css: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let count = self.all(css).await.len();
            if count == n {
                return;
            }
            assert!(Instant::now() < deadline, "{count} of `{css}`, expected {n}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn script(&self, js: &str) -> Value {
        self.driver.execute(js, Vec::new()).await.unwrap().json().clone()
    }

    pub(crate) async fn resize(&self, width: u32, height: u32) {
        self.driver.set_window_rect(0, 0, width, height).await.unwrap();
    }

    /// The page's WCAG 2 A and AA violations as axe-core reports them, one
    /// line each (rule, then the elements). axe-core's script comes from
    /// npm's `axe-core` package at `HERALD_TEST_AXE_JS` (`.ci/run` installs
    /// it); without it the check says why and passes, unless
    /// `HERALD_TEST_REQUIRE_ALL=1`.
    pub(crate) async fn accessibility_violations(&self) -> Vec<String> {
        let Some(axe) = axe_script() else {
            return Vec::new();
        };
        self.driver.execute(&axe, Vec::new()).await.unwrap();
        let found = self
            .driver
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                   axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}})
                     .then(r => done(r.violations.map(v => v.id + " (" + v.impact + "): " +
                         v.nodes.map(n => n.target.join(" ")).join(", "))))
                     .catch(e => done(["axe failed: " + e]));"#,
                Vec::new(),
            )
            .await
            .unwrap();
        serde_json::from_value(found.json().clone()).unwrap()
    }

    /// Saves `target/ui-screenshots/<test>-<name>.png`.
    pub(crate) async fn shot(&self, name: &str) {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        self.driver
            .screenshot(&dir.join(format!("{}-{name}.png", self.test)))
            .await
            .unwrap();
    }
}

/// axe-core's script, or `None` when it is not installed and not required.
fn axe_script() -> Option<String> {
    let path = std::env::var("HERALD_TEST_AXE_JS").ok();
    let script = path.as_deref().and_then(|p| std::fs::read_to_string(p).ok());
    if script.is_none() {
        let why = format!(
            "axe-core is not at HERALD_TEST_AXE_JS ({path:?}); npm install axe-core and point it at axe.min.js"
        );
        if std::env::var("HERALD_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
            panic!("{why}, and HERALD_TEST_REQUIRE_ALL=1");
        }
        eprintln!("skipping the accessibility check: {why}");
    }
    script
}

fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots")
}

/// A meeting.completed publish whose meeting name is `name`.
fn named_meeting(team: &TestTeam, meeting_id: &str, name: &str) -> Value {
    let mut event = meeting_event(team, meeting_id);
    event["data"]["meeting"]["name"] = json!(name);
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_sign_in_works_once_keeps_teams_apart_refuses_csrf_and_signs_out() {
    let app = spawn_app().await;
    let (clock, time) = herald_engine::Clock::manual(herald_engine::now_ms());
    let short = spawn_app_with(|c| c.clock = clock).await;
    let team = app.create_team().await;
    let other = app.create_team().await;
    let theirs = app.create_webhook(&other, "http://127.0.0.1:9/theirs").await;
    let link = app.dashboard_link(&team).await;
    let short_team = short.create_team().await;
    let expired = short.dashboard_link(&short_team).await;
    with_browser("sign-in", |ui| async move {
        ui.goto(&link).await;
        ui.wait_for_text("h1", "Webhooks").await;
        assert!(ui.text(".team-name").await.contains("Recruiting"));
        ui.find(".empty-state").await;
        ui.shot("empty-webhooks").await;

        ui.goto(&link).await;
        ui.wait_for_text("h1", "This sign-in link cannot be used").await;
        ui.shot("used-link").await;
        time.fetch_add(15 * 60_000 + 1, std::sync::atomic::Ordering::Relaxed);
        ui.goto(&expired).await;
        ui.wait_for_text("h1", "This sign-in link cannot be used").await;

        // Still signed in to the first team, which cannot see the other's webhook.
        ui.goto(&app.url(&format!("/webhooks/{}", theirs["id"].as_str().unwrap())))
            .await;
        ui.wait_for_text("h1", "Not found").await;
        ui.shot("other-team-404").await;

        // A POST from the page without the token is refused; with it, it works.
        ui.goto(&app.url("/webhooks")).await;
        let status = ui
            .script(
                "var x = new XMLHttpRequest(); x.open('POST', '/sign-out', false); \
                 x.setRequestHeader('content-type', 'application/x-www-form-urlencoded'); x.send(''); return x.status;",
            )
            .await;
        assert_eq!(status, json!(403));
        ui.wait_for_text("h1", "Webhooks").await; // still signed in

        ui.click("#sign-out").await;
        ui.wait_for_text("h1", "You are signed out").await;
        ui.shot("signed-out").await;
        ui.goto(&app.url("/webhooks")).await;
        ui.wait_for_text("h1", "You are signed out").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_create_webhook_shows_errors_by_the_fields_then_lists_and_toggles_it() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let link = app.dashboard_link(&team).await;
    let target = receiver.url("/crm?token=s3cr3t-value&tenant=acme");
    with_browser("create", |ui| async move {
        ui.goto(&link).await;
        ui.click("#create-webhook").await;
        ui.wait_for_text("h1", "Create webhook").await;
        assert!(ui.find("input[name=eventTypes]").await.is_selected().await.unwrap());

        // Bad input: every reason next to its field, and what was typed kept.
        ui.type_into("#name", "   ").await;
        ui.type_into("#url", "ftp://files.example.com/drop").await;
        ui.click("input[name=eventTypes]").await;
        ui.click("#submit-webhook").await;
        assert_eq!(ui.text("#name-error").await, "Must not be empty.");
        assert_eq!(ui.text("#url-error").await, "Must use https.");
        assert_eq!(ui.text("#eventTypes-error").await, "Select at least one event type.");
        assert_eq!(ui.value("#url").await, "ftp://files.example.com/drop");
        ui.shot("validation-errors").await;

        ui.type_into("#name", "ATS sync").await;
        ui.type_into("#url", &target).await;
        ui.click("input[name=eventTypes]").await;
        ui.click("#submit-webhook").await;
        ui.wait_for_text("h1", "ATS sync").await;
        ui.wait_for_text(".notice", "Webhook created").await;

        ui.click(".crumbs a").await;
        let row = "#webhooks tbody tr";
        let cells = ui.texts(&format!("{row} td")).await;
        assert_eq!(cells[0], "ATS sync");
        assert_eq!(cells[1], "meeting.completed");
        assert!(cells[2].ends_with("/crm?token=•••&tenant=•••"), "{}", cells[2]);
        assert_eq!(cells[3], "Active");
        assert!(
            !ui.source().await.contains("s3cr3t-value"),
            "query values never reach the page"
        );
        ui.shot("list").await;

        ui.click(&format!("{row} .toggle-status")).await;
        ui.wait_for_text(".notice", "Webhook deactivated").await;
        assert_eq!(ui.texts(&format!("{row} td")).await[3], "Deactivated");
        let (_, listed) = app.get("/api/v1/webhooks", &team.key).await;
        assert_eq!(listed["data"][0]["status"], "deactivated");
        // Deactivated means nothing is delivered.
        app.publish(meeting_event(&team, "while-off")).await;
        receiver.assert_quiet(Duration::from_millis(500)).await;
        ui.shot("deactivated").await;
        ui.resize(390, 844).await;
        ui.shot("list-phone").await;
        ui.resize(1280, 900).await;

        ui.click(&format!("{row} .toggle-status")).await;
        ui.wait_for_text(".notice", "Webhook activated").await;
        assert_eq!(ui.texts(&format!("{row} td")).await[3], "Active");
        app.publish(meeting_event(&team, "while-on")).await;
        let got = receiver.next(WAIT).await.expect("delivered once active again");
        assert!(
            got.path_and_query.contains("token=s3cr3t-value"),
            "sent to the exact URL"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_detail_reveals_the_secret_and_the_live_log_shows_retrying_then_failed_and_inspect() {
    let app = spawn_app_with(|c| {
        c.standard_retry = RetryPolicy::Standard {
            delays: vec![Duration::from_millis(1_200); 4],
        }
    })
    .await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(503));
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/down?key=abc")).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    let refused = app.create_webhook(&team, "http://127.0.0.1:9/refused").await;
    let refused_id = refused["id"].as_str().unwrap().to_owned();
    let link = app.dashboard_link(&team).await;
    with_browser("detail", |ui| async move {
        ui.goto(&link).await;
        ui.goto(&app.url(&format!("/webhooks/{id}"))).await;
        assert!(!ui.source().await.contains(&secret), "not in the page until revealed");
        assert!(ui.text("#config-url").await.ends_with("/down?key=•••"));
        assert_eq!(ui.text("#config-event-types").await, "meeting.completed");
        assert_eq!(ui.text("#config-status").await, "Active");
        ui.click("#reveal-secret").await;
        ui.wait_for_text("#secret-value", "whsec_").await;
        assert_eq!(ui.text("#secret-value").await, secret);
        ui.shot("secret-revealed").await;
        ui.click("#reveal-secret").await;
        assert!(!ui.text("#secret-value").await.contains("whsec_"), "hidden again");

        // New attempts appear without a reload: Retrying first, then Failed.
        ui.find("#log-empty").await;
        let (_, event) = app.publish(meeting_event(&team, "m-down")).await;
        let event_id = event["id"].as_str().unwrap().to_owned();
        ui.wait_for_text("#log tbody tr", "Retrying").await;
        assert!(!ui.texts("#log tbody tr").await.iter().any(|t| t.contains("Failed")));
        ui.shot("log-retrying").await;
        ui.wait_for_count("#log tbody tr", 5).await;
        let rows = ui.texts("#log tbody tr").await;
        assert!(
            rows[0].contains("Failed") && rows[0].contains("Attempt 5 · HTTP 503"),
            "{rows:?}"
        );
        assert!(rows[1..].iter().all(|r| r.contains("Retrying")), "{rows:?}");
        assert!(
            rows.iter()
                .all(|r| r.contains(&event_id) && r.contains("meeting.completed"))
        );
        let stamp = ui.text("#log tbody tr time").await;
        assert!(
            stamp.contains("UTC") || stamp.contains("GMT"),
            "a time zone is shown: {stamp}"
        );
        ui.shot("log-failed").await;
        ui.resize(390, 844).await;
        ui.shot("detail-phone").await;
        ui.find("#log").await.scroll_into_view().await.unwrap();
        ui.shot("log-phone").await;
        ui.resize(1280, 900).await;

        ui.click("#log tbody tr .inspect").await;
        assert!(ui.heading().await.starts_with("Attempt 5 of"));
        assert!(ui.text("#request").await.contains("/down?key=•••"));
        let request = ui.text("#request").await;
        for header in ["webhook-id", "webhook-timestamp", "webhook-signature", "content-type"] {
            assert!(request.contains(header), "{header} shown");
        }
        let body = ui.text("#request-body").await;
        assert!(
            body.contains("\"eventType\": \"meeting.completed\""),
            "pretty-printed: {body}"
        );
        assert!(body.contains(&format!("\"id\": \"{event_id}\"")));
        assert!(body.lines().count() > 10, "indented over many lines");
        assert_eq!(ui.text("#response-status").await, "503");
        assert_eq!(ui.text("#response-body").await, "receiver says hi");
        ui.shot("inspect-503").await;

        // An attempt that got no answer shows the error instead.
        app.publish(meeting_event(&team, "m-refused")).await;
        ui.goto(&app.url(&format!("/webhooks/{refused_id}"))).await;
        ui.wait_for_text("#log tbody tr", "connection failed").await;
        ui.click("#log tbody tr .inspect").await;
        assert!(ui.text("#response-error").await.contains("connection failed"));
        ui.shot("inspect-error").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_log_filters_by_status_and_event_and_pages_with_a_cursor() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    receiver.answer_always(Answer::Status(500));
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/flaky")).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    let (_, first) = app.publish(meeting_event(&team, "m1")).await;
    app.publish(meeting_event(&team, "m2")).await;
    app.wait_for_attempts(&team, &id, 10, WAIT).await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    let link = app.dashboard_link(&team).await;
    with_browser("filters", |ui| async move {
        ui.goto(&link).await;
        ui.goto(&app.url(&format!("/webhooks/{id}?limit=4"))).await;
        let mut seen = Vec::new();
        for expected in [4, 4, 2] {
            ui.wait_for_count("#log tbody tr", expected).await;
            for row in ui.all("#log tbody tr").await {
                seen.push(row.attr("data-id").await.unwrap().unwrap());
            }
            if expected == 4 {
                ui.click("#older-link").await;
            }
        }
        ui.shot("last-page").await;
        assert!(
            !ui.find("#older-link").await.is_displayed().await.unwrap(),
            "no page after the last"
        );
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10, "every attempt exactly once across the pages");
        ui.click("#newest-link").await;
        ui.wait_for_count("#log tbody tr", 4).await;

        ui.click("#filter-status option[value=failed]").await;
        ui.click("#apply-filters").await;
        ui.wait_for_count("#log tbody tr", 2).await;
        assert!(ui.texts("#log tbody tr").await.iter().all(|r| r.contains("Failed")));
        ui.shot("filter-failed").await;

        ui.click("#filter-status option[value='']").await;
        ui.type_into("#filter-event", &first_id).await;
        ui.click("#apply-filters").await;
        ui.wait_for_count("#log tbody tr", 4).await;
        ui.click("#older-link").await;
        ui.wait_for_count("#log tbody tr", 1).await;
        assert!(ui.texts("#log tbody tr").await.iter().all(|r| r.contains(&first_id)));
        assert_eq!(
            ui.value("#filter-event").await,
            first_id,
            "the filter is kept while paging"
        );

        ui.type_into("#filter-event", "not an id").await;
        ui.click("#apply-filters").await;
        assert!(ui.text("#filter-error").await.contains("visible ASCII"));
        ui.wait_for_count("#log tbody tr", 0).await;
        ui.click("#clear-filters").await;
        ui.wait_for_count("#log tbody tr", 10).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_resend_from_the_log_and_a_test_event_are_delivered_and_marked_manual() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let webhook = app.create_webhook(&team, &receiver.url("/main")).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    app.create_webhook(&team, &receiver.url("/bystander")).await;
    let (_, event) = app.publish(meeting_event(&team, "m1")).await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    let original = [receiver.next(WAIT).await.unwrap(), receiver.next(WAIT).await.unwrap()];
    let original = original.iter().find(|r| r.path_and_query == "/main").unwrap().clone();
    app.wait_for_attempts(&team, &id, 1, WAIT).await;
    let link = app.dashboard_link(&team).await;
    with_browser("resend", |ui| async move {
        ui.goto(&link).await;
        ui.goto(&app.url(&format!("/webhooks/{id}"))).await;
        ui.wait_for_count("#log tbody tr", 1).await;
        assert!(ui.all(".tag-manual").await.is_empty());
        ui.click("#log tbody tr .resend").await;
        ui.wait_for_text(".notice", "Event resent").await;
        let resent = receiver.next(WAIT).await.expect("resent delivery");
        assert_eq!(resent.path_and_query, "/main");
        assert_eq!(resent.header("webhook-id"), event_id);
        assert_eq!(resent.body, original.body, "identical body");
        ui.wait_for_count("#log tbody tr", 2).await;
        let rows = ui.texts("#log tbody tr").await;
        assert!(
            rows[0].to_lowercase().contains("manual") && rows[0].contains(&event_id),
            "{rows:?}"
        );
        assert!(!rows[1].to_lowercase().contains("manual"));
        assert_eq!(ui.all("#log tbody tr:first-child .tag-manual").await.len(), 1);
        ui.shot("resent").await;

        ui.click("#send-test-event").await;
        ui.wait_for_text(".notice", "Test event sent").await;
        let test = receiver.next(WAIT).await.expect("test event");
        assert_eq!(test.path_and_query, "/main", "only to this webhook");
        let body: Value = serde_json::from_slice(&test.body).unwrap();
        assert_eq!(body["eventType"], "meeting.completed");
        assert_eq!(body["data"]["organization"]["teamId"], team.team_id.as_str());
        assert_eq!(body["data"]["organization"]["accountId"], team.account_id.as_str());
        assert_eq!(test.header("webhook-id"), body["id"].as_str().unwrap());
        receiver.assert_quiet(Duration::from_millis(300)).await;
        ui.wait_for_count("#log tbody tr", 3).await;
        let rows = ui.texts("#log tbody tr").await;
        assert!(rows[0].contains(body["id"].as_str().unwrap()) && rows[0].to_lowercase().contains("manual"));
        ui.shot("test-event").await;

        // Resend also from Inspect.
        ui.click("#log tbody tr:last-child .inspect").await;
        ui.click("#resend").await;
        ui.wait_for_text(".notice", "Event resent").await;
        assert_eq!(receiver.next(WAIT).await.unwrap().header("webhook-id"), event_id);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_bots_page_lists_real_time_endpoints_with_status_and_their_logs() {
    let app = spawn_app_with(|c| {
        c.realtime_retry = RetryPolicy::Realtime {
            interval: Duration::from_millis(100),
            max_retries: 2,
        }
    })
    .await;
    let receiver = TestReceiver::start().await;
    receiver.answer_path("/rt-down", Answer::Status(503));
    let team = app.create_team().await;
    let bot = app
        .create_bot(
            &team,
            &[
                (
                    receiver.url("/rt-ok?token=tok-ok-123"),
                    &["participant_events.join"][..],
                ),
                (
                    receiver.url("/rt-down?token=tok-down-456"),
                    &["participant_events.join", "transcript.data"][..],
                ),
            ],
        )
        .await;
    let bot_id = bot["id"].as_str().unwrap().to_owned();
    let endpoints = bot["recording_config"]["realtime_endpoints"]
        .as_array()
        .unwrap()
        .clone();
    let down = endpoints
        .iter()
        .position(|e| e["url"].as_str().unwrap().contains("rt-down"))
        .unwrap();
    let down_id = endpoints[down]["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .bot_events(
            &bot_id,
            &[(
                "participant_events.join",
                json!({"participant": {"id": 7, "name": "Ada"}}),
            )],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, now) = app.get(&format!("/api/v1/bot/{bot_id}"), &team.key).await;
        let endpoints = now["recording_config"]["realtime_endpoints"].as_array().unwrap();
        if endpoints
            .iter()
            .any(|e| e["id"] == down_id.as_str() && e["status"] == "failed")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the endpoint did not fail: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let link = app.dashboard_link(&team).await;
    with_browser("bots", |ui| async move {
        ui.goto(&link).await;
        ui.click(".nav-link[href='/bots']").await;
        ui.wait_for_text("h1", "Bots").await;
        let card = ui.text(".bot-card").await;
        assert!(card.contains(&bot_id));
        let rows = ui.texts(".endpoints-table tbody tr").await;
        assert_eq!(rows.len(), 2);
        let ok = rows
            .iter()
            .find(|r| r.contains("/rt-ok?token=•••"))
            .expect("the healthy endpoint");
        let failed = rows
            .iter()
            .find(|r| r.contains("/rt-down?token=•••"))
            .expect("the failed endpoint");
        assert!(ok.contains("Active") && !ok.contains("Failed"), "{ok}");
        assert!(
            failed.contains("Failed") && failed.contains("transcript.data"),
            "{failed}"
        );
        let source = ui.source().await;
        assert!(!source.contains("tok-ok-123") && !source.contains("tok-down-456"));
        assert!(
            !source.contains("Deactivate") && !source.contains("Create webhook"),
            "read-only"
        );
        ui.shot("bots").await;
        ui.resize(390, 844).await;
        ui.shot("bots-phone").await;
        ui.resize(1280, 900).await;

        ui.click(&format!(".endpoints-table tr[data-id='{down_id}'] a")).await;
        ui.wait_for_text("h1", "Real-time endpoint").await;
        assert_eq!(ui.text("#config-status").await, "Failed");
        ui.wait_for_count("#log tbody tr", 3).await;
        let log = ui.texts("#log tbody tr").await;
        assert!(log[0].contains("Failed") && log[1].contains("Retrying"), "{log:?}");
        assert!(
            ui.all("#log .resend").await.is_empty(),
            "no resend for real-time endpoints"
        );
        ui.shot("endpoint-log").await;
        ui.click("#log tbody tr .inspect").await;
        assert_eq!(ui.text("#response-status").await, "503");
        assert!(ui.text("#request-body").await.contains("\"realtime_endpoint\""));
        ui.shot("endpoint-inspect").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_script_in_a_name_or_a_payload_renders_as_text() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start().await;
    let team = app.create_team().await;
    let evil_name = "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2\">";
    let (status, webhook) = app
        .post(
            "/api/v1/webhooks",
            &team.key,
            json!({"name": evil_name, "url": receiver.url("/x"), "eventTypes": ["meeting.completed"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = webhook["id"].as_str().unwrap().to_owned();
    let evil_meeting = "</pre><script>window.__xss = 3</script>";
    app.publish(named_meeting(&team, "m-xss", evil_meeting)).await;
    app.wait_for_attempts(&team, &id, 1, WAIT).await;
    let link = app.dashboard_link(&team).await;
    with_browser("xss", |ui| async move {
        ui.goto(&link).await;
        assert_eq!(ui.text("#webhooks tbody tr td").await, evil_name, "shown as typed");
        assert!(
            ui.source()
                .await
                .contains("&lt;script&gt;window.__xss = 1&lt;/script&gt;")
        );
        assert_eq!(ui.script("return typeof window.__xss").await, json!("undefined"));
        ui.shot("list").await;

        ui.click("#webhooks tbody tr td a").await;
        ui.wait_for_text("h1", evil_name).await;
        // Rows added by the live log are built with textContent too.
        app.publish(named_meeting(&team, "m-xss-2", evil_meeting)).await;
        ui.wait_for_count("#log tbody tr", 2).await;
        ui.click("#log tbody tr .inspect").await;
        assert!(ui.text("#request-body").await.contains(evil_meeting));
        assert_eq!(ui.script("return typeof window.__xss").await, json!("undefined"));
        assert_eq!(ui.all("#request-body script").await.len(), 0);
        ui.shot("inspect").await;
    })
    .await;
}

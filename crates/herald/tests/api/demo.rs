//! `herald demo` as a person runs it: the real binary in its own process,
//! with no settings but a free port. The sign-in link it prints opens the
//! dashboard, both webhooks show attempts through the API within 15 s, and
//! Ctrl-C ends it with 0 and deletes its store.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};
use serde_json::Value;

use crate::process::{collect_lines, get};

/// The demo's process, killed (and its store deleted) if the test fails first.
struct Demo {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    store: Option<PathBuf>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(store) = &self.store {
            let _ = std::fs::remove_dir_all(store);
        }
    }
}

impl Demo {
    fn start(cwd: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["demo", "--listen", "127.0.0.1:0"])
            .current_dir(cwd)
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start herald demo");
        let stdout = collect_lines(child.stdout.take().expect("stdout"));
        let stderr = collect_lines(child.stderr.take().expect("stderr"));
        Self {
            child,
            stdout,
            stderr,
            store: None,
        }
    }

    /// The first word after `label` on the line the demo printed it on.
    fn printed(&self, label: &str) -> Option<String> {
        self.stdout.lock().unwrap().iter().find_map(|line| {
            let rest = line.trim_start().strip_prefix(label)?.strip_prefix(' ')?;
            rest.split_whitespace().next().map(str::to_owned)
        })
    }

    fn stdout_has(&self, wanted: impl Fn(&str) -> bool) -> bool {
        self.stdout.lock().unwrap().iter().any(|line| wanted(line))
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }
}

#[tokio::test]
async fn herald_demo_signs_in_delivers_to_both_webhooks_and_ctrl_c_deletes_its_store() {
    let cwd = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(cwd.path());

    let started = Instant::now();
    let [base, link, admin_key, team_key, store] = loop {
        let fields = ["server", "dashboard", "admin key", "team key", "store"].map(|label| demo.printed(label));
        if fields.iter().all(Option::is_some) {
            break fields.map(Option::unwrap);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the demo printed no link and keys\n{}",
            demo.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    demo.store = Some(PathBuf::from(&store));
    let printed = Instant::now();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert!(link.starts_with(&format!("{base}/sign-in?token=")), "{link}");
    assert!(team_key.starts_with("hk_"), "{team_key}");
    assert!(PathBuf::from(&store).join("herald.db").exists(), "{store}");
    assert!(
        demo.stdout_has(|l| l.contains("curl") && l.contains(&team_key) && l.contains(&base)),
        "curl lines with the real base URL and keys\n{}",
        demo.output()
    );
    assert!(demo.stdout_has(|l| l.contains("curl") && l.contains(&admin_key) && l.contains("/api/v1/events")));

    // The link signs in: a redirect with a session cookie, then the dashboard.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = browser.get(&link).send().await.unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let location = signed_in.headers()[LOCATION].to_str().unwrap().to_owned();
    let cookie = signed_in.headers()[SET_COOKIE].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("herald_session="), "{cookie}");
    let page = browser
        .get(format!("{base}{location}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("Healthy receiver") && page.contains("Failing receiver"),
        "{page}"
    );

    // Both webhooks show attempts through the API, with the team key.
    let client = reqwest::Client::new();
    let (status, webhooks) = get(&client, format!("{base}/api/v1/webhooks"), &team_key).await;
    assert_eq!(status, StatusCode::OK, "{webhooks}");
    let id_of = |path: &str| {
        webhooks["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["url"].as_str().unwrap().ends_with(path))
            .unwrap_or_else(|| panic!("no webhook to {path}: {webhooks}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (healthy, failing) = (id_of("/healthy"), id_of("/failing"));
    let attempts = |id: String| {
        let (client, url, key) = (
            client.clone(),
            format!("{base}/api/v1/webhooks/{id}/attempts"),
            team_key.clone(),
        );
        async move {
            let (status, page) = get(&client, url, &key).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            page["data"].as_array().unwrap().clone()
        }
    };
    let answered = |attempts: &[Value], statuses: &[&str], code: u64| {
        attempts
            .iter()
            .any(|a| statuses.contains(&a["status"].as_str().unwrap()) && a["response"]["status"] == code)
    };
    loop {
        let succeeded = answered(&attempts(healthy.clone()).await, &["success"], 200);
        let failed = answered(&attempts(failing.clone()).await, &["retrying", "failed"], 500);
        let realtime = demo.stdout_has(|l| l.trim_start().starts_with("/realtime") && l.contains(" 200 "));
        let checked = demo.stdout_has(|l| l.trim_start().starts_with("/healthy") && l.contains("signature ok"));
        if succeeded && failed && realtime && checked {
            break;
        }
        assert!(
            printed.elapsed() < Duration::from_secs(15),
            "within 15 s: healthy succeeded {succeeded}, failing failed {failed}, real-time delivered {realtime}, signature checked {checked}\n{}",
            demo.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Ctrl-C: exit 0, the store deleted, nothing left where it ran.
    let pid = rustix::process::Pid::from_raw(demo.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = demo.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "the demo did not stop\n{}",
            demo.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}\n{}", demo.output());
    assert!(!PathBuf::from(&store).exists(), "{store} is still there");
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "written where it ran"
    );
    // The reader threads see the pipes close with the process.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !demo.stdout_has(|l| l.starts_with("deleted ")) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        demo.stdout_has(|l| l == format!("deleted {store}")),
        "{}",
        demo.output()
    );
    assert!(
        !demo.stderr.lock().unwrap().iter().any(|l| l.contains("ERROR")),
        "{}",
        demo.output()
    );
}

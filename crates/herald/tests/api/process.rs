//! The real `herald` binary in its own process, for the tests that kill it
//! or run several: start it on the test's store, wait until ready, kill it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, TestData, TestTeam};

pub struct Server {
    pub child: Child,
    pub base: String,
    pub stdout_lines: Arc<Mutex<Vec<String>>>,
    /// Its log, line by line.
    pub stderr_lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The name this process uses in leases, from its `/metrics`.
    pub async fn node(&self) -> String {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("herald_node_info"))
            .expect("node info");
        line.split('"').nth(1).expect("node name").to_owned()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

/// Starts the real binary on the test's store. On SQLite no database URL is
/// given, so the default (a file in the working directory) is what runs.
pub async fn start_server(data: &TestData, admin_key: Option<&str>) -> Server {
    start_server_with(data, admin_key, &[]).await
}

/// Starts the binary on `127.0.0.1:0` (the system picks a free port, so no
/// other process can take it first) and reads the bound address from the
/// line it prints on stdout.
pub async fn start_server_with(data: &TestData, admin_key: Option<&str>, env: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.arg("serve")
        .current_dir(data.dir.path())
        .env("HERALD_LISTEN", "127.0.0.1:0")
        .env("HERALD_ALLOW_INSECURE_TARGETS", "1")
        .env("HERALD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match &data.postgres {
        Some(pg) => cmd.env("HERALD_DATABASE_URL", &pg.url),
        None => cmd.env_remove("HERALD_DATABASE_URL"),
    };
    match admin_key {
        Some(key) => cmd.env("HERALD_ADMIN_KEY", key),
        None => cmd.env_remove("HERALD_ADMIN_KEY"),
    };
    for (name, value) in env {
        cmd.env(name, value);
    }
    let mut child = cmd.spawn().expect("start herald");
    let stdout_lines = collect_lines(child.stdout.take().expect("stdout"));
    let stderr_lines = collect_lines(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let base = loop {
        let listening = stdout_lines
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.strip_prefix("listening on ").map(str::to_owned));
        if let Some(base) = listening {
            break base;
        }
        assert!(Instant::now() < deadline, "herald printed no address");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            break;
        }
        assert!(Instant::now() < deadline, "herald did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Server {
        child,
        base,
        stdout_lines,
        stderr_lines,
    }
}

pub async fn post(client: &reqwest::Client, url: String, key: &str, body: &Value) -> (StatusCode, Value) {
    let r = client
        .post(url)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn get(client: &reqwest::Client, url: String, key: &str) -> (StatusCode, Value) {
    let r = client.get(url).bearer_auth(key).send().await.expect("request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Sets up an account, team, key and webhook through `base`.
pub async fn setup(client: &reqwest::Client, base: &str, webhook_url: &str) -> (TestTeam, String) {
    let (_, account) = post(
        client,
        format!("{base}/api/v1/accounts"),
        ADMIN_KEY,
        &json!({"name": "a"}),
    )
    .await;
    let account_id = account["id"].as_str().unwrap().to_owned();
    let (_, team) = post(
        client,
        format!("{base}/api/v1/accounts/{account_id}/teams"),
        ADMIN_KEY,
        &json!({"name": "t"}),
    )
    .await;
    let team_id = team["id"].as_str().unwrap().to_owned();
    let (_, key) = post(
        client,
        format!("{base}/api/v1/teams/{team_id}/keys"),
        ADMIN_KEY,
        &json!({}),
    )
    .await;
    let team = TestTeam {
        account_id,
        team_id,
        key: key["key"].as_str().unwrap().to_owned(),
    };
    let (status, webhook) = post(
        client,
        format!("{base}/api/v1/webhooks"),
        &team.key,
        &json!({"name": "cluster", "url": webhook_url, "eventTypes": ["meeting.completed"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    (team, webhook["id"].as_str().unwrap().to_owned())
}

/// Collects what a child writes to one of its pipes, line by line.
pub fn collect_lines(from: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            collected.lock().unwrap().push(line);
        }
    });
    lines
}

//! The real binary in its own process: the admin key printed once, and
//! `kill -9` during a publish burst loses no accepted event.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;
use crate::process::*;

on_every_store! {
async fn a_new_store_prints_its_generated_admin_key_once() {
    let data = TestData::new().await;
    let server = start_server(&data, None).await;
    // The reader thread may not have the line yet when the server is ready.
    let printed = Instant::now();
    let key = loop {
        let found = server.stdout_lines.lock().unwrap().iter().find(|l| l.starts_with("hadm_")).cloned();
        if let Some(key) = found {
            break key;
        }
        assert!(printed.elapsed() < Duration::from_secs(5), "the key is printed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let client = reqwest::Client::new();
    let (status, _) = post(
        &client,
        format!("{}/api/v1/accounts", server.base),
        &key,
        &json!({"name": "a"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    if data.postgres.is_none() {
        assert!(data.dir.path().join("herald.db").exists(), "SQLite file in the working directory");
    }
    drop(server);

    let server = start_server(&data, None).await;
    let (status, _) = post(
        &client,
        format!("{}/api/v1/accounts", server.base),
        &key,
        &json!({"name": "b"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "the key still works after a restart");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lines = server.stdout_lines.lock().unwrap();
    assert!(
        !lines.iter().any(|l| l.contains("hadm_")),
        "printed only once: {lines:?}"
    );
}
}

on_every_store! {
async fn kill_9_during_a_publish_burst_loses_no_accepted_event() {
    let data = TestData::new().await;
    let receiver = TestReceiver::start().await;
    let server = start_server(&data, Some(ADMIN_KEY)).await;
    let client = reqwest::Client::new();
    let base = server.base.clone();

    let (team, _) = setup(&client, &base, &receiver.url("/crash")).await;

    // Eight publishers in parallel; the server is killed while they run.
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let mut publishers = Vec::new();
    for p in 0..8 {
        let (client, base, accepted) = (client.clone(), base.clone(), Arc::clone(&accepted));
        let event = meeting_event(&team, &format!("p{p}"));
        publishers.push(tokio::spawn(async move {
            for i in 0.. {
                let mut body = event.clone();
                body["id"] = json!(format!("evt_crash_{p}_{i}"));
                match client
                    .post(format!("{base}/api/v1/events"))
                    .bearer_auth(ADMIN_KEY)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => {
                        accepted.lock().unwrap().insert(format!("evt_crash_{p}_{i}"));
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }));
    }
    let burst_start = Instant::now();
    while accepted.lock().unwrap().len() < 500 && burst_start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut server = server;
    server.child.kill().expect("kill -9");
    server.child.wait().unwrap();
    for p in publishers {
        let _ = p.await;
    }
    let accepted: HashSet<String> = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 500, "the burst was under way: {}", accepted.len());

    let _restarted = start_server(&data, Some(ADMIN_KEY)).await;
    let mut missing = accepted.clone();
    let mut received = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = receiver
            .next(left)
            .await
            .unwrap_or_else(|| panic!("{} accepted events never arrived", missing.len()));
        received += 1;
        missing.remove(got.header("webhook-id"));
    }
    println!(
        "kill -9: {} events accepted before the kill, all delivered; {} deliveries seen ({} duplicates at most)",
        accepted.len(),
        received,
        received.saturating_sub(accepted.len())
    );
}
}

//! Several `herald serve` processes on one PostgreSQL database: they share
//! the work, a killed node loses nothing, real-time order survives the node
//! that owned the endpoint, a live node keeps all its claims, deactivation,
//! secret rotation and idempotency hold across nodes,
//! and the database going away is answered with 503 and recovered from.
//! These run on PostgreSQL only.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::process::*;
use crate::stores::Backend;

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn three_nodes_share_the_work_and_losing_one_loses_nothing() {
    let Some(backend) = Backend::postgres() else { return };
    backend
        .run(async {
            let data = TestData::new().await;
            let receiver = TestReceiver::start().await;
            receiver.answer_path("/rt", Answer::Status(500));
            let env = [("HERALD_LEASE_MS", "3000"), ("HERALD_ATTEMPT_TIMEOUT_MS", "2000")];
            let mut nodes = Vec::new();
            for _ in 0..3 {
                nodes.push(start_server_with(&data, Some(ADMIN_KEY), &env).await);
            }
            let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
            let client = reqwest::Client::new();
            let (team, _) = setup(&client, &bases[0], &receiver.url("/wh")).await;
            let (status, bot) = post(
                &client,
                format!("{}/api/v1/bot/", bases[0]),
                &team.key,
                &json!({"meeting_url": "https://meet.google.com/abc",
                        "recording_config": {"realtime_endpoints": [{"type": "webhook", "url": receiver.url("/rt"), "events": ["transcript.data"]}]}}),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED);
            let bot_id = bot["id"].as_str().unwrap().to_owned();

            // Real-time events in production order, through all three nodes.
            for n in 0..50u64 {
                let base = &bases[n as usize % 3];
                let (status, _) = post(
                    &client,
                    format!("{base}/api/v1/bot/{bot_id}/events"),
                    ADMIN_KEY,
                    &json!({"event": "transcript.data", "data": {"n": n}}),
                )
                .await;
                assert_eq!(status, StatusCode::ACCEPTED);
            }
            // The head is being retried by whichever node claimed the endpoint: find it.
            let db = pg_client(&data.postgres.as_ref().unwrap().url).await;
            let owner = loop {
                let rows = db
                    .query("SELECT DISTINCT locked_by FROM deliveries WHERE ordered AND locked_by IS NOT NULL", &[])
                    .await
                    .unwrap();
                if let Some(row) = rows.first() {
                    break row.get::<_, String>(0);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let mut victim = None;
            for (i, node) in nodes.iter().enumerate() {
                if node.node().await == owner {
                    victim = Some(i);
                }
            }
            let victim = victim.expect("the owner is one of the three");

            // 10,000 webhook events round-robin; the owner dies halfway.
            let accepted = Arc::new(Mutex::new(HashSet::new()));
            let attempted = Arc::new(AtomicUsize::new(0));
            let mut publishers = Vec::new();
            for p in 0..16usize {
                let (client, bases, accepted, attempted) =
                    (client.clone(), bases.clone(), Arc::clone(&accepted), Arc::clone(&attempted));
                let template = meeting_event(&team, "cluster");
                publishers.push(tokio::spawn(async move {
                    for i in (p..10_000).step_by(16) {
                        let mut body = template.clone();
                        let id = format!("evt_cluster_{i}");
                        body["id"] = json!(id);
                        let url = format!("{}/api/v1/events", bases[i % 3]);
                        attempted.fetch_add(1, Ordering::Relaxed);
                        if let Ok(r) = client.post(url).bearer_auth(ADMIN_KEY).json(&body).send().await
                            && r.status() == StatusCode::ACCEPTED
                        {
                            accepted.lock().unwrap().insert(id);
                        }
                    }
                }));
            }
            let started = Instant::now();
            while accepted.lock().unwrap().len() < 5_000 {
                assert!(started.elapsed() < Duration::from_secs(120), "the burst stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            nodes[victim].kill();
            receiver.answer_path("/rt", Answer::Status(204));
            for p in publishers {
                p.await.unwrap();
            }
            let accepted: HashSet<String> = accepted.lock().unwrap().clone();
            println!(
                "cluster: {} of {} publishes accepted in {:?} (node {victim} killed midway)",
                accepted.len(),
                attempted.load(Ordering::Relaxed),
                started.elapsed()
            );

            let mut missing = accepted.clone();
            let mut webhook_arrivals = 0usize;
            let mut realtime: Vec<u64> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(90);
            while !missing.is_empty() || realtime.last() != Some(&49) {
                let left = deadline.saturating_duration_since(Instant::now());
                let got = receiver.next(left).await.unwrap_or_else(|| {
                    panic!("{} accepted events missing; real-time got {:?}", missing.len(), realtime.last())
                });
                if got.path_and_query == "/rt" {
                    let v: Value = serde_json::from_slice(&got.body).unwrap();
                    realtime.push(v["data"]["data"]["n"].as_u64().unwrap());
                } else {
                    webhook_arrivals += 1;
                    missing.remove(got.header("webhook-id"));
                }
            }
            assert!(realtime.windows(2).all(|w| w[0] <= w[1]), "real-time order across the kill: {realtime:?}");
            let distinct: HashSet<u64> = realtime.iter().copied().collect();
            assert_eq!(distinct.len(), 50);
            println!(
                "cluster: every accepted event delivered; {} webhook deliveries for {} events ({} duplicates); \
                 real-time endpoint owned by the killed node got all 50 in order ({} attempts)",
                webhook_arrivals,
                accepted.len(),
                webhook_arrivals.saturating_sub(accepted.len()),
                realtime.len()
            );
        })
        .await;
}

/// A node keeps every claim it holds, however many (it renews them a chunk
/// at a time): 300 deliveries queued behind a webhook that never answers
/// are still leased to it three lease lengths later, none left to expire.
#[tokio::test]
async fn a_live_node_keeps_every_claim_it_holds() {
    let Some(backend) = Backend::postgres() else { return };
    backend
        .run(async {
            let data = TestData::new().await;
            let receiver = TestReceiver::start().await;
            receiver.answer_path("/wh", Answer::Hang);
            let env = [("HERALD_LEASE_MS", "1000"), ("HERALD_ATTEMPT_TIMEOUT_MS", "60000")];
            let node = start_server_with(&data, Some(ADMIN_KEY), &env).await;
            let client = reqwest::Client::new();
            let (team, _) = setup(&client, &node.base, &receiver.url("/wh")).await;
            for i in 0..300 {
                let mut body = meeting_event(&team, "renew");
                body["id"] = json!(format!("evt_renew_{i}"));
                let (status, _) = post(&client, format!("{}/api/v1/events", node.base), ADMIN_KEY, &body).await;
                assert_eq!(status, StatusCode::ACCEPTED);
            }
            tokio::time::sleep(Duration::from_millis(3_500)).await;
            let db = pg_client(&data.postgres.as_ref().unwrap().url).await;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let row = db
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE locked_until IS NULL OR locked_until < $1)
                     FROM deliveries WHERE state = 'pending'",
                    &[&now_ms],
                )
                .await
                .unwrap();
            let (pending, unheld): (i64, i64) = (row.get(0), row.get(1));
            assert_eq!(pending, 300);
            assert_eq!(unheld, 0, "every held delivery's lease was renewed");
        })
        .await;
}

#[tokio::test]
async fn deactivating_on_one_node_stops_attempts_on_every_node_within_a_second() {
    let Some(backend) = Backend::postgres() else { return };
    backend
        .run(async {
            let data = TestData::new().await;
            let receiver = TestReceiver::start().await;
            // 32 attempts at a time, a second each: 300 events take ~10 s.
            receiver.answer_always(Answer::Slow(204, Duration::from_secs(1)));
            let a = start_server(&data, Some(ADMIN_KEY)).await;
            let b = start_server(&data, Some(ADMIN_KEY)).await;
            let client = reqwest::Client::new();
            let (team, webhook_id) = setup(&client, &a.base, &receiver.url("/slow")).await;
            for i in 0..300 {
                let (status, _) = post(
                    &client,
                    format!("{}/api/v1/events", a.base),
                    ADMIN_KEY,
                    &meeting_event(&team, &format!("m{i}")),
                )
                .await;
                assert_eq!(status, StatusCode::ACCEPTED);
            }
            receiver
                .next(Duration::from_secs(5))
                .await
                .expect("deliveries under way");
            let r = client
                .patch(format!("{}/api/v1/webhooks/{webhook_id}", b.base))
                .bearer_auth(&team.key)
                .json(&json!({"status": "deactivated"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let deactivated = Instant::now();
            let mut arrived = 1;
            let mut late = 0;
            while let Some(got) = receiver.next(Duration::from_millis(2_000)).await {
                arrived += 1;
                if got.at.saturating_duration_since(deactivated) > Duration::from_secs(1) {
                    late += 1;
                }
            }
            println!("deactivation across nodes: {arrived} of 300 delivered, {late} more than 1 s after");
            assert_eq!(
                late, 0,
                "no attempt more than a second after deactivating on the other node"
            );
            assert!(arrived < 300, "deactivation stopped queued work");
        })
        .await;
}

#[tokio::test]
async fn a_secret_rotated_on_one_node_signs_the_other_nodes_retries_too() {
    let Some(backend) = Backend::postgres() else { return };
    backend
        .run(async {
            let data = TestData::new().await;
            let receiver = TestReceiver::start().await;
            receiver.answer_always(Answer::Status(503));
            let a = start_server(&data, Some(ADMIN_KEY)).await;
            let b = start_server(&data, Some(ADMIN_KEY)).await;
            let client = reqwest::Client::new();
            let (team, webhook_id) = setup(&client, &a.base, &receiver.url("/rotating")).await;
            let (_, webhook) = get(&client, format!("{}/api/v1/webhooks/{webhook_id}", a.base), &team.key).await;
            let old = webhook["secret"].as_str().unwrap().to_owned();
            // Published on B: B holds the deliveries and their retries (2 s later).
            for i in 0..5 {
                let (status, _) = post(
                    &client,
                    format!("{}/api/v1/events", b.base),
                    ADMIN_KEY,
                    &meeting_event(&team, &format!("m{i}")),
                )
                .await;
                assert_eq!(status, StatusCode::ACCEPTED);
            }
            for _ in 0..5 {
                let first = receiver.next(Duration::from_secs(5)).await.expect("first attempt");
                assert_eq!(first.header("webhook-signature"), expected_signature(&old, &first));
            }
            let (status, rotated) = post(
                &client,
                format!("{}/api/v1/webhooks/{webhook_id}/secret/rotate", a.base),
                &team.key,
                &json!({"graceSeconds": 3600}),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{rotated}");
            let new = rotated["secret"].as_str().unwrap().to_owned();
            receiver.answer_always(Answer::Status(204));
            for _ in 0..5 {
                let retry = receiver.next(Duration::from_secs(10)).await.expect("a retry");
                assert_eq!(
                    retry.header("webhook-signature"),
                    format!(
                        "{} {}",
                        expected_signature(&new, &retry),
                        expected_signature(&old, &retry)
                    ),
                    "a retry after the rotation carries both signatures, the new first"
                );
            }
        })
        .await;
}

#[tokio::test]
async fn a_key_revoked_on_one_node_answers_401_on_the_other_at_once() {
    let Some(backend) = Backend::postgres() else { return };
    backend
        .run(async {
            let data = TestData::new().await;
            let a = start_server(&data, Some(ADMIN_KEY)).await;
            let b = start_server(&data, Some(ADMIN_KEY)).await;
            let client = reqwest::Client::new();
            let (team, _) = setup(&client, &a.base, "http://127.0.0.1:9/h").await;
            let get = |base: &str| {
                client
                    .get(format!("{base}/api/v1/webhooks"))
                    .bearer_auth(&team.key)
                    .send()
            };
            // Both nodes have seen the key work.
            assert_eq!(get(&a.base).await.unwrap().status(), StatusCode::OK);
            assert_eq!(get(&b.base).await.unwrap().status(), StatusCode::OK);
            let keys: Value = client
                .get(format!("{}/api/v1/teams/{}/keys", a.base, team.team_id))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let key_id = keys["data"][0]["id"].as_str().unwrap();
            let revoked = client
                .delete(format!("{}/api/v1/teams/{}/keys/{key_id}", a.base, team.team_id))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
            assert_eq!(get(&b.base).await.unwrap().status(), StatusCode::UNAUTHORIZED);
            assert_eq!(get(&a.base).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        })
        .await;
}

#[tokio::test]
async fn the_same_id_sent_to_two_nodes_at_once_gives_one_event() {
    let Some(backend) = Backend::postgres() else { return };
    backend
        .run(async {
            let data = TestData::new().await;
            let receiver = TestReceiver::start().await;
            let a = start_server(&data, Some(ADMIN_KEY)).await;
            let b = start_server(&data, Some(ADMIN_KEY)).await;
            let client = reqwest::Client::new();
            let (team, _) = setup(&client, &a.base, &receiver.url("/once")).await;
            for i in 0..20 {
                let mut body = meeting_event(&team, "m");
                body["id"] = json!(format!("evt_twice_{i}"));
                let (ra, rb) = tokio::join!(
                    post(&client, format!("{}/api/v1/events", a.base), ADMIN_KEY, &body),
                    post(&client, format!("{}/api/v1/events", b.base), ADMIN_KEY, &body),
                );
                let mut statuses = [ra.0.as_u16(), rb.0.as_u16()];
                statuses.sort();
                assert_eq!(statuses, [200, 202], "one creates, the other finds it");
            }
            let mut seen: HashMap<String, usize> = HashMap::new();
            for _ in 0..20 {
                let got = receiver.next(Duration::from_secs(5)).await.expect("delivery");
                *seen.entry(got.header("webhook-id").to_owned()).or_default() += 1;
            }
            receiver.assert_quiet(Duration::from_millis(500)).await;
            assert_eq!(seen.len(), 20);
        })
        .await;
}

/// A TCP proxy in front of PostgreSQL whose plug the test can pull.
struct PgProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl PgProxy {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (up2, connections2) = (Arc::clone(&up), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // Dropped at once: the database is away.
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections2.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { addr, up, connections }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn while_the_database_is_away_publishes_answer_503_and_the_engine_resumes_after() {
    let Some(backend) = Backend::postgres() else { return };
    backend
        .run(async {
            let mut data = TestData::new().await;
            let pg = data.postgres.as_mut().unwrap();
            let host_port = pg
                .url
                .split('@')
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .unwrap()
                .to_owned();
            let proxy = PgProxy::start(host_port.clone()).await;
            pg.url = pg.url.replacen(&host_port, &proxy.addr.to_string(), 1);
            let app = spawn_app_in(data, |_| {}).await;
            let receiver = TestReceiver::start().await;
            let team = app.create_team().await;
            app.create_webhook(&team, &receiver.url("/resume")).await;
            let mut accepted = HashSet::new();
            for i in 0..10 {
                let (status, body) = app.publish(meeting_event(&team, &format!("before{i}"))).await;
                assert_eq!(status, StatusCode::ACCEPTED);
                accepted.insert(body["id"].as_str().unwrap().to_owned());
            }

            proxy.cut();
            let outage = Instant::now();
            let mut refused = 0;
            while outage.elapsed() < Duration::from_secs(4) {
                let sent = Instant::now();
                let r = app
                    .client
                    .post(app.url("/api/v1/events"))
                    .bearer_auth(ADMIN_KEY)
                    .json(&meeting_event(&team, "during"))
                    .send()
                    .await
                    .unwrap();
                assert!(sent.elapsed() < Duration::from_secs(5), "no hang: {:?}", sent.elapsed());
                match r.status() {
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert!(r.headers().get("retry-after").is_some(), "503 carries Retry-After");
                        refused += 1;
                    }
                    StatusCode::ACCEPTED => {
                        let body: Value = r.json().await.unwrap();
                        accepted.insert(body["id"].as_str().unwrap().to_owned());
                    }
                    other => panic!("while the database is away: {other}"),
                }
            }
            assert!(refused > 0, "publishes were refused while the database was away");
            let (status, _) = app.raw(reqwest::Method::GET, "/readyz", None, "").await;
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready without the database"
            );

            proxy.restore();
            let back = Instant::now();
            loop {
                let (status, _) = app.raw(reqwest::Method::GET, "/readyz", None, "").await;
                if status == StatusCode::OK {
                    break;
                }
                assert!(
                    back.elapsed() < Duration::from_secs(15),
                    "ready again once the database is back"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for i in 0..10 {
                let (status, body) = app.publish(meeting_event(&team, &format!("after{i}"))).await;
                assert_eq!(status, StatusCode::ACCEPTED);
                accepted.insert(body["id"].as_str().unwrap().to_owned());
            }
            let mut missing = accepted.clone();
            let deadline = Instant::now() + Duration::from_secs(40);
            while !missing.is_empty() {
                let got = receiver
                    .next(deadline.saturating_duration_since(Instant::now()))
                    .await
                    .unwrap_or_else(|| panic!("{} accepted events never arrived", missing.len()));
                missing.remove(got.header("webhook-id"));
            }
            println!(
                "database outage: {refused} publishes refused with 503; all {} accepted delivered",
                accepted.len()
            );
        })
        .await;
}

/// Shutdown gives the work back (contract §7.1): a node stopped with
/// SIGTERM while it holds deliveries lets its attempts on the wire finish,
/// releases the rest and exits 0; another node sends them within a second,
/// not after the 10 s lease, and every event arrives.
#[tokio::test]
async fn a_node_stopped_with_sigterm_hands_its_work_over_at_once() {
    let Some(backend) = Backend::postgres() else { return };
    backend
        .run(async {
            let data = TestData::new().await;
            let receiver = TestReceiver::start().await;
            receiver.answer_path("/wh", Answer::Slow(204, Duration::from_millis(200)));
            let env = [("HERALD_LEASE_MS", "10000"), ("HERALD_ENDPOINT_CONCURRENCY", "2")];
            let mut stopping = start_server_with(&data, Some(ADMIN_KEY), &env).await;
            let staying = start_server_with(&data, Some(ADMIN_KEY), &env).await;
            let client = reqwest::Client::new();
            let (team, _) = setup(&client, &stopping.base, &receiver.url("/wh")).await;
            let mut ids = HashSet::new();
            for i in 0..40 {
                let mut body = meeting_event(&team, "handover");
                body["id"] = json!(format!("evt_handover_{i}"));
                let (status, _) = post(&client, format!("{}/api/v1/events", stopping.base), ADMIN_KEY, &body).await;
                assert_eq!(status, StatusCode::ACCEPTED);
                ids.insert(format!("evt_handover_{i}"));
            }
            // Two at a time, 200 ms each: the publishing node holds most of them.
            let mut got = HashSet::new();
            while got.len() < 4 {
                let r = receiver.next(Duration::from_secs(10)).await.expect("a delivery");
                got.insert(r.header("webhook-id").to_owned());
            }
            let pid = rustix::process::Pid::from_raw(stopping.child.id() as i32).unwrap();
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
            let status = tokio::task::spawn_blocking(move || {
                let status = stopping.child.wait().unwrap();
                (status, stopping)
            })
            .await
            .unwrap()
            .0;
            let exited = Instant::now();
            assert!(status.success(), "{status:?}");
            // What it held goes out from the other node at once.
            let mut first_after = None;
            let deadline = Instant::now() + Duration::from_secs(30);
            while got.len() < ids.len() {
                assert!(Instant::now() < deadline, "{} of {} arrived", got.len(), ids.len());
                if let Some(r) = receiver.next(Duration::from_millis(500)).await {
                    if r.at > exited {
                        first_after.get_or_insert(r.at - exited);
                    }
                    got.insert(r.header("webhook-id").to_owned());
                }
            }
            let first_after = first_after.expect("deliveries were left after the stop");
            assert!(
                first_after < Duration::from_secs(1),
                "the other node waited {first_after:?}"
            );
            assert_eq!(got, ids);
            drop(staying);
        })
        .await;
}

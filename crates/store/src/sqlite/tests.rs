use super::*;
use crate::records::Wake;
use tokio::sync::oneshot;

fn record(delivery: i64, attempt: u32, next: DeliveryNext) -> AttemptRecord {
    AttemptRecord {
        id: AttemptId::generate(1),
        delivery: DeliveryId(delivery),
        team_id: TeamId::from_stored("team_1".into()),
        endpoint_id: EndpointId::from_stored("ep_1".into()),
        event_id: EventId::from_stored(format!("evt_{delivery}")),
        event_type: EventType::MeetingCompleted,
        attempt,
        timestamp_ms: 1_000 + i64::from(attempt),
        status: AttemptStatus::Retrying,
        duration_ms: 3,
        request_url: "http://127.0.0.1:9/".into(),
        request_headers: vec![("webhook-id".into(), format!("evt_{delivery}"))],
        response: Some(ResponseRecord {
            status: 503,
            headers: vec![("retry-after".into(), "1".into())],
            body: b"busy".to_vec(),
        }),
        error: None,
        next,
        keep_lease_until: None,
        deactivate: None,
    }
}

fn store_with_deliveries(n: i64) -> Connection {
    let c = Connection::open_in_memory().unwrap();
    schema::migrate(&c, schema::latest_version()).unwrap();
    for seq in 1..=n {
        c.execute(
            "INSERT INTO deliveries (seq, event_id, endpoint_id, team_id, state, next_attempt_at, locked_until,
                 locked_by, created_at, manual)
             VALUES (?1, 'evt_' || ?1, 'ep_1', 'team_1', 'pending', 0, 5000, 'node', 0, ?1 = 2)",
            [seq],
        )
        .unwrap();
    }
    c
}

/// 70 records go as chunks of 64, 4, 1 and 1; one of them is for a
/// delivery that no longer exists, and one delivery is attempted twice
/// in the run (which cuts a chunk there): every other record is logged
/// once, in order, with its response, and its delivery moves on.
#[test]
fn records_written_together_are_each_logged_in_order_and_move_their_delivery() {
    let c = store_with_deliveries(68);
    let mut records: Vec<AttemptRecord> = (1..=68).map(|d| record(d, 1, DeliveryNext::Succeeded)).collect();
    records[9] = record(10, 1, DeliveryNext::RetryAt(9_000));
    records.insert(40, record(999, 1, DeliveryNext::Succeeded));
    records.push(record(10, 2, DeliveryNext::Failed));
    assert_eq!(records.len(), 70);
    let refs: Vec<&AttemptRecord> = records.iter().collect();
    let len = |rest: &[&AttemptRecord]| RECORD_CHUNKS[chunk_size(rest)];
    assert_eq!(len(&refs), 64);
    assert_eq!(len(&refs[64..]), 4);
    assert_eq!(
        len(&refs[9..]),
        16,
        "the second attempt of delivery 10 is 60 records on"
    );
    record_many(&c, &refs).unwrap();

    type Logged = (i64, u32, String, i64, Option<i64>, Option<Vec<u8>>);
    let logged: Vec<Logged> = c
        .prepare("SELECT delivery_seq, attempt, id, manual, response_status, response_body FROM attempts ORDER BY seq")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<(i64, u32, String)> = records
        .iter()
        .filter(|r| r.delivery.0 != 999)
        .map(|r| (r.delivery.0, r.attempt, r.id.to_string()))
        .collect();
    let got: Vec<(i64, u32, String)> = logged.iter().map(|l| (l.0, l.1, l.2.clone())).collect();
    assert_eq!(got, expected);
    assert!(
        logged
            .iter()
            .all(|l| l.4 == Some(503) && l.5.as_deref() == Some(&b"busy"[..]))
    );
    let manual: Vec<i64> = logged.iter().filter(|l| l.3 == 1).map(|l| l.0).collect();
    assert_eq!(manual, vec![2], "the manual mark comes from the delivery");

    let state = |seq: i64| -> (String, i64, i64, Option<i64>) {
        c.query_row(
            "SELECT state, attempts, next_attempt_at, locked_until FROM deliveries WHERE seq = ?1",
            [seq],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
    };
    assert_eq!(state(1), ("succeeded".into(), 1, 1_001, None));
    assert_eq!(state(68), ("succeeded".into(), 1, 1_001, None));
    assert_eq!(state(10), ("failed".into(), 2, 1_002, None), "the later attempt wins");
}

/// A drain job the writer drops unrun empties the queue: its waiters
/// are answered, and the next record queues a job of its own.
#[tokio::test]
async fn a_drain_job_dropped_unrun_answers_its_waiters() {
    let queue = Arc::new(RecordQueue::default());
    let (tx, rx) = oneshot::channel();
    assert!(matches!(
        queue.push(realtime(record(1, 1, DeliveryNext::Succeeded)), tx),
        Wake::Now
    ));
    drop(drain_job(Arc::clone(&queue)));
    assert!(queue.lock().records.is_empty());
    assert!(rx.await.is_err(), "the waiter hears that its record was not written");
    let (tx, _rx) = oneshot::channel();
    assert!(
        matches!(
            queue.push(realtime(record(2, 1, DeliveryNext::Succeeded)), tx),
            Wake::Now
        ),
        "the next record queues a job again"
    );
}

fn realtime(mut r: AttemptRecord) -> AttemptRecord {
    r.endpoint_id = EndpointId::from_stored("rte_1".into());
    r
}

/// Team webhooks' records wait for one timer and then one job; a
/// real-time record queues the job at once, and whatever waits joins it.
#[test]
fn records_share_one_job_and_real_time_ones_do_not_wait() {
    let c = store_with_deliveries(6);
    let queue = Arc::new(RecordQueue::default());
    let mut waiters = Vec::new();
    let mut push = |r: AttemptRecord| {
        let (tx, rx) = oneshot::channel();
        waiters.push(rx);
        queue.push(r, tx)
    };
    assert!(matches!(push(record(1, 1, DeliveryNext::Succeeded)), Wake::Gather));
    assert!(matches!(push(record(2, 1, DeliveryNext::Succeeded)), Wake::Nothing));
    assert!(matches!(
        push(realtime(record(3, 1, DeliveryNext::Succeeded))),
        Wake::Now
    ));
    assert!(matches!(push(record(4, 1, DeliveryNext::Succeeded)), Wake::Nothing));
    assert!(!queue.gathered(), "the real-time record's job takes the waiting ones");
    let (ok, done) = (drain_job(Arc::clone(&queue)))(&c);
    assert!(ok);
    done(None);
    for mut rx in waiters.drain(..) {
        assert!(
            matches!(rx.try_recv(), Ok(Ok(_))),
            "each waiter hears its record was written"
        );
    }
    let logged: i64 = c.query_row("SELECT count(*) FROM attempts", [], |r| r.get(0)).unwrap();
    assert_eq!(logged, 4, "one job wrote all four");

    let (tx, _rx) = oneshot::channel();
    assert!(matches!(
        queue.push(record(5, 1, DeliveryNext::Succeeded), tx),
        Wake::Gather
    ));
    assert!(queue.gathered(), "the timer queues the job");
    let (tx, _rx) = oneshot::channel();
    assert!(matches!(
        queue.push(record(6, 1, DeliveryNext::Succeeded), tx),
        Wake::Nothing
    ));
    assert!(!queue.gathered(), "one job at a time");
}

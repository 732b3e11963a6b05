//! A webhook's health, kept as its attempts are recorded (contract §4.3):
//! per-hour counts of attempts by status with a histogram of their
//! durations, and the time of the first failed delivery since the last
//! success, from which sustained failure deactivates it. Decided here for
//! both backends; each turns a drain's [`EndpointTally`]s into one upsert
//! per (webhook, hour) and one guarded update per webhook, so a busy
//! webhook costs a statement per drain, not per attempt, and the stats are
//! read without scanning the log.

use herald_domain::attempt::AttemptStatus;
use herald_domain::ids::EndpointKind;

use crate::model::{AttemptRecord, Deactivation, HourStats};

pub use crate::model::DURATION_BUCKETS;

/// The upper bound (exclusive, ms) of each duration bucket but the last,
/// which holds everything from 30 s up.
pub const DURATION_BUCKETS_MS: [i64; DURATION_BUCKETS - 1] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000,
];

/// An hour in milliseconds: the width of a stats bucket.
pub const HOUR_MS: i64 = 3_600_000;

/// The start of the first of `hours` hours that end with the one `now_ms`
/// falls in: where a webhook's recent stats begin.
pub fn first_hour(now_ms: i64, hours: i64) -> i64 {
    hour_of(now_ms) - (hours - 1) * HOUR_MS
}

/// The start of the hour `at_ms` falls in.
pub fn hour_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(HOUR_MS) * HOUR_MS
}

fn bucket_of(duration_ms: i64) -> usize {
    DURATION_BUCKETS_MS
        .iter()
        .position(|&upper| duration_ms < upper)
        .unwrap_or(DURATION_BUCKETS - 1)
}

/// One drain's records for one webhook.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct EndpointTally<'a> {
    pub endpoint: &'a str,
    /// One entry per hour the records fall in (usually one).
    pub hours: Vec<HourStats>,
    /// A delivery succeeded: any failing streak before it is over.
    pub succeeded: bool,
    /// The first failed delivery after the last success in the drain (or
    /// in the drain at all, when nothing succeeded).
    pub first_failure_ms: Option<i64>,
    /// The first deactivation the records ask for.
    pub deactivate: Option<&'a Deactivation>,
}

impl EndpointTally<'_> {
    /// What the webhook's `failing_since` becomes: `Set(t)` when the drain
    /// decides it (a success clears it, or resets it to a failure after
    /// that success), `IfUnset(t)` when a failure only starts a streak if
    /// none is running; `None` when the drain says nothing of it.
    pub fn failing_since(&self) -> StreakMove {
        match (self.succeeded, self.first_failure_ms) {
            (true, at) => StreakMove::Set(at),
            (false, Some(at)) => StreakMove::IfUnset(at),
            (false, None) => StreakMove::Unchanged,
        }
    }
}

/// See [`EndpointTally::failing_since`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreakMove {
    Set(Option<i64>),
    IfUnset(i64),
    Unchanged,
}

/// The drain's records of team webhooks, per webhook in order of first
/// appearance. Real-time endpoints keep no stats and are never deactivated
/// this way: they have their own fixed policy.
pub(crate) fn tally<'a>(records: impl IntoIterator<Item = &'a AttemptRecord>) -> Vec<EndpointTally<'a>> {
    let mut tallies: Vec<EndpointTally<'a>> = Vec::new();
    // Where each webhook's tally is: a batch may span thousands of webhooks.
    let mut index: foldhash::HashMap<&'a str, usize> = foldhash::HashMap::default();
    for record in records {
        if record.endpoint_id.kind() != EndpointKind::Webhook {
            continue;
        }
        let endpoint = record.endpoint_id.as_str();
        let at = match index.get(endpoint) {
            Some(&at) => at,
            None => {
                index.insert(endpoint, tallies.len());
                tallies.push(EndpointTally {
                    endpoint,
                    hours: Vec::new(),
                    succeeded: false,
                    first_failure_ms: None,
                    deactivate: None,
                });
                tallies.len() - 1
            }
        };
        let tally = &mut tallies[at];
        let hour = hour_of(record.timestamp_ms);
        let stats = match tally.hours.iter().position(|h| h.start_ms == hour) {
            Some(i) => &mut tally.hours[i],
            None => {
                tally.hours.push(HourStats {
                    start_ms: hour,
                    ..HourStats::default()
                });
                let last = tally.hours.len() - 1;
                &mut tally.hours[last]
            }
        };
        match record.status {
            AttemptStatus::Success => stats.success += 1,
            AttemptStatus::Retrying => stats.retrying += 1,
            _ => stats.failed += 1,
        }
        let duration = record.duration_ms.max(0);
        stats.durations[bucket_of(duration)] += 1;
        stats.max_ms = stats.max_ms.max(duration);
        match record.status {
            AttemptStatus::Success => {
                tally.succeeded = true;
                tally.first_failure_ms = None;
            }
            AttemptStatus::Failed => {
                tally.first_failure_ms.get_or_insert(record.timestamp_ms);
            }
            _ => {}
        }
        tally.deactivate = stronger(tally.deactivate, record.deactivate.as_ref());
    }
    tallies
}

/// Of two deactivations a batch asks for, the one that must hold: one asked
/// for at once (a 410) wins; of two streak checks, the later threshold
/// (the most recent failure's) is the one the streak must pass.
fn stronger<'a>(kept: Option<&'a Deactivation>, new: Option<&'a Deactivation>) -> Option<&'a Deactivation> {
    match (kept, new) {
        (None, new) => new,
        (kept, None) => kept,
        (Some(Deactivation::Now(_)), _) => kept,
        (_, Some(Deactivation::Now(_))) => new,
        (Some(Deactivation::FailingSince { by_ms: a, .. }), Some(Deactivation::FailingSince { by_ms: b, .. })) => {
            if b > a { new } else { kept }
        }
    }
}

/// The duration below which a share `q` (0..1) of an hour's attempts fell,
/// estimated from its histogram: linear within the bucket the quantile
/// falls in, and never above the longest attempt. `None` for no attempts.
pub fn quantile_ms(stats: &HourStats, q: f64) -> Option<i64> {
    let total: i64 = stats.durations.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
    let mut below = 0i64;
    for (i, &count) in stats.durations.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let lower = if i == 0 { 0 } else { DURATION_BUCKETS_MS[i - 1] };
            let upper = DURATION_BUCKETS_MS.get(i).copied().unwrap_or(stats.max_ms.max(lower));
            let within = (rank - below as f64) / count as f64;
            let estimate = lower as f64 + within * (upper - lower) as f64;
            return Some((estimate.round() as i64).min(stats.max_ms).max(lower.min(stats.max_ms)));
        }
        below += count;
    }
    Some(stats.max_ms)
}

/// `stored` (oldest first, some hours missing) as exactly `hours` buckets
/// from `from`.
pub fn fill_hours(stored: Vec<HourStats>, from: i64, hours: i64) -> Vec<HourStats> {
    let mut stored = stored.into_iter().peekable();
    (0..hours)
        .map(|i| {
            let start = from + i * HOUR_MS;
            while stored.peek().is_some_and(|s| s.start_ms < start) {
                stored.next();
            }
            match stored.peek() {
                Some(s) if s.start_ms == start => stored.next().unwrap_or_default(),
                _ => HourStats {
                    start_ms: start,
                    ..HourStats::default()
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_domain::event::EventType;
    use herald_domain::ids::{AttemptId, DeliveryId, EndpointId, EventId, TeamId};

    use crate::model::DeliveryNext;

    fn record(endpoint: &EndpointId, at: i64, status: AttemptStatus, duration_ms: i64) -> AttemptRecord {
        AttemptRecord {
            id: AttemptId::generate(at),
            delivery: DeliveryId(1),
            team_id: TeamId::generate(0),
            endpoint_id: endpoint.clone(),
            event_id: EventId::generate(at),
            event_type: EventType::MeetingCompleted,
            attempt: 1,
            timestamp_ms: at,
            status,
            duration_ms,
            request_url: String::new(),
            request_headers: Vec::new(),
            response: None,
            error: None,
            next: DeliveryNext::Succeeded,
            keep_lease_until: None,
            deactivate: None,
        }
    }

    #[test]
    fn a_drain_counts_each_webhook_per_hour_and_tracks_its_failing_streak() {
        let a = EndpointId::generate(EndpointKind::Webhook, 0);
        let b = EndpointId::generate(EndpointKind::Webhook, 0);
        let realtime = EndpointId::generate(EndpointKind::Realtime, 0);
        let hour = 7 * HOUR_MS;
        let records = [
            record(&a, hour + 10, AttemptStatus::Failed, 3),
            record(&b, hour + 20, AttemptStatus::Retrying, 10_000),
            record(&a, hour + 30, AttemptStatus::Success, 40),
            record(&a, hour + 40, AttemptStatus::Failed, 0),
            record(&a, hour + HOUR_MS, AttemptStatus::Failed, 45_000),
            record(&realtime, hour, AttemptStatus::Failed, 1),
            record(&b, hour + 50, AttemptStatus::Failed, 1),
        ];
        let tallies = tally(&records);
        assert_eq!(tallies.len(), 2, "the real-time endpoint keeps no stats");
        let (ta, tb) = (&tallies[0], &tallies[1]);
        assert_eq!(ta.endpoint, a.as_str());
        assert_eq!(ta.hours.len(), 2);
        assert_eq!(
            (ta.hours[0].start_ms, ta.hours[0].success, ta.hours[0].failed),
            (hour, 1, 2)
        );
        assert_eq!(ta.hours[0].durations[bucket_of(3)], 1);
        assert_eq!(ta.hours[0].durations[0], 1, "0 ms is the first bucket");
        assert_eq!(
            ta.hours[1].durations[DURATION_BUCKETS - 1],
            1,
            "45 s is the last bucket"
        );
        assert_eq!(ta.hours[1].max_ms, 45_000);
        // The failure before the success is forgotten; the streak starts after it.
        assert_eq!(ta.failing_since(), StreakMove::Set(Some(hour + 40)));
        assert_eq!(tb.failing_since(), StreakMove::IfUnset(hour + 50));
        assert_eq!((tb.hours[0].retrying, tb.hours[0].failed), (1, 1));
    }

    #[test]
    fn a_410_in_a_batch_deactivates_whatever_else_the_batch_asks() {
        let a = EndpointId::generate(EndpointKind::Webhook, 0);
        let streak = |by_ms| {
            let mut r = record(&a, 10, AttemptStatus::Failed, 1);
            r.deactivate = Some(Deactivation::FailingSince {
                by_ms,
                reason: "streak".into(),
            });
            r
        };
        let mut gone = record(&a, 20, AttemptStatus::Failed, 1);
        gone.deactivate = Some(Deactivation::Now("410".into()));
        let records = [streak(5), gone, streak(9)];
        assert_eq!(tally(&records)[0].deactivate, Some(&Deactivation::Now("410".into())));
        let records = [streak(5), streak(9), streak(7)];
        assert!(matches!(
            tally(&records)[0].deactivate,
            Some(Deactivation::FailingSince { by_ms: 9, .. })
        ));
    }

    #[test]
    fn quantiles_come_from_the_histogram_and_never_pass_the_longest_attempt() {
        let mut stats = HourStats::default();
        assert_eq!(quantile_ms(&stats, 0.5), None);
        // 100 attempts of 3 ms (bucket [2, 5)) and 5 timeouts at 10 s.
        stats.durations[bucket_of(3)] = 100;
        stats.durations[bucket_of(10_000)] = 5;
        stats.max_ms = 10_000;
        let p50 = quantile_ms(&stats, 0.5).unwrap();
        assert!((2..5).contains(&p50), "{p50}");
        assert_eq!(quantile_ms(&stats, 0.99), Some(10_000));
        // All at one duration: every quantile is within its bucket.
        let mut one = HourStats::default();
        one.durations[bucket_of(150)] = 10;
        one.max_ms = 150;
        let p95 = quantile_ms(&one, 0.95).unwrap();
        assert!((100..=150).contains(&p95), "{p95}");
    }

    #[test]
    fn missing_hours_are_zeros_and_the_buckets_run_oldest_first() {
        let from = 10 * HOUR_MS;
        let at = |hour: i64, success: i64| HourStats {
            start_ms: from + hour * HOUR_MS,
            success,
            ..HourStats::default()
        };
        let filled = fill_hours(vec![at(-1, 9), at(1, 3), at(3, 5)], from, 3);
        let got: Vec<(i64, i64)> = filled.iter().map(|h| (h.start_ms, h.success)).collect();
        assert_eq!(got, vec![(from, 0), (from + HOUR_MS, 3), (from + 2 * HOUR_MS, 0)]);
    }
}

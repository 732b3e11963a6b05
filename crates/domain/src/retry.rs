//! The two retry policies, as pure functions of the attempt just made.
//!
//! `decide` takes the policy, the number of the attempt that just ended, its
//! outcome, the time it ended and the answer's `Retry-After`; it returns what
//! happens to the delivery next. No clock, no randomness: the schedule is
//! exact and testable.
//!
//! What a team webhook's answer changes (contract §4.3): 410 Gone ends the
//! delivery at once ([`Decision::Gone`]: the webhook is deactivated), and
//! `Retry-After` on a 429 or 503 moves the next attempt later, at most
//! [`RETRY_AFTER_CAP`] after the attempt. Real-time endpoints keep their
//! fixed policy.

use std::time::{Duration, UNIX_EPOCH};

use crate::attempt::AttemptOutcome;

/// How a delivery is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Team webhooks: after the n-th failed attempt wait `delays[n-1]`; after
    /// `delays.len() + 1` attempts the delivery is failed. The contract's
    /// schedule is [`RetryPolicy::standard`]: 2, 4, 8, 16 s.
    Standard { delays: Vec<Duration> },
    /// Real-time endpoints: a fixed interval, at most `max_retries` retries
    /// after the first attempt; then the endpoint fails.
    Realtime { interval: Duration, max_retries: u32 },
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The endpoint acknowledged it.
    Delivered,
    /// Try again at this Unix time in milliseconds.
    RetryAt(i64),
    /// No attempts left.
    GiveUp,
    /// The endpoint answered 410 Gone: no more attempts, and the webhook is
    /// deactivated ([`GONE_REASON`]).
    Gone,
}

/// The latest a `Retry-After` may put the next attempt, after the attempt ended.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// Why a webhook that answered 410 was deactivated, for people.
pub const GONE_REASON: &str = "The endpoint answered 410 Gone, which says it is gone for good.";

/// Why a webhook was deactivated after failing every delivery for `after`.
pub fn auto_deactivation_reason(after: Duration) -> String {
    format!(
        "Every delivery failed for {}, counted from the first failure after the last success.",
        human_duration(after)
    )
}

/// A duration as people say it: "5 days", "1 hour 30 minutes", "45 seconds".
pub fn human_duration(d: Duration) -> String {
    let mut left = d.as_secs();
    let mut parts = Vec::new();
    for (unit, secs) in [("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1)] {
        let n = left / secs;
        left %= secs;
        if n > 0 && parts.len() < 2 {
            parts.push(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }));
        }
    }
    if parts.is_empty() {
        return format!("{} ms", d.as_millis());
    }
    parts.join(" ")
}

/// The `Retry-After` value of an answer (delay-seconds or an HTTP date, RFC
/// 9110 §10.2.3) as the Unix time in milliseconds it asks to wait for;
/// `None` if it is neither.
pub fn retry_after_at(value: &str, now_ms: i64) -> Option<i64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Any number of seconds past the cap means the cap.
        let seconds = value
            .parse::<i64>()
            .unwrap_or(i64::MAX)
            .min(RETRY_AFTER_CAP.as_secs() as i64 + 1);
        return Some(now_ms.saturating_add(seconds * 1000));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Some(i64::try_from(ms).unwrap_or(i64::MAX))
}

impl RetryPolicy {
    /// The contract's standard schedule: attempts at about 0, 2, 6, 14, 30 s.
    pub fn standard() -> Self {
        Self::Standard {
            delays: [2, 4, 8, 16].map(Duration::from_secs).to_vec(),
        }
    }

    /// The contract's real-time schedule: every 1 s, at most 60 retries.
    pub fn realtime() -> Self {
        Self::Realtime {
            interval: Duration::from_secs(1),
            max_retries: 60,
        }
    }

    /// The most attempts a delivery can get, the first included.
    pub fn max_attempts(&self) -> u32 {
        match self {
            Self::Standard { delays } => delays.len() as u32 + 1,
            Self::Realtime { max_retries, .. } => max_retries + 1,
        }
    }

    /// How long after failed attempt number `attempt` (1-based) the next
    /// one goes; `None` when it was the last.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts() {
            return None;
        }
        Some(match self {
            Self::Standard { delays } => delays[(attempt.max(1) - 1) as usize],
            Self::Realtime { interval, .. } => *interval,
        })
    }

    /// The whole schedule: the delay before each retry, in order.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + '_ {
        (1..self.max_attempts()).filter_map(|attempt| self.delay_after(attempt))
    }

    /// Decides after attempt number `attempt` (1-based) ended at `ended_ms`;
    /// `retry_after` is the answer's `Retry-After` header, if it had one.
    pub fn decide(&self, attempt: u32, outcome: &AttemptOutcome, ended_ms: i64, retry_after: Option<&str>) -> Decision {
        if outcome.is_success() {
            return Decision::Delivered;
        }
        let standard = matches!(self, Self::Standard { .. });
        if standard && outcome.status() == Some(410) {
            return Decision::Gone;
        }
        let Some(delay) = self.delay_after(attempt) else {
            return Decision::GiveUp;
        };
        let scheduled = ended_ms + delay.as_millis() as i64;
        let asked = match (standard, outcome.status(), retry_after) {
            (true, Some(429 | 503), Some(value)) => retry_after_at(value, ended_ms),
            _ => None,
        };
        let latest = ended_ms + RETRY_AFTER_CAP.as_millis() as i64;
        Decision::RetryAt(asked.map_or(scheduled, |asked| scheduled.max(asked.min(latest))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn failure() -> AttemptOutcome {
        AttemptOutcome::Status(503)
    }

    #[test]
    fn the_schedule_lists_each_retry_delay_once_in_order() {
        let secs = |p: &RetryPolicy| p.delays().map(|d| d.as_secs()).collect::<Vec<_>>();
        assert_eq!(secs(&RetryPolicy::standard()), [2, 4, 8, 16]);
        let realtime = RetryPolicy::realtime();
        assert_eq!(secs(&realtime), [1; 60]);
        assert_eq!(realtime.delay_after(60), Some(Duration::from_secs(1)));
        assert_eq!(realtime.delay_after(61), None);
        assert_eq!(RetryPolicy::standard().delay_after(4), Some(Duration::from_secs(16)));
        assert_eq!(RetryPolicy::standard().delay_after(5), None);
    }

    #[test]
    fn standard_schedule_is_2_4_8_16_seconds_then_failed() {
        let policy = RetryPolicy::standard();
        let mut now = 0;
        let mut starts = vec![0];
        for attempt in 1..=4 {
            match policy.decide(attempt, &failure(), now, None) {
                Decision::RetryAt(at) => {
                    now = at;
                    starts.push(at);
                }
                other => panic!("attempt {attempt}: {other:?}"),
            }
        }
        assert_eq!(starts, vec![0, 2_000, 6_000, 14_000, 30_000]);
        assert_eq!(policy.decide(5, &failure(), now, None), Decision::GiveUp);
        assert_eq!(
            policy.decide(3, &AttemptOutcome::Success(204), now, None),
            Decision::Delivered
        );
    }

    #[test]
    fn realtime_schedule_is_every_second_for_60_retries() {
        let policy = RetryPolicy::realtime();
        assert_eq!(
            policy.decide(1, &AttemptOutcome::Timeout, 10, None),
            Decision::RetryAt(1_010)
        );
        assert_eq!(policy.decide(60, &failure(), 0, None), Decision::RetryAt(1_000));
        assert_eq!(policy.decide(61, &failure(), 0, None), Decision::GiveUp);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(Duration::from_secs(5 * 86_400)), "5 days");
        assert_eq!(human_duration(Duration::from_secs(5_400)), "1 hour 30 minutes");
        assert_eq!(human_duration(Duration::from_secs(1)), "1 second");
        assert_eq!(human_duration(Duration::from_millis(300)), "300 ms");
    }

    #[test]
    fn gone_ends_a_webhook_delivery_at_once_but_not_a_realtime_one() {
        let gone = AttemptOutcome::Status(410);
        assert_eq!(RetryPolicy::standard().decide(1, &gone, 0, None), Decision::Gone);
        assert_eq!(RetryPolicy::standard().decide(5, &gone, 0, None), Decision::Gone);
        assert_eq!(
            RetryPolicy::realtime().decide(1, &gone, 0, None),
            Decision::RetryAt(1_000)
        );
    }

    #[test]
    fn retry_after_moves_a_429_or_503_retry_later_within_an_hour() {
        let policy = RetryPolicy::standard();
        let now = 1_700_000_000_000;
        let decide = |status, value| policy.decide(1, &AttemptOutcome::Status(status), now, Some(value));
        // Seconds, later than the schedule's 2 s: honoured.
        assert_eq!(decide(429, "120"), Decision::RetryAt(now + 120_000));
        assert_eq!(decide(503, " 30 "), Decision::RetryAt(now + 30_000));
        // Sooner than the schedule: the schedule stands.
        assert_eq!(decide(503, "1"), Decision::RetryAt(now + 2_000));
        // Past the cap, or absurd: one hour.
        assert_eq!(decide(503, "86400"), Decision::RetryAt(now + 3_600_000));
        assert_eq!(
            decide(503, "99999999999999999999999"),
            Decision::RetryAt(now + 3_600_000)
        );
        // An HTTP date (2023-11-14T22:15:00Z is 1,700,000,100 s).
        assert_eq!(
            decide(503, "Tue, 14 Nov 2023 22:15:00 GMT"),
            Decision::RetryAt(1_700_000_100_000)
        );
        // A date in the past, or nonsense: the schedule.
        assert_eq!(
            decide(503, "Tue, 14 Nov 2000 22:15:00 GMT"),
            Decision::RetryAt(now + 2_000)
        );
        assert_eq!(decide(503, "soon"), Decision::RetryAt(now + 2_000));
        assert_eq!(decide(503, "-5"), Decision::RetryAt(now + 2_000));
        // Other statuses ignore it; the fifth attempt still ends the delivery.
        assert_eq!(decide(500, "120"), Decision::RetryAt(now + 2_000));
        assert_eq!(
            policy.decide(5, &AttemptOutcome::Status(503), now, Some("120")),
            Decision::GiveUp
        );
        // Real-time endpoints keep their fixed second.
        assert_eq!(
            RetryPolicy::realtime().decide(1, &AttemptOutcome::Status(503), now, Some("120")),
            Decision::RetryAt(now + 1_000)
        );
    }

    proptest! {
        #[test]
        fn standard_never_exceeds_five_attempts(attempt in 1u32..100, now in 0i64..1_000_000) {
            let decision = RetryPolicy::standard().decide(attempt, &failure(), now, None);
            if attempt >= 5 {
                prop_assert_eq!(decision, Decision::GiveUp);
            } else {
                prop_assert_eq!(decision, Decision::RetryAt(now + (1_000i64 << attempt)));
            }
        }

        #[test]
        fn realtime_never_exceeds_sixty_retries(attempt in 1u32..1000, now in 0i64..1_000_000) {
            let decision = RetryPolicy::realtime().decide(attempt, &failure(), now, None);
            prop_assert_eq!(decision == Decision::GiveUp, attempt > 60);
        }
    }
}

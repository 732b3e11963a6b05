//! The two retry policies, as pure functions of the attempt just made.
//!
//! `decide` takes the policy, the number of the attempt that just ended, its
//! outcome and the time it ended; it returns what happens to the delivery
//! next. No clock, no randomness: the schedule is exact and testable.

use std::time::Duration;

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

    /// Decides after attempt number `attempt` (1-based) ended at `ended_ms`.
    pub fn decide(&self, attempt: u32, outcome: &AttemptOutcome, ended_ms: i64) -> Decision {
        if outcome.is_success() {
            return Decision::Delivered;
        }
        match self.delay_after(attempt) {
            Some(delay) => Decision::RetryAt(ended_ms + delay.as_millis() as i64),
            None => Decision::GiveUp,
        }
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
            match policy.decide(attempt, &failure(), now) {
                Decision::RetryAt(at) => {
                    now = at;
                    starts.push(at);
                }
                other => panic!("attempt {attempt}: {other:?}"),
            }
        }
        assert_eq!(starts, vec![0, 2_000, 6_000, 14_000, 30_000]);
        assert_eq!(policy.decide(5, &failure(), now), Decision::GiveUp);
        assert_eq!(
            policy.decide(3, &AttemptOutcome::Success(204), now),
            Decision::Delivered
        );
    }

    #[test]
    fn realtime_schedule_is_every_second_for_60_retries() {
        let policy = RetryPolicy::realtime();
        assert_eq!(policy.decide(1, &AttemptOutcome::Timeout, 10), Decision::RetryAt(1_010));
        assert_eq!(policy.decide(60, &failure(), 0), Decision::RetryAt(1_000));
        assert_eq!(policy.decide(61, &failure(), 0), Decision::GiveUp);
    }

    proptest! {
        #[test]
        fn standard_never_exceeds_five_attempts(attempt in 1u32..100, now in 0i64..1_000_000) {
            let decision = RetryPolicy::standard().decide(attempt, &failure(), now);
            if attempt >= 5 {
                prop_assert_eq!(decision, Decision::GiveUp);
            } else {
                prop_assert_eq!(decision, Decision::RetryAt(now + (1_000i64 << attempt)));
            }
        }

        #[test]
        fn realtime_never_exceeds_sixty_retries(attempt in 1u32..1000, now in 0i64..1_000_000) {
            let decision = RetryPolicy::realtime().decide(attempt, &failure(), now);
            prop_assert_eq!(decision == Decision::GiveUp, attempt > 60);
        }
    }
}

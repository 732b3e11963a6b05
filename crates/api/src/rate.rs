//! Rate limits per team key (contract §7.1, `HERALD_TEAM_RATE_LIMIT`): a
//! token bucket per key that refills at the limit and holds twice it, so a
//! burst of up to twice the limit goes through at once. Buckets live in
//! shards, each behind its own lock held for a few arithmetic operations,
//! so one team's requests never wait for another's bucket. Each process
//! limits on its own: on a cluster a key may make the limit per node.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// At this many buckets in a shard, the full ones are dropped (a full
/// bucket is what a new one would be); the next sweep waits until the
/// shard has twice what survived, so sweeps cost little per request.
const SHARD_SWEEP_AT: usize = 4_096;

struct Shard {
    buckets: HashMap<String, Bucket>,
    sweep_at: usize,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    per_s: f64,
    burst: f64,
    shards: [Mutex<Shard>; SHARDS],
}

impl RateLimiter {
    /// `per_s` requests a second per key, bursts of twice that.
    pub fn new(per_s: u32) -> Self {
        let per_s = f64::from(per_s.max(1));
        Self {
            per_s,
            burst: 2.0 * per_s,
            shards: std::array::from_fn(|_| {
                Mutex::new(Shard {
                    buckets: HashMap::new(),
                    sweep_at: SHARD_SWEEP_AT,
                })
            }),
        }
    }

    /// Takes one request's token from `key`'s bucket at `now`, or says how
    /// long until one is there.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let shard = &self.shards[shard_of(key)];
        let mut shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if shard.buckets.len() >= shard.sweep_at && !shard.buckets.contains_key(key) {
            let (per_s, burst) = (self.per_s, self.burst);
            shard
                .buckets
                .retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_s < burst);
            shard.sweep_at = (shard.buckets.len() * 2).max(SHARD_SWEEP_AT);
        }
        let bucket = shard.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_s;
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_s))
        }
    }
}

fn shard_of(key: &str) -> usize {
    // Key hashes are hex digests: their last byte is as good as any hash.
    key.as_bytes().last().map_or(0, |b| usize::from(*b) % SHARDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_the_rate_and_other_keys_are_untouched() {
        let limiter = RateLimiter::new(10);
        let start = Instant::now();
        for _ in 0..20 {
            assert!(limiter.take("a1", start).is_ok());
        }
        let wait = limiter.take("a1", start).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        // Another key, even in the same shard, has its whole burst.
        for _ in 0..20 {
            assert!(limiter.take("b1", start).is_ok());
        }
        // A tenth of a second later, one more for the first key.
        let later = start + Duration::from_millis(100);
        assert!(limiter.take("a1", later).is_ok());
        assert!(limiter.take("a1", later).is_err());
        // Idle for long, the bucket is full again, not fuller.
        let much_later = start + Duration::from_secs(60);
        for _ in 0..20 {
            assert!(limiter.take("a1", much_later).is_ok());
        }
        assert!(limiter.take("a1", much_later).is_err());
    }

    #[test]
    fn full_buckets_are_swept_when_a_shard_grows() {
        let limiter = RateLimiter::new(1);
        let start = Instant::now();
        // Keys ending alike share a shard.
        for i in 0..SHARD_SWEEP_AT {
            assert!(limiter.take(&format!("{i:x}0"), start).is_ok());
        }
        // Ten seconds on, every one of them is full again: a new key sweeps them.
        let later = start + Duration::from_secs(10);
        assert!(limiter.take("new0", later).is_ok());
        let held: usize = limiter.shards.iter().map(|s| s.lock().unwrap().buckets.len()).sum();
        assert_eq!(held, 1);
    }
}

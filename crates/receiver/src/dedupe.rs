//! Remembering which deliveries were already handled, by `webhook-id`.
//!
//! Herald delivers at least once: an answer lost on the way back, a timeout
//! after the work was done, or a node that crashed mid-attempt all lead to
//! the same event arriving again, with the same `webhook-id` and the same
//! body (a fresh timestamp and signature). [`Deduplicator`] keeps the ids it
//! saw within a window, in memory and bounded, so a receiver can answer 2xx
//! to a repeat without doing the work twice.
//!
//! It deliberately stays small: it forgets on restart and is not shared
//! between processes. Where doing the work twice is costly, record the id in
//! the same database transaction as the work (a unique constraint on it)
//! instead, or as well.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long an id is remembered by default: one hour covers Herald's
/// standard retries (5 attempts within about 30 s, more when a receiver asks
/// for a `Retry-After` of up to an hour) and the real-time ones (60 retries,
/// 1 s apart), with room to spare.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60 * 60);

/// How many ids are remembered at most by default. An id is about 40 bytes,
/// so this bounds the memory to a few megabytes.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A bounded memory of `webhook-id`s seen recently. Shareable across tasks
/// (`&self` methods behind a short lock; put it in an `Arc`).
///
/// Record an id only when its work is done, or record it first and
/// [`remove`](Self::remove) it if the work fails, so that Herald's retry of a
/// failed delivery is handled rather than skipped. Past the capacity the
/// oldest ids are forgotten first, so under a flood a very late repeat may be
/// handled twice; the memory never grows past the bound.
#[derive(Debug)]
pub struct Deduplicator {
    window: Duration,
    capacity: usize,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// Each remembered id and when it was recorded.
    at: HashMap<String, Instant>,
    /// Ids in the order they were recorded, oldest first, to expire and
    /// evict without scanning. An entry whose time differs from `at` is a
    /// leftover of a removed or re-recorded id and is skipped.
    order: VecDeque<(Instant, String)>,
}

impl Default for Deduplicator {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW, DEFAULT_CAPACITY)
    }
}

impl Deduplicator {
    /// Remembers ids for `window`, at most `capacity` of them (at least one).
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Records `id` and says whether it is new: `true` the first time within
    /// the window, `false` for a repeat. Atomic, so of two concurrent
    /// deliveries of one event only one is told it is new.
    pub fn insert(&self, id: &str) -> bool {
        self.insert_at(id, Instant::now())
    }

    /// [`insert`](Self::insert) as if the clock read `now`.
    pub fn insert_at(&self, id: &str, now: Instant) -> bool {
        let mut seen = self.lock();
        seen.expire(now, self.window);
        if seen.at.contains_key(id) {
            return false;
        }
        while seen.order.len() >= self.capacity {
            seen.pop_oldest();
        }
        seen.at.insert(id.to_owned(), now);
        seen.order.push_back((now, id.to_owned()));
        true
    }

    /// Whether `id` was recorded within the window, without recording it.
    pub fn contains(&self, id: &str) -> bool {
        self.contains_at(id, Instant::now())
    }

    /// [`contains`](Self::contains) as if the clock read `now`.
    pub fn contains_at(&self, id: &str, now: Instant) -> bool {
        let seen = self.lock();
        seen.at
            .get(id)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.window)
    }

    /// Forgets `id`, so its next delivery counts as new: call it when the
    /// work for a recorded id failed and the receiver answers an error.
    pub fn remove(&self, id: &str) {
        self.lock().at.remove(id);
    }

    /// How many ids are remembered now (expired ones may still count until
    /// the next insert).
    pub fn len(&self) -> usize {
        self.lock().at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Nothing panics while the lock is held, and the maps stay
        // consistent even if something did: use them as they are.
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Seen {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < window {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((at, id)) = self.order.pop_front()
            && self.at.get(&id) == Some(&at)
        {
            self.at.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_new_once_within_the_window() {
        let dedupe = Deduplicator::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        assert!(dedupe.insert_at("evt_1", t0));
        assert!(!dedupe.insert_at("evt_1", t0 + Duration::from_secs(59)));
        assert!(dedupe.contains_at("evt_1", t0 + Duration::from_secs(59)));
        assert!(dedupe.insert_at("evt_2", t0));
        // After the window the id is forgotten and counts as new again.
        assert!(!dedupe.contains_at("evt_1", t0 + Duration::from_secs(60)));
        assert!(dedupe.insert_at("evt_1", t0 + Duration::from_secs(60)));
        assert_eq!(dedupe.len(), 1, "evt_2 expired with it");
    }

    #[test]
    fn a_removed_id_counts_as_new() {
        let dedupe = Deduplicator::default();
        assert!(dedupe.insert("evt_1"));
        dedupe.remove("evt_1");
        assert!(!dedupe.contains("evt_1"));
        assert!(dedupe.insert("evt_1"));
        assert!(!dedupe.insert("evt_1"));
    }

    #[test]
    fn memory_stays_within_the_capacity_oldest_forgotten_first() {
        let dedupe = Deduplicator::new(Duration::from_secs(3600), 3);
        let t0 = Instant::now();
        for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            assert!(dedupe.insert_at(id, t0 + Duration::from_secs(i as u64)));
        }
        assert_eq!(dedupe.len(), 3);
        assert!(!dedupe.contains_at("a", t0 + Duration::from_secs(5)));
        for id in ["b", "c", "d"] {
            assert!(dedupe.contains_at(id, t0 + Duration::from_secs(5)), "{id}");
        }
        // Removing and re-recording ids many times never grows the memory.
        for i in 0..100 {
            dedupe.remove("d");
            assert!(dedupe.insert_at("d", t0 + Duration::from_secs(10 + i)));
        }
        assert!(dedupe.lock().order.len() <= 3);
        assert!(dedupe.len() <= 3);
    }
}

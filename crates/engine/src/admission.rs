//! Admission by retry demand: publishes wait while the retries already
//! promised need the capacity.
//!
//! When most attempts fail, every accepted delivery comes back four more
//! times, 2, 6, 14 and 30 s later (the standard schedule). Waves of retries
//! from bursts of publishes seconds apart then land together, and when their
//! sum passes what the process can attempt, retries run late: a run that
//! failed every attempt for 20 s at full publish speed had retries due at
//! 17,400/s in one second against about 11,000 attempts/s, and the 99th
//! percentile retry fired 1.4 s late (`herald-bench backlog`).
//!
//! [`Admission`] keeps a calendar of the retries expected from the fresh
//! deliveries this process accepted: per 100 ms slot over the next 51 s, each
//! fresh delivery adds `f^k` at its k-th retry time, where `f` is the recent
//! share of failed attempts. While `f` is at least one half, a publish is
//! admitted only if the slot of now (retries due plus fresh work) and the
//! slots its retries would land in are still below the process's capacity.
//! A refused publish answers 503 with `Retry-After`, as when the in-memory
//! window is full. Healthy traffic (`f` below one half) is never held back.
//!
//! The capacity is learnt from the retries themselves. It starts at
//! [`MIN_CAPACITY_PER_S`] and rises to any rate of finished attempts seen
//! while retries started on time; while admission holds publishes back and
//! retries keep their times, it grows by [`GROWTH`] per slot, probing for
//! more; a slot in which a retry started more than [`LATE_MS`] after its
//! time brings it down to below the rate actually achieved.
//!
//! Only unordered (team webhook) work counts: real-time endpoints retry once
//! a second, one delivery at a time per endpoint, and cannot pile up.

use std::collections::VecDeque;
use std::sync::Mutex;

const SLOT_MS: i64 = 100;
/// Slots in the calendar: 51.2 s, past the standard schedule's last retry.
const SLOTS: usize = 512;
/// Slots in the window whose finished attempts measure capacity (1 s).
const RATE_WINDOW: usize = (1000 / SLOT_MS) as usize;
/// The capacity assumed before the process has shown more: a fresh process
/// under a first burst of failures is not throttled below this.
pub const MIN_CAPACITY_PER_S: f64 = 1000.0;
/// A retry that starts later than this after its due time marks its slot late.
const LATE_MS: i64 = 25;
/// Lateness readings past this are not congestion but work taken over after
/// a lease ran out or a restart, and are ignored.
const TAKEOVER_MS: i64 = 5000;
/// The capacity's growth per slot while admission is the limit and retries
/// are on time (about 22 % a second).
const GROWTH: f64 = 1.02;
/// After a late slot, the capacity drops to this share of the rate achieved.
const BACKOFF: f64 = 0.85;
/// The failure share from which admission engages.
const ENGAGE_FAILURE: f64 = 0.5;
/// The weight of one attempt in the failure share (an exponential average
/// over the last few hundred attempts).
const FAILURE_WEIGHT: f64 = 1.0 / 256.0;

pub struct Admission {
    /// Cumulative delays of the standard schedule, in slots: where the
    /// first, second… retry of a delivery made now will land.
    retry_offsets: Vec<usize>,
    inner: Mutex<Calendar>,
}

struct Calendar {
    /// The slot number (Unix ms / [`SLOT_MS`]) the calendar is at.
    now_slot: i64,
    /// Expected retries per slot, indexed by slot number modulo [`SLOTS`].
    expected: Vec<f64>,
    /// Fresh deliveries accepted in the current slot.
    fresh_now: f64,
    /// Attempts finished in the current slot, and in the slots before it.
    finished_now: u32,
    finished: VecDeque<u32>,
    /// The attempts per second this process can take: see the module notes.
    capacity_per_s: f64,
    /// Set when the capacity was given and is not learnt.
    pinned: bool,
    /// The current slot: whether a retry started late in it, and whether a
    /// publish was refused in it.
    late_now: bool,
    refused_now: bool,
    /// Slots since the last late one: the capacity only rises again once a
    /// whole rate window has kept its times.
    since_late: usize,
    /// The recent share of failed attempts.
    failure: f64,
}

impl Admission {
    /// `retry_delays_ms`: the standard schedule's delays, in order;
    /// `capacity_per_s`: a fixed capacity, or `None` to learn it.
    pub fn new(retry_delays_ms: &[i64], capacity_per_s: Option<f64>, now_ms: i64) -> Self {
        let mut total = 0;
        let retry_offsets = retry_delays_ms
            .iter()
            .map(|d| {
                total += d;
                ((total + SLOT_MS / 2) / SLOT_MS) as usize
            })
            .filter(|&o| o > 0 && o < SLOTS)
            .collect();
        Self {
            retry_offsets,
            inner: Mutex::new(Calendar {
                now_slot: now_ms.div_euclid(SLOT_MS),
                expected: vec![0.0; SLOTS],
                fresh_now: 0.0,
                finished_now: 0,
                finished: VecDeque::with_capacity(RATE_WINDOW),
                capacity_per_s: capacity_per_s.unwrap_or(MIN_CAPACITY_PER_S),
                pinned: capacity_per_s.is_some(),
                late_now: false,
                refused_now: false,
                since_late: RATE_WINDOW,
                failure: 0.0,
            }),
        }
    }

    fn lock(&self, now_ms: i64) -> std::sync::MutexGuard<'_, Calendar> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.advance(now_ms.div_euclid(SLOT_MS));
        c
    }

    /// Whether a publish may be accepted now without pushing the retries
    /// already expected past what this process can attempt.
    pub fn admits(&self, now_ms: i64) -> bool {
        let mut c = self.lock(now_ms);
        if c.failure < ENGAGE_FAILURE {
            return true;
        }
        let per_slot = c.capacity_per_s * SLOT_MS as f64 / 1000.0;
        let due_now = c.expected[c.index(0)];
        let mut weight = 1.0;
        let admits = !(due_now >= 1.0 && due_now + c.fresh_now + 1.0 > per_slot)
            && self.retry_offsets.iter().all(|&offset| {
                weight *= c.failure;
                c.expected[c.index(offset)] + weight <= per_slot
            });
        c.refused_now |= !admits;
        admits
    }

    /// A retry (not a first attempt) due at `due_ms` starts now.
    pub fn retry_started(&self, now_ms: i64, due_ms: i64) {
        let late = now_ms - due_ms;
        if late > LATE_MS && late < TAKEOVER_MS {
            self.lock(now_ms).late_now = true;
        }
    }

    /// `count` fresh deliveries were accepted now.
    pub fn accepted(&self, now_ms: i64, count: usize) {
        if count == 0 {
            return;
        }
        let mut c = self.lock(now_ms);
        let count = count as f64;
        c.fresh_now += count;
        let mut weight = count;
        for &offset in &self.retry_offsets {
            weight *= c.failure;
            let i = c.index(offset);
            c.expected[i] += weight;
        }
    }

    /// An attempt finished now.
    pub fn finished(&self, now_ms: i64, failed: bool) {
        let mut c = self.lock(now_ms);
        c.finished_now += 1;
        let x = if failed { 1.0 } else { 0.0 };
        c.failure += (x - c.failure) * FAILURE_WEIGHT;
    }

    #[cfg(test)]
    fn capacity_per_s(&self, now_ms: i64) -> f64 {
        self.lock(now_ms).capacity_per_s
    }
}

impl Calendar {
    fn index(&self, offset: usize) -> usize {
        (self.now_slot + offset as i64).rem_euclid(SLOTS as i64) as usize
    }

    /// Moves to `slot`: the slots passed leave the calendar (each is reused
    /// for the far future) and their finished attempts join the rate window.
    fn advance(&mut self, slot: i64) {
        if slot <= self.now_slot {
            return;
        }
        let passed = slot - self.now_slot;
        for step in 0..passed.min(SLOTS as i64) {
            let i = (self.now_slot + step).rem_euclid(SLOTS as i64) as usize;
            self.expected[i] = 0.0;
        }
        for _ in 0..passed.min(RATE_WINDOW as i64) {
            if self.finished.len() == RATE_WINDOW {
                self.finished.pop_front();
            }
            self.finished.push_back(std::mem::take(&mut self.finished_now));
            let per_s = f64::from(self.finished.iter().sum::<u32>());
            let late = std::mem::take(&mut self.late_now);
            let refused = std::mem::take(&mut self.refused_now);
            self.since_late = if late { 0 } else { self.since_late + 1 };
            if self.pinned {
                continue;
            }
            if late {
                self.capacity_per_s = (self.capacity_per_s.min(per_s) * BACKOFF).max(MIN_CAPACITY_PER_S);
            } else if self.since_late >= RATE_WINDOW {
                self.capacity_per_s = self.capacity_per_s.max(per_s) * if refused { GROWTH } else { 1.0 };
            }
        }
        self.late_now = false;
        self.refused_now = false;
        self.finished_now = 0;
        self.fresh_now = 0.0;
        self.now_slot = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD_MS: [i64; 4] = [2000, 4000, 8000, 16000];
    /// When [`failing_for_2s`] is done.
    const T0: i64 = 2000;

    /// Two seconds of 1,000 failed attempts per second: the failure share is
    /// then near 1 and the capacity stays 1,000/s (100 per slot).
    fn failing_for_2s() -> Admission {
        let a = Admission::new(&STANDARD_MS, None, 0);
        finish(&a, 0..20, 100, true);
        a
    }

    /// `per_slot` attempts finish in each of `slots`.
    fn finish(a: &Admission, slots: std::ops::Range<i64>, per_slot: usize, failed: bool) {
        for slot in slots {
            for _ in 0..per_slot {
                a.finished(slot * SLOT_MS, failed);
            }
        }
    }

    /// Admits single deliveries at `now` until refused or `cap` are in.
    fn admit_up_to(a: &Admission, now: i64, cap: usize) -> usize {
        let mut admitted = 0;
        while admitted < cap && a.admits(now) {
            a.accepted(now, 1);
            admitted += 1;
        }
        admitted
    }

    fn admit_all(a: &Admission, now: i64) -> usize {
        let admitted = admit_up_to(a, now, 10_000);
        assert!(admitted < 10_000, "never refused");
        admitted
    }

    #[test]
    fn healthy_traffic_is_never_held_back() {
        let a = Admission::new(&STANDARD_MS, None, 0);
        for slot in 0..1000 {
            let now = slot * SLOT_MS;
            assert!(a.admits(now));
            a.accepted(now, 500);
            for _ in 0..500 {
                a.finished(now, false);
            }
        }
    }

    #[test]
    fn capacity_is_the_best_second_seen() {
        let a = Admission::new(&STANDARD_MS, None, 0);
        assert_eq!(a.capacity_per_s(0), MIN_CAPACITY_PER_S);
        finish(&a, 0..20, 300, false);
        assert_eq!(a.capacity_per_s(20 * SLOT_MS), 3000.0);
        // A quiet second later does not lower it.
        assert_eq!(a.capacity_per_s(60 * SLOT_MS), 3000.0);
    }

    #[test]
    fn failing_traffic_stops_where_its_retries_would_overflow_a_slot() {
        let a = failing_for_2s();
        // Each delivery accepted now adds almost one retry 2 s ahead, in a
        // slot that holds 100.
        let admitted = admit_all(&a, T0);
        assert!((95..=100).contains(&admitted), "admitted {admitted}");
        // The next slot's retries land in a free slot.
        assert!(a.admits(T0 + SLOT_MS));
    }

    #[test]
    fn retries_due_now_leave_room_only_for_the_rest() {
        let a = failing_for_2s();
        for _ in 0..90 {
            a.accepted(T0, 1);
        }
        // 2 s later those 90 retries are due: only about 10 fresh fit.
        let admitted = admit_all(&a, T0 + 2000);
        assert!((8..=10).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn later_retries_count_too() {
        let a = failing_for_2s();
        // Retries expected 6 s ahead (second retries of earlier work) fill
        // that slot: deliveries accepted now would make it overflow.
        {
            let mut c = a.lock(T0);
            let i = c.index(60);
            c.expected[i] = 100.0;
        }
        assert!(!a.admits(T0));
    }

    #[test]
    fn a_late_retry_brings_capacity_below_the_rate_achieved() {
        let a = Admission::new(&STANDARD_MS, None, 0);
        finish(&a, 0..20, 300, false);
        assert_eq!(a.capacity_per_s(20 * SLOT_MS), 3000.0);
        a.retry_started(20 * SLOT_MS, 20 * SLOT_MS - 400);
        let after = a.capacity_per_s(21 * SLOT_MS);
        // Slots 11..=20 finished 2,700; 85 % of that.
        assert!((2290.0..2300.0).contains(&after), "{after}");
        // Work taken over long after its time says nothing about congestion,
        // and the capacity stays down until a whole second kept its times.
        a.retry_started(21 * SLOT_MS, 21 * SLOT_MS - 6000);
        assert_eq!(a.capacity_per_s(22 * SLOT_MS), after);
        finish(&a, 22..40, 300, false);
        assert_eq!(a.capacity_per_s(40 * SLOT_MS), 3000.0);
    }

    #[test]
    fn capacity_grows_while_admission_limits_and_retries_are_on_time() {
        let a = failing_for_2s();
        admit_all(&a, T0);
        let before = a.capacity_per_s(T0);
        a.retry_started(T0, T0 - 10);
        assert_eq!(a.capacity_per_s(T0 + SLOT_MS), before * GROWTH);
    }

    #[test]
    fn a_pinned_capacity_is_not_learnt() {
        let a = Admission::new(&STANDARD_MS, Some(50.0), 0);
        finish(&a, 0..20, 300, false);
        assert_eq!(a.capacity_per_s(20 * SLOT_MS), 50.0);
    }

    #[test]
    fn the_calendar_forgets_slots_it_passed() {
        let a = failing_for_2s();
        admit_all(&a, T0);
        assert!(!a.admits(T0));
        // One lap of the ring later, the old expectations are gone.
        let later = T0 + (SLOTS as i64 + 10) * SLOT_MS;
        assert!(a.admits(later));
    }

    #[test]
    fn a_mostly_healthy_mix_is_not_held_back() {
        let a = Admission::new(&STANDARD_MS, None, 0);
        for slot in 0..40 {
            for i in 0..100 {
                a.finished(slot * SLOT_MS, i % 3 == 0);
            }
        }
        assert_eq!(admit_up_to(&a, 4000, 5000), 5000);
    }
}

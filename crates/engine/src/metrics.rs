//! Counters and histograms for `/metrics`, kept as atomics and rendered as
//! Prometheus text. A handful of numbers does not justify a metrics
//! framework; an observation is two relaxed atomic adds, no lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Metrics {
    pub events_published: AtomicU64,
    pub deliveries_created: AtomicU64,
    pub attempts_succeeded: AtomicU64,
    pub attempts_failed: AtomicU64,
    pub deliveries_failed: AtomicU64,
    pub publishes_shed: AtomicU64,
    pub in_memory: AtomicU64,
    pub in_flight: AtomicU64,
    pub attempt_micros_total: AtomicU64,
    /// Delivery made → successful attempt (contract §7.1).
    pub delivery_latency: Histogram<LATENCY_BUCKETS>,
    pub attempt_success: Histogram<ATTEMPT_BUCKETS>,
    pub attempt_failure: Histogram<ATTEMPT_BUCKETS>,
}

/// Upper bounds (seconds) of `herald_delivery_latency_seconds`: from a
/// first attempt on loopback to the end of the retry schedule.
pub const LATENCY_BOUNDS: [f64; LATENCY_BUCKETS] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];
pub const LATENCY_BUCKETS: usize = 16;
/// Upper bounds (seconds) of `herald_attempt_duration_seconds`, up to the
/// default attempt timeout.
pub const ATTEMPT_BOUNDS: [f64; ATTEMPT_BUCKETS] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
pub const ATTEMPT_BUCKETS: usize = 13;

/// A Prometheus histogram of `N` fixed buckets (and `+Inf`), in
/// microseconds inside so that it adds integers.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    counts: [AtomicU64; N],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    /// Counts one observation of `seconds` against `bounds` (the same
    /// bounds every time).
    pub fn observe(&self, bounds: &[f64; N], seconds: f64) {
        if let Some(i) = bounds.iter().position(|b| seconds <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add((seconds.max(0.0) * 1e6) as u64, Relaxed);
    }

    /// The histogram's lines, cumulative as Prometheus reads them;
    /// `labels` is empty or `key="value"` pairs.
    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64; N]) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in bounds.iter().zip(&self.counts) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}\n{name}_count{braces} {count}");
    }
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn render(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 9] = [
            (
                "herald_events_published_total",
                "counter",
                "Events accepted and stored.",
                &self.events_published,
            ),
            (
                "herald_deliveries_created_total",
                "counter",
                "Deliveries created by published events.",
                &self.deliveries_created,
            ),
            (
                "herald_attempts_succeeded_total",
                "counter",
                "Attempts answered with a 2xx.",
                &self.attempts_succeeded,
            ),
            (
                "herald_attempts_failed_total",
                "counter",
                "Attempts that failed.",
                &self.attempts_failed,
            ),
            (
                "herald_deliveries_failed_total",
                "counter",
                "Deliveries that ran out of attempts.",
                &self.deliveries_failed,
            ),
            (
                "herald_publishes_shed_total",
                "counter",
                "Publishes refused with 503: the engine was full, or its retries needed the capacity.",
                &self.publishes_shed,
            ),
            (
                "herald_deliveries_in_memory",
                "gauge",
                "Deliveries queued or in flight in this process.",
                &self.in_memory,
            ),
            (
                "herald_attempts_in_flight",
                "gauge",
                "Attempts on the wire right now.",
                &self.in_flight,
            ),
            (
                "herald_attempt_duration_microseconds_total",
                "counter",
                "Sum of attempt durations.",
                &self.attempt_micros_total,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Relaxed)
            );
        }
        let latency = "herald_delivery_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {latency} From a delivery's making (its event's acceptance, or a resend) to its successful attempt.\n# TYPE {latency} histogram"
        );
        self.delivery_latency.render(&mut out, latency, "", &LATENCY_BOUNDS);
        let duration = "herald_attempt_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {duration} How long attempts took, by outcome.\n# TYPE {duration} histogram"
        );
        self.attempt_success
            .render(&mut out, duration, "outcome=\"success\"", &ATTEMPT_BOUNDS);
        self.attempt_failure
            .render(&mut out, duration, "outcome=\"failure\"", &ATTEMPT_BOUNDS);
        out
    }

    /// Counts an attempt that took `duration`; a success also counts its
    /// delivery's latency, `latency_ms` since the delivery was made.
    pub fn attempt(&self, duration: std::time::Duration, success: bool, latency_ms: i64) {
        let seconds = duration.as_secs_f64();
        if success {
            self.attempt_success.observe(&ATTEMPT_BOUNDS, seconds);
            self.delivery_latency
                .observe(&LATENCY_BOUNDS, latency_ms.max(0) as f64 / 1000.0);
        } else {
            self.attempt_failure.observe(&ATTEMPT_BOUNDS, seconds);
        }
    }
}

//! Counters for `/metrics`, kept as atomics and rendered as Prometheus text.
//! A handful of numbers does not justify a metrics framework.

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
        out
    }
}

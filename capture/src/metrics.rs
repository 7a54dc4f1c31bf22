//! Prometheus metrics, served as text on `GET /metrics`.
//!
//! A registry per daemon (not the process-global default), so tests that
//! run several daemons in one process read their own numbers.

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The daemon's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Jobs waiting in the queue (due now or later), as of the last check.
    pub queue_depth: IntGauge,
    /// Captures this daemon runs right now.
    pub in_flight: IntGauge,
    /// Seconds from claim to stored screenshot, per successful capture.
    pub capture_seconds: Histogram,
    /// Finished attempts by outcome and reason.
    pub outcomes: IntCounterVec,
    /// Live daemons (a heartbeat in the last 30 s) as the database saw them
    /// at the last check, this one included: every daemon reports the same
    /// number, the one `/health` calls `active_workers`.
    pub active_workers: IntGauge,
    /// 1 when the last queue check (every 2 s) reached the database, 0 when
    /// it failed; 0 until the first check.
    pub database_up: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// # Panics
    ///
    /// Never: the metric definitions are constant and registered once.
    pub fn new() -> Self {
        let registry = Registry::new();
        let queue_depth = IntGauge::new("capture_queue_depth", "Capture jobs waiting in the queue")
            .expect("valid metric");
        let in_flight = IntGauge::new("capture_in_flight", "Captures running in this daemon")
            .expect("valid metric");
        let capture_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "capture_duration_seconds",
                "Time from claim to stored screenshot",
            )
            .buckets(vec![
                0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0,
            ]),
        )
        .expect("valid metric");
        let outcomes = IntCounterVec::new(
            Opts::new("capture_outcomes_total", "Finished capture attempts"),
            &["outcome", "reason"],
        )
        .expect("valid metric");
        let active_workers = IntGauge::new(
            "capture_active_workers",
            "Live capture daemons as the database saw them at the last check",
        )
        .expect("valid metric");
        let database_up = IntGauge::new(
            "capture_database_up",
            "1 when the last queue check reached the database, else 0",
        )
        .expect("valid metric");
        for collector in [
            Box::new(queue_depth.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(in_flight.clone()),
            Box::new(capture_seconds.clone()),
            Box::new(outcomes.clone()),
            Box::new(active_workers.clone()),
            Box::new(database_up.clone()),
        ] {
            registry.register(collector).expect("registered once");
        }
        Self {
            registry,
            queue_depth,
            in_flight,
            capture_seconds,
            outcomes,
            active_workers,
            database_up,
        }
    }

    /// Adds a metric another part of the daemon owns (the egress filter's
    /// refusals, which live as long as its Chromium launcher).
    ///
    /// # Panics
    ///
    /// When a metric of that name is already registered (a programming
    /// error).
    pub fn register(&self, collector: impl prometheus::core::Collector + 'static) {
        self.registry
            .register(Box::new(collector))
            .expect("registered once");
    }

    /// Counts one finished attempt.
    pub fn outcome(&self, outcome: &str, reason: &str) {
        self.outcomes.with_label_values(&[outcome, reason]).inc();
    }

    /// The Prometheus text exposition.
    ///
    /// # Panics
    ///
    /// Never: encoding to memory cannot fail and the format is UTF-8.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding to memory cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

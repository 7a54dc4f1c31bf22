//! Prometheus metrics, served as text on `GET /metrics`.
//!
//! A registry per daemon (not the process-global default), so tests that
//! run several daemons in one process read their own numbers.

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
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
    /// Stored TradingView sessions by `state` (`valid`: checked and signed
    /// in; `expired`; `unchecked`: valid as stored, not checked since), as
    /// the database counts them: every daemon reports the same numbers. No
    /// series until the first count, so a restart never shows a jump from
    /// zero (the `TradingViewSessionsExpiring` alert reads its `delta`).
    pub tradingview_sessions: IntGaugeVec,
    /// Session checks by `outcome` (`valid`, `expired`, `unknown`, `stale`).
    pub session_checks: IntCounterVec,
    /// Screenshots of deleted signals removed from Storage, and deletions
    /// that failed (retried later), by `outcome` (`deleted`, `failed`).
    pub screenshot_deletions: IntCounterVec,
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
        let tradingview_sessions = IntGaugeVec::new(
            Opts::new(
                "capture_tradingview_sessions",
                "Stored TradingView sessions by state (valid, expired, unchecked)",
            ),
            &["state"],
        )
        .expect("valid metric");
        let session_checks = IntCounterVec::new(
            Opts::new(
                "capture_session_checks_total",
                "TradingView session checks by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let screenshot_deletions = IntCounterVec::new(
            Opts::new(
                "capture_screenshot_deletions_total",
                "Screenshots of deleted signals removed from Storage, or failed (retried later)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(queue_depth.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(in_flight.clone()),
            Box::new(capture_seconds.clone()),
            Box::new(outcomes.clone()),
            Box::new(active_workers.clone()),
            Box::new(database_up.clone()),
            Box::new(tradingview_sessions.clone()),
            Box::new(session_checks.clone()),
            Box::new(screenshot_deletions.clone()),
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
            tradingview_sessions,
            session_checks,
            screenshot_deletions,
        }
    }

    /// Sets the stored sessions by state (from the database's count).
    pub fn set_tradingview_sessions(&self, valid: i64, expired: i64, unchecked: i64) {
        for (state, count) in [
            ("valid", valid),
            ("expired", expired),
            ("unchecked", unchecked),
        ] {
            self.tradingview_sessions
                .with_label_values(&[state])
                .set(count);
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

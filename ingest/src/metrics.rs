//! Prometheus metrics for `/metrics`.
//!
//! Labels are closed sets chosen here (route names, outcome codes, database
//! path kinds), never anything from the request: a token, a path or an
//! address as a label would leak secrets and let any caller grow the series
//! without bound.

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric ingest exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Answers by route (`webhook`, `health`, ...) and outcome (`accepted`,
    /// `duplicate`, `unknown_token`, `unavailable`, ...).
    pub requests: IntCounterVec,
    /// Time from request to answer, by route.
    pub latency: HistogramVec,
    /// Requests being answered right now.
    pub in_flight: IntGauge,
    /// Database path failures by path (`rest`, `pool`) and kind
    /// (`timeout`, `unreachable`, `status`, `decode`).
    pub upstream_errors: IntCounterVec,
}

impl Metrics {
    /// # Panics
    ///
    /// Never in practice: the names, labels and buckets are fixed here, and
    /// each metric is registered once.
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("ingest".into()), None).expect("a valid metric namespace");
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Answered requests by route and outcome."),
            &["route", "outcome"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from request to answer, by route.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("in_flight_requests", "Requests being answered now.")
            .expect("valid metric");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "upstream_errors_total",
                "Failures of the database path, by path and kind.",
            ),
            &["path", "kind"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(in_flight.clone()),
            Box::new(upstream_errors.clone()),
        ] {
            registry
                .register(collector)
                .expect("each metric is registered once");
        }
        Self {
            registry,
            requests,
            latency,
            in_flight,
            upstream_errors,
        }
    }

    /// The text exposition format.
    ///
    /// # Panics
    ///
    /// Never in practice: encoding into memory cannot fail, and the text
    /// format is UTF-8.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

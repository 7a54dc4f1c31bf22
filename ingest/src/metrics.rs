//! Prometheus metrics for `/metrics`.
//!
//! Labels are closed sets chosen here (route names, outcome codes, database
//! path kinds), never anything from the request: a token, a path or an
//! address as a label would leak secrets and let any caller grow the series
//! without bound.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use chrono::{DateTime, Utc};
use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};
use webhook_spool::{ReplayCounts, SpoolStats, SyncKind, SyncObserver};

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
    /// Time of each database call the edge makes itself (`ingest_signals`
    /// for a batch of webhooks, `capture_queue_status` for `/health` and
    /// `/health/ready`), failed ones included, by path and call: the
    /// "database slow" alert reads it, and its `_count` is what
    /// `upstream_errors` is a share of.
    pub db_calls: HistogramVec,
    /// Alerts per `ingest_signals` call (the live path's batches).
    pub db_batch_size: Histogram,
    /// Alerts that found the database path saturated (waited past their
    /// budget for a call, or found the queue too long) and went to the spool.
    pub db_saturated: IntCounter,
    /// Alerts waiting for a database call slot right now (set at each
    /// scrape): how far behind the database the batcher is.
    pub db_queued: IntGauge,
    /// Webhooks the spool refused (answered 503), by reason (`spool_full`,
    /// `spool_limited`, `spool_failed`).
    pub spool_refusals: IntCounterVec,
    spool: SpoolMetrics,
}

/// The spool's figures, read from the spool at each scrape.
#[derive(Debug, Clone)]
struct SpoolMetrics {
    entries: IntGauge,
    bytes: IntGauge,
    max_bytes: IntGauge,
    oldest_age: Gauge,
    appended: IntCounter,
    full: IntCounter,
    /// By outcome: `accepted`, `duplicate`, `rejected`, `transient_failure`.
    replays: IntCounterVec,
    /// Time of each write and fsync, by what it made durable (`append`,
    /// `ack`): every spooled webhook's answer waits for one. Observed by
    /// the spool's writer as it happens, not read at a scrape.
    sync_time: HistogramVec,
    /// Two scrapes at once must not both add the same increase.
    sync: Arc<Mutex<()>>,
}

impl SpoolMetrics {
    fn new() -> Self {
        Self {
            entries: IntGauge::new("spool_entries", "Spooled webhooks waiting for replay.")
                .expect("valid metric"),
            bytes: IntGauge::new(
                "spool_bytes",
                "Bytes of spooled webhooks waiting for replay.",
            )
            .expect("valid metric"),
            max_bytes: IntGauge::new("spool_max_bytes", "The cap on spool_bytes.")
                .expect("valid metric"),
            oldest_age: Gauge::new(
                "spool_oldest_age_seconds",
                "Age of the oldest spooled webhook; 0 when the spool is empty.",
            )
            .expect("valid metric"),
            appended: IntCounter::new(
                "spool_appends_total",
                "Webhooks durably spooled since start.",
            )
            .expect("valid metric"),
            full: IntCounter::new(
                "spool_full_total",
                "Appends refused because the spool was full, since start.",
            )
            .expect("valid metric"),
            replays: IntCounterVec::new(
                Opts::new(
                    "spool_replays_total",
                    "Replays of spooled webhooks, by outcome.",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            sync_time: HistogramVec::new(
                HistogramOpts::new(
                    "spool_sync_duration_seconds",
                    "Time of each write and fsync of the spool, by what it made durable (append, ack).",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0,
                ]),
                &["op"],
            )
            .expect("valid metric"),
            sync: Arc::default(),
        }
    }
}

impl Metrics {
    /// # Panics
    ///
    /// Never in practice: the names, labels and buckets are fixed here, and
    /// each metric is registered once.
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("ingest".into()), None).expect("a valid metric namespace");
        let requests = requests_total();
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
        let db_calls = HistogramVec::new(
            HistogramOpts::new(
                "db_call_duration_seconds",
                "Time of each database call the edge makes, failed ones included, by path and call.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
            ]),
            &["path", "call"],
        )
        .expect("valid metric");
        let db_batch_size = Histogram::with_opts(
            HistogramOpts::new("db_batch_size", "Alerts per ingest_signals call.")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        )
        .expect("valid metric");
        let db_saturated = IntCounter::new(
            "db_saturated_total",
            "Webhooks that found the database path saturated and were spooled instead.",
        )
        .expect("valid metric");
        let db_queued = IntGauge::new(
            "db_queued_alerts",
            "Webhooks waiting for a database call slot now.",
        )
        .expect("valid metric");
        let spool_refusals = IntCounterVec::new(
            Opts::new(
                "spool_refusals_total",
                "Webhooks the spool refused (answered 503), by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let spool = SpoolMetrics::new();
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(in_flight.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(db_calls.clone()),
            Box::new(db_batch_size.clone()),
            Box::new(db_saturated.clone()),
            Box::new(db_queued.clone()),
            Box::new(spool_refusals.clone()),
            Box::new(spool.sync_time.clone()),
            Box::new(spool.entries.clone()),
            Box::new(spool.bytes.clone()),
            Box::new(spool.max_bytes.clone()),
            Box::new(spool.oldest_age.clone()),
            Box::new(spool.appended.clone()),
            Box::new(spool.full.clone()),
            Box::new(spool.replays.clone()),
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
            db_calls,
            db_batch_size,
            db_saturated,
            db_queued,
            spool_refusals,
            spool,
        }
    }

    /// What the spool's writer tells each write and fsync's time to
    /// (`ingest_spool_sync_duration_seconds{op}`).
    pub fn spool_sync_observer(&self) -> SyncObserver {
        let series = [SyncKind::Append, SyncKind::Ack]
            .map(|kind| self.spool.sync_time.with_label_values(&[kind.as_str()]));
        SyncObserver::new(move |kind, took| {
            let series = match kind {
                SyncKind::Append => &series[0],
                SyncKind::Ack => &series[1],
            };
            series.observe(took.as_secs_f64());
        })
    }

    /// Records one database call on `path` (`rest`, `pool`) that started at
    /// `started`, whatever its result.
    pub fn db_call(&self, path: &str, call: &str, started: Instant) {
        self.db_calls
            .with_label_values(&[path, call])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Brings the spool's series up to date (before a scrape). Without a
    /// spool they stay at 0.
    pub fn observe_spool(&self, stats: &SpoolStats, replays: ReplayCounts, now: DateTime<Utc>) {
        let spool = &self.spool;
        let _one_at_a_time = spool.sync.lock().unwrap_or_else(PoisonError::into_inner);
        spool.entries.set(saturate(stats.entries));
        spool.bytes.set(saturate(stats.bytes));
        spool.max_bytes.set(saturate(stats.max_bytes));
        spool.oldest_age.set(
            stats
                .oldest_age(now)
                .and_then(|age| age.to_std().ok())
                .map_or(0.0, |age| age.as_secs_f64()),
        );
        catch_up(&spool.appended, stats.appended_total);
        catch_up(&spool.full, stats.full_total);
        for (outcome, total) in [
            ("accepted", replays.accepted),
            ("duplicate", replays.duplicate),
            ("rejected", replays.rejected),
            ("transient_failure", replays.transient_failures),
        ] {
            catch_up(&spool.replays.with_label_values(&[outcome]), total);
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

/// Raises `counter` to `total` (a count kept elsewhere, which only grows).
fn catch_up(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `requests_total`, with the series an alert rule reads at 0 from the start:
/// `WebhookInternalErrors` sums its `increase()`, which would miss the first
/// errors of a series that only appears when they happen.
fn requests_total() -> IntCounterVec {
    let requests = IntCounterVec::new(
        Opts::new("requests_total", "Answered requests by route and outcome."),
        &["route", "outcome"],
    )
    .expect("valid metric");
    requests.with_label_values(&["webhook", "internal_error"]);
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_internal_error_series_is_exported_at_zero_from_the_start() {
        assert!(
            Metrics::new()
                .render()
                .contains(r#"ingest_requests_total{outcome="internal_error",route="webhook"} 0"#)
        );
    }
}

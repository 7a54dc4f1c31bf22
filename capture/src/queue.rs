//! The daemon's side of the Postgres queue (`sql/30_capture_queue.sql`).
//!
//! Every call here is one statement over the pool: claims, completions and
//! failures are short and independent, so a pooled connection (never the
//! LISTEN session, see [`crate::listener`]) carries them. The lease token a
//! claim returns is passed back on every transition: a worker whose lease
//! expired and was handed to someone else gets `false`/`Stale`, and its
//! result is dropped.
//!
//! The daemon connects as a role that may execute `private.*` (granted to
//! `service_role`; on Supabase the `postgres` role is a member of it).

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use signal_vocabulary::{ChartTheme, Direction, Resolution, UnknownValue};
use uuid::Uuid;

/// A database call failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no database connection available")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database query failed")]
    Query(#[from] tokio_postgres::Error),
    /// A column held a value its CHECK constraint does not allow: the schema
    /// changed under the daemon. The claim fails as a whole; its jobs come
    /// back when their lease expires and are dead-lettered once their
    /// attempts are used up, so nothing is rendered from a guess.
    #[error("the database returned a value this daemon does not know")]
    Unknown(#[from] UnknownValue),
}

/// One claimed job, with everything a capture needs.
#[derive(Clone)]
pub struct Job {
    pub signal_id: Uuid,
    pub lease_token: Uuid,
    pub attempt: i16,
    pub max_attempts: i16,
    pub user_id: Uuid,
    pub ticker: String,
    pub exchange: Option<String>,
    pub symbol: Option<String>,
    pub price: Option<f64>,
    pub direction: Option<Direction>,
    pub interval: Option<String>,
    pub chart_id: Option<String>,
    pub signal_time: DateTime<Utc>,
    pub indicator_name: Option<String>,
    /// Sealed TradingView session (see `cookie-seal`); opened only during the capture.
    pub cookies_sealed: Option<Vec<u8>>,
    pub cookies_valid: bool,
    pub resolution: Resolution,
    pub theme: ChartTheme,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("signal_id", &self.signal_id)
            .field("attempt", &self.attempt)
            .field("user_id", &self.user_id)
            .field("ticker", &self.ticker)
            .field("chart_id", &self.chart_id)
            .field("has_cookies", &self.cookies_sealed.is_some())
            .finish_non_exhaustive()
    }
}

/// What `fail_capture_job` decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back in the queue; runs again at the given time.
    Retry,
    /// Dead-lettered: the signal shows `failed` with the reason.
    Failed,
    /// Our lease was gone; someone else owns the job now.
    Stale,
}

/// One point of the trader's history for a ticker (the built-in history chart).
#[derive(Clone, Debug)]
pub struct HistoryPoint {
    pub signal_id: Uuid,
    pub time: DateTime<Utc>,
    pub price: f64,
    /// The decimals the alert gave the price with (`67890.50`: 2), which
    /// a float cannot keep: the chart labels its axis at that precision.
    pub decimals: u32,
    pub direction: Option<Direction>,
}

/// Queue depth as `public.capture_queue_status()` reports it.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueStatus {
    /// Jobs waiting, due now or later (retries wait for their backoff).
    pub queued: i64,
    /// Jobs some worker holds under a lease.
    pub running: i64,
    /// Dead-lettered jobs.
    pub dead: i64,
    /// Daemons whose heartbeat the database saw in the last 30 s.
    pub active_workers: i64,
}

/// Typed calls on the queue functions.
#[derive(Clone, Debug)]
pub struct Queue {
    pool: Pool,
}

impl Queue {
    /// The Telegram notification about `signal_id`, if its owner wants one
    /// for this outcome (see [`crate::telegram::notification_for`]).
    pub async fn notification(
        &self,
        signal_id: Uuid,
        screenshot: crate::telegram::Screenshot,
    ) -> Result<Option<crate::telegram::Notification>, QueueError> {
        let client = self.pool.get().await?;
        Ok(crate::telegram::notification_for(&client, signal_id, screenshot).await?)
    }

    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// The pool, for the daemon's other periodic work (deleted screenshots,
    /// session checks, the Telegram linking loop).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Claims up to `limit` due jobs under a lease of `lease`.
    pub async fn claim(
        &self,
        worker: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Job>, QueueError> {
        let client = self.pool.get().await?;
        let limit = i32::try_from(limit.min(100)).unwrap_or(100);
        let lease_secs = lease.as_secs_f64();
        let rows = client
            .query(
                "select signal_id, lease_token, attempt, max_attempts, user_id, ticker, exchange, symbol, \
                        price::float8, direction, chart_interval, chart_id, signal_time, indicator_name, \
                        tradingview_cookies_sealed, coalesce(cookies_valid, false), \
                        coalesce(screenshot_resolution, '720p'), coalesce(chart_theme, 'dark') \
                   from private.claim_capture_jobs($1, $2, make_interval(secs => $3))",
                &[&worker, &limit, &lease_secs],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Job {
                    signal_id: r.get(0),
                    lease_token: r.get(1),
                    attempt: r.get(2),
                    max_attempts: r.get(3),
                    user_id: r.get(4),
                    ticker: r.get(5),
                    exchange: r.get(6),
                    symbol: r.get(7),
                    price: r.get(8),
                    direction: optional(r.get(9))?,
                    interval: r.get(10),
                    chart_id: r.get(11),
                    signal_time: r.get(12),
                    indicator_name: r.get(13),
                    cookies_sealed: r.get(14),
                    cookies_valid: r.get(15),
                    resolution: r.get::<_, &str>(16).parse()?,
                    theme: r.get::<_, &str>(17).parse()?,
                })
            })
            .collect()
    }

    /// Completes a job with its stored screenshot and the trader's note
    /// about it, if any; `false` when the lease was lost.
    pub async fn complete(
        &self,
        job: &Job,
        path: &str,
        url: Option<&str>,
        note: Option<&str>,
    ) -> Result<bool, QueueError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "select private.complete_capture_job($1, $2, $3, $4, $5)",
                &[&job.signal_id, &job.lease_token, &path, &url, &note],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Queues the removal of an object uploaded for a signal that was
    /// deleted while it was captured; `false` when the signal still exists
    /// (the lease was lost to another daemon, whose upload it is too).
    pub async fn queue_orphan(&self, job: &Job, path: &str) -> Result<bool, QueueError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "select private.queue_orphan_screenshot($1, $2)",
                &[&job.signal_id, &path],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Records a failed attempt; the SQL decides between retry and dead letter.
    pub async fn fail(
        &self,
        job: &Job,
        reason: &str,
        retryable: bool,
    ) -> Result<FailOutcome, QueueError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "select outcome from private.fail_capture_job($1, $2, $3, $4)",
                &[&job.signal_id, &job.lease_token, &reason, &retryable],
            )
            .await?;
        Ok(match row.get::<_, &str>(0) {
            "retry" => FailOutcome::Retry,
            "failed" => FailOutcome::Failed,
            _ => FailOutcome::Stale,
        })
    }

    /// Gives a job back without counting the attempt (shutdown).
    pub async fn release(&self, job: &Job) -> Result<bool, QueueError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "select private.release_capture_job($1, $2)",
                &[&job.signal_id, &job.lease_token],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Returns jobs whose worker vanished to the queue; how many moved.
    pub async fn reclaim_expired(&self) -> Result<i32, QueueError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one("select private.reclaim_expired_capture_jobs()", &[])
            .await?;
        Ok(row.get(0))
    }

    /// Raises the "daemon waiting" flag so the next ingest sends a NOTIFY.
    pub async fn idle(&self) -> Result<(), QueueError> {
        let client = self.pool.get().await?;
        client
            .execute("select private.capture_daemon_idle()", &[])
            .await?;
        Ok(())
    }

    pub async fn heartbeat(&self, worker: &str, concurrency: u16) -> Result<(), QueueError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "select private.capture_worker_heartbeat($1, $2)",
                &[&worker, &i32::from(concurrency)],
            )
            .await?;
        Ok(())
    }

    pub async fn stopped(&self, worker: &str) -> Result<(), QueueError> {
        let client = self.pool.get().await?;
        client
            .execute("select private.capture_worker_stopped($1)", &[&worker])
            .await?;
        Ok(())
    }

    pub async fn status(&self) -> Result<QueueStatus, QueueError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "select (s->>'queue_length')::int8, (s->>'running')::int8, (s->>'dead_letter')::int8, \
                        (s->>'active_workers')::int8 \
                   from public.capture_queue_status() s",
                &[],
            )
            .await?;
        Ok(QueueStatus {
            queued: row.get(0),
            running: row.get(1),
            dead: row.get(2),
            active_workers: row.get(3),
        })
    }

    /// Queue length and live daemons, for `GET /health`.
    pub async fn health(&self) -> Result<(i64, i64), QueueError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "select (s->>'queue_length')::int8, (s->>'active_workers')::int8 \
                   from public.capture_queue_status() s",
                &[],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    /// Marks the trader's session expired (and leaves them a notice),
    /// unless they stored a new one meanwhile; `true` when this call expired
    /// it, so the trader is told once.
    pub async fn expire_session(&self, job: &Job) -> Result<bool, QueueError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "select private.expire_tradingview_session($1, $2)",
                &[&job.user_id, &job.cookies_sealed],
            )
            .await?;
        Ok(row.get(0))
    }

    /// The trader's latest signals on this ticker, oldest first, for the built-in history chart.
    pub async fn history(&self, job: &Job, limit: i64) -> Result<Vec<HistoryPoint>, QueueError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "select id, \"timestamp\", price::float8, scale(price), direction from ( \
                   select id, \"timestamp\", price, direction from public.signals \
                    where user_id = $1 and ticker = $2 and price is not null and \"timestamp\" <= $3 \
                    order by \"timestamp\" desc limit $4) h \
                  order by \"timestamp\"",
                &[&job.user_id, &job.ticker, &job.signal_time, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(HistoryPoint {
                    signal_id: r.get(0),
                    time: r.get(1),
                    price: r.get(2),
                    decimals: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
                    direction: optional(r.get(4))?,
                })
            })
            .collect()
    }
}

/// Reads a nullable column of one of the shared vocabularies.
fn optional<T: std::str::FromStr<Err = UnknownValue>>(
    value: Option<&str>,
) -> Result<Option<T>, UnknownValue> {
    value.map(str::parse).transpose()
}

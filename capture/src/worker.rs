//! The queue loop and what happens to one job.
//!
//! The loop claims as many jobs as it has free slots (`concurrency`), runs
//! each on its own task, and claims again as soon as one finishes (so a job
//! that arrived while every slot was busy starts when the first slot frees,
//! not at the next poll). When a claim leaves a slot free (the queue has
//! nothing more due) it announces itself idle
//! (`private.capture_daemon_idle()`), rescans once (closing the race with an
//! ingest that committed meanwhile) and sleeps until a NOTIFY (relayed by
//! [`crate::listener`]), a finished job, or the poll interval, whichever
//! comes first. Announcing only when nothing at all was claimed would leave
//! a job arriving beside a running one waiting for that one to finish. Every few seconds it also reclaims expired leases (a daemon
//! that vanished) and sends its heartbeat.
//!
//! Shutdown has two steps: `stop` ends claiming and lets jobs in flight
//! finish; if they are not done within the grace period, `abort` makes each
//! give its lease back (`release_capture_job`, attempt not counted) so
//! another daemon picks it up at once instead of after the lease expires.
//!
//! One job: pick what to render (the trader's chart with their session, or
//! the built-in chart of their signal history), render it on the blocking
//! pool, store the PNG, complete the job, all under a hard timeout. Every
//! failure carries a reason the trader can read; the SQL decides between
//! retry (2 s, 4 s, 8 s) and `failed`. An expired session is not retried:
//! the trader must paste fresh cookies first.

use crate::telegram::{Screenshot, Telegram};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use cookie_seal::Keyring;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::history_chart;
use crate::metrics::Metrics;
use crate::queue::{FailOutcome, Job, Queue, QueueError};
use crate::render::{Chrome, RenderError, Request, Source};
use crate::storage::{Storage, StorageError, Stored};

/// How often expired leases are reclaimed and the heartbeat is sent.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(2);
/// Wait after a failed claim before trying again.
const CLAIM_ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// How often drain mode rechecks a queue whose jobs are not due yet.
const DRAIN_RECHECK: Duration = Duration::from_millis(200);
/// How many earlier signals the built-in chart shows.
const HISTORY_POINTS: i64 = 200;

/// What `encodeURIComponent` leaves alone.
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How long the daemon keeps going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Wait for work until the shutdown signal.
    Serve,
    /// Work until the queue holds nothing queued or running, then return.
    Drain,
}

/// The loop's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub worker_id: String,
    pub concurrency: u16,
    /// Lease per claim; longer than `job_timeout`.
    pub lease: Duration,
    /// Hard limit per attempt.
    pub job_timeout: Duration,
    /// Rescan this often even without a NOTIFY.
    pub poll_interval: Duration,
    /// Chart URL with `{chart_id}`, `{symbol}`, `{interval}`, `{theme}`,
    /// `{ticker}`, `{exchange}` placeholders (each value URL-encoded).
    pub chart_url_template: String,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Database(#[from] QueueError),
    #[error("the capture took longer than {0:?}")]
    Timeout(Duration),
    #[error("the capture task panicked")]
    Panicked,
}

impl Failure {
    /// A metric label.
    fn label(&self) -> &'static str {
        match self {
            Self::Render(RenderError::SessionExpired) => "session_expired",
            Self::Render(RenderError::NotReady(_)) => "not_ready",
            Self::Render(RenderError::Unreachable(_)) => "unreachable",
            Self::Render(RenderError::Browser(_)) | Self::Panicked => "browser",
            Self::Render(RenderError::Cancelled) => "cancelled",
            Self::Storage(_) => "storage",
            Self::Database(_) => "database",
            Self::Timeout(_) => "timeout",
        }
    }

    fn retryable(&self) -> bool {
        !matches!(self, Self::Render(RenderError::SessionExpired))
    }

    /// What the trader reads on the signal (`screenshot_error`).
    fn reason(&self) -> String {
        match self {
            Self::Render(RenderError::SessionExpired) => "Your TradingView session has expired or was signed out. \
                 Paste fresh sessionid and sessionid_sign cookies in your settings to get chart screenshots again."
                .into(),
            Self::Render(RenderError::NotReady(limit)) => format!(
                "The chart did not finish loading within {} s.",
                limit.as_secs()
            ),
            Self::Render(RenderError::Unreachable(error)) => {
                format!("The chart page could not be loaded ({error}).")
            }
            Self::Render(RenderError::Browser(_) | RenderError::Cancelled) | Self::Panicked => {
                "The screenshot browser failed while rendering the chart.".into()
            }
            Self::Storage(_) => "The screenshot could not be stored.".into(),
            Self::Database(_) => "The screenshot service lost its database connection.".into(),
            Self::Timeout(limit) => format!(
                "Taking the screenshot took longer than {} s.",
                limit.as_secs()
            ),
        }
    }
}

/// The capture worker: the parts it needs, shared by its job tasks.
#[derive(Debug)]
pub struct Worker {
    pub queue: Queue,
    pub chrome: Arc<Chrome>,
    pub storage: Storage,
    /// `None` when no seal keys are configured: every capture then uses the
    /// built-in chart.
    pub keys: Option<Arc<Keyring>>,
    pub metrics: Metrics,
    pub settings: Settings,
    /// Telegram notifications, when a bot token is configured. Sent after
    /// the job's outcome is recorded, in a task of their own: a slow or
    /// failing Bot API never delays or changes a capture.
    pub telegram: Option<Arc<Telegram>>,
}

impl Worker {
    /// Runs the queue loop until `stop` (or, in drain mode, an empty queue);
    /// then waits up to `grace` for jobs in flight and gives back the rest.
    ///
    /// # Panics
    ///
    /// Never: a job is only claimed for a free slot, so its permit exists.
    #[expect(
        clippy::too_many_lines,
        reason = "the loop reads best as one piece: claim, wait, shut down"
    )]
    pub async fn run(
        self: Arc<Self>,
        mode: Mode,
        wake: Arc<Notify>,
        stop: CancellationToken,
        grace: Duration,
    ) {
        let tracker = TaskTracker::new();
        let abort = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(usize::from(self.settings.concurrency)));
        let finished = Arc::new(Notify::new());
        let mut last_maintenance: Option<Instant> = None;
        let mut announced_idle = false;

        while !stop.is_cancelled() {
            if last_maintenance.is_none_or(|at| at.elapsed() >= MAINTENANCE_EVERY) {
                self.maintenance().await;
                last_maintenance = Some(Instant::now());
            }

            let free = slots.available_permits();
            let mut claimed = 0;
            if free > 0 {
                match self
                    .queue
                    .claim(&self.settings.worker_id, free, self.settings.lease)
                    .await
                {
                    Ok(jobs) => {
                        claimed = jobs.len();
                        for job in jobs {
                            let permit = Arc::clone(&slots)
                                .try_acquire_owned()
                                .expect("claimed no more jobs than free slots");
                            let worker = Arc::clone(&self);
                            let abort = abort.clone();
                            let finished = Arc::clone(&finished);
                            let span = tracing::info_span!(
                                "capture",
                                signal_id = %job.signal_id,
                                attempt = job.attempt,
                            );
                            tracker.spawn(
                                async move {
                                    worker.process(job, abort).await;
                                    drop(permit);
                                    finished.notify_one();
                                }
                                .instrument(span),
                            );
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "Claiming capture jobs failed");
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = tokio::time::sleep(CLAIM_ERROR_BACKOFF) => continue,
                        }
                    }
                }
            }
            if free > 0 && claimed == free {
                // Every slot got a job; there may be more: claim again when one frees.
                announced_idle = false;
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = finished.notified() => {}
                }
                continue;
            }

            match mode {
                Mode::Drain => {
                    if claimed == 0 && tracker.is_empty() {
                        match self.queue.status().await {
                            Ok(status) if status.queued == 0 && status.running == 0 => break,
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(error = %error, "Reading the queue status failed");
                            }
                        }
                    }
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = finished.notified() => {}
                        () = tokio::time::sleep(DRAIN_RECHECK) => {}
                    }
                }
                Mode::Serve => {
                    if claimed < free && !announced_idle {
                        // A slot is free with nothing due: ask for a NOTIFY
                        // on the next job (ingest sends one only to a daemon
                        // that said so), then rescan once before sleeping.
                        match self.queue.idle().await {
                            Ok(()) => announced_idle = true,
                            Err(error) => tracing::warn!(error = %error, "Announcing idle failed"),
                        }
                        continue;
                    }
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = finished.notified() => {}
                        () = wake.notified() => {}
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                    }
                    announced_idle = false;
                }
            }
        }

        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                in_flight = tracker.len(),
                "Captures did not finish within the grace period; giving their jobs back"
            );
            abort.cancel();
            tracker.wait().await;
        }
        if let Err(error) = self.queue.stopped(&self.settings.worker_id).await {
            tracing::warn!(error = %error, "Could not deregister the worker");
        }
    }

    async fn maintenance(&self) {
        match self.queue.reclaim_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "Reclaimed jobs with expired leases"),
            Err(error) => tracing::warn!(error = %error, "Reclaiming expired leases failed"),
        }
        if let Err(error) = self
            .queue
            .heartbeat(&self.settings.worker_id, self.settings.concurrency)
            .await
        {
            tracing::warn!(error = %error, "Heartbeat failed");
        }
        match self.queue.status().await {
            Ok(status) => self.metrics.queue_depth.set(status.queued),
            Err(error) => {
                tracing::warn!(error = %error, "Reading the queue status failed");
            }
        }
    }

    /// One job, start to finish; never returns an error (every outcome is
    /// recorded in the queue or left to lease expiry).
    async fn process(self: Arc<Self>, job: Job, abort: CancellationToken) {
        self.metrics.in_flight.inc();
        let started = Instant::now();
        let limit = self.settings.job_timeout;
        // Stops the blocking render when this attempt ends for any reason.
        let cancel = CancellationToken::new();
        let _stop_render = cancel.clone().drop_guard();
        let result = tokio::select! {
            result = tokio::time::timeout(limit, self.attempt(&job, cancel.clone())) => {
                result.unwrap_or(Err(Failure::Timeout(limit)))
            }
            () = abort.cancelled() => {
                match self.queue.release(&job).await {
                    Ok(true) => tracing::info!("Gave the job back on shutdown"),
                    Ok(false) => tracing::info!("The job's lease was already gone"),
                    Err(error) => tracing::warn!(error = %error, "Could not give the job back; its lease will expire"),
                }
                self.metrics.outcome("released", "shutdown");
                self.metrics.in_flight.dec();
                return;
            }
        };
        match result {
            Ok((stored, kind, png)) => {
                match self
                    .queue
                    .complete(&job, &stored.path, stored.url.as_deref())
                    .await
                {
                    Ok(true) => {
                        if let Some(png) = png {
                            self.notify(job.signal_id, Screenshot::Captured(png));
                        }
                        let seconds = started.elapsed().as_secs_f64();
                        self.metrics.capture_seconds.observe(seconds);
                        self.metrics.outcome("completed", kind);
                        tracing::info!(kind, path = %stored.path, seconds, "Capture completed");
                    }
                    Ok(false) => {
                        self.metrics.outcome("stale", "lease_lost");
                        tracing::warn!("The lease expired before completion; result discarded");
                    }
                    Err(error) => {
                        self.metrics.outcome("error", "database");
                        tracing::warn!(error = %error, "Completing the job failed; its lease will expire");
                    }
                }
            }
            Err(failure) => {
                if matches!(failure, Failure::Render(RenderError::SessionExpired))
                    && let Err(error) = self.queue.mark_session_expired(&job).await
                {
                    tracing::warn!(error = %error, "Could not mark the session expired");
                }
                let reason = failure.reason();
                match self.queue.fail(&job, &reason, failure.retryable()).await {
                    Ok(outcome) => {
                        let outcome = match outcome {
                            FailOutcome::Retry => "retry",
                            FailOutcome::Failed => {
                                self.notify(job.signal_id, Screenshot::Failed(reason.clone()));
                                "failed"
                            }
                            FailOutcome::Stale => "stale",
                        };
                        self.metrics.outcome(outcome, failure.label());
                        tracing::warn!(error = %failure, outcome, "Capture attempt failed");
                    }
                    Err(error) => {
                        self.metrics.outcome("error", "database");
                        tracing::warn!(error = %error, capture_error = %failure, "Recording the failure failed; its lease will expire");
                    }
                }
            }
        }
        self.metrics.in_flight.dec();
    }

    /// Renders and stores; returns where, and which kind of chart it was.
    async fn attempt(
        &self,
        job: &Job,
        cancel: CancellationToken,
    ) -> Result<(Stored, &'static str, Option<Bytes>), Failure> {
        let (width, height) = job.resolution.viewport();
        let dark = job.theme.is_dark();
        let (source, kind) =
            if let (Some(session), Some(chart_id)) = (self.session(job), job.chart_id.as_deref()) {
                (
                    Source::Chart {
                        url: self.chart_url(job, chart_id),
                        session,
                    },
                    "chart",
                )
            } else {
                let history = self.queue.history(job, HISTORY_POINTS).await?;
                let headline = history_chart::Headline {
                    signal_id: job.signal_id,
                    ticker: &job.ticker,
                    price: job.price,
                    direction: job.direction,
                    time: job.signal_time,
                    indicator: job.indicator_name.as_deref(),
                };
                (
                    Source::Html(history_chart::page(
                        &headline,
                        &history,
                        job.resolution,
                        job.theme,
                    )),
                    "fallback",
                )
            };
        let request = Request {
            source,
            width,
            height,
            dark,
            cancel,
        };
        let chrome = Arc::clone(&self.chrome);
        let rendering = Instant::now();
        let png = tokio::task::spawn_blocking(move || chrome.capture(&request))
            .await
            .map_err(|_| Failure::Panicked)??;
        let render_ms = u64::try_from(rendering.elapsed().as_millis()).unwrap_or(u64::MAX);
        let storing = Instant::now();
        let bytes = png.len();
        // A copy for the trader's Telegram message, only when one may be sent.
        let copy = self.telegram.is_some().then(|| Bytes::from(png.clone()));
        let stored = self.storage.put(job.user_id, job.signal_id, png).await?;
        tracing::debug!(
            render_ms,
            store_ms = u64::try_from(storing.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes,
            "Rendered and stored"
        );
        Ok((stored, kind, copy))
    }

    /// Tells the trader, if they asked for it, in a task of its own.
    fn notify(&self, signal_id: uuid::Uuid, screenshot: Screenshot) {
        let Some(telegram) = self.telegram.clone() else {
            return;
        };
        let queue = self.queue.clone();
        tokio::spawn(
            async move {
                match queue.notification(signal_id, screenshot).await {
                    Ok(Some(notification)) => match telegram.send(&notification).await {
                        Ok(()) => tracing::info!("Telegram notification sent"),
                        Err(error) => {
                            tracing::warn!(error = %error, "Telegram notification not delivered");
                        }
                    },
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(error = %error, "Could not read the notification settings");
                    }
                }
            }
            .instrument(tracing::info_span!("notify", %signal_id)),
        );
    }

    /// The trader's session, opened, when they have a valid one.
    fn session(&self, job: &Job) -> Option<cookie_seal::TradingViewSession> {
        let sealed = job
            .cookies_sealed
            .as_deref()
            .filter(|_| job.cookies_valid)?;
        let keys = self.keys.as_ref()?;
        match keys.open(job.user_id, sealed) {
            Ok(session) => Some(session),
            Err(error) => {
                tracing::error!(error = %error, "Cannot open the trader's sealed session; using the built-in chart");
                None
            }
        }
    }

    /// The chart URL from the template, every value URL-encoded.
    pub fn chart_url(&self, job: &Job, chart_id: &str) -> String {
        chart_url(&self.settings.chart_url_template, job, chart_id)
    }
}

/// Fills the chart URL template for `job`.
pub fn chart_url(template: &str, job: &Job, chart_id: &str) -> String {
    let symbol = match (job.exchange.as_deref(), job.symbol.as_deref()) {
        (Some(exchange), Some(symbol)) => format!("{exchange}:{symbol}"),
        _ => job.ticker.clone(),
    };
    let encode = |value: &str| utf8_percent_encode(value, URL_COMPONENT).to_string();
    template
        .replace("{chart_id}", &encode(chart_id))
        .replace("{symbol}", &encode(&symbol))
        .replace("{interval}", &encode(job.interval.as_deref().unwrap_or("")))
        .replace("{theme}", job.theme.as_str())
        .replace("{ticker}", &encode(&job.ticker))
        .replace("{exchange}", &encode(job.exchange.as_deref().unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            signal_id: uuid::Uuid::new_v4(),
            lease_token: uuid::Uuid::new_v4(),
            attempt: 1,
            max_attempts: 3,
            user_id: uuid::Uuid::new_v4(),
            ticker: "BINANCE:BTCUSDT".into(),
            exchange: Some("BINANCE".into()),
            symbol: Some("BTC/USDT".into()),
            price: Some(1.0),
            direction: Some(signal_vocabulary::Direction::Long),
            interval: Some("1D".into()),
            chart_id: Some("abc".into()),
            signal_time: chrono::Utc::now(),
            indicator_name: None,
            cookies_sealed: None,
            cookies_valid: false,
            resolution: signal_vocabulary::Resolution::Hd,
            theme: signal_vocabulary::ChartTheme::Dark,
        }
    }

    #[test]
    fn chart_url_encodes_every_part() {
        let url = chart_url(
            "https://www.tradingview.com/chart/{chart_id}/?symbol={symbol}&interval={interval}&theme={theme}",
            &job(),
            "a/b?c",
        );
        assert_eq!(
            url,
            "https://www.tradingview.com/chart/a%2Fb%3Fc/?symbol=BINANCE%3ABTC%2FUSDT&interval=1D&theme=dark"
        );
    }

    #[test]
    fn session_expiry_is_not_retried_and_says_what_to_do() {
        let failure = Failure::Render(RenderError::SessionExpired);
        assert!(!failure.retryable());
        assert!(failure.reason().contains("Paste fresh sessionid"));
        assert!(Failure::Timeout(Duration::from_secs(30)).retryable());
        assert!(
            Failure::Timeout(Duration::from_secs(30))
                .reason()
                .contains("30 s")
        );
    }
}

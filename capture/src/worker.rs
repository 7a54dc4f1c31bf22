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
//! a job arriving beside a running one waiting for that one to finish.
//! Every few seconds it also reclaims expired leases (a daemon that
//! vanished) and sends its heartbeat.
//!
//! [`Worker::run`] is that loop and nothing else: each round claims for the
//! free slots, then waits for the reason to claim again (`wait`, with one
//! function per mode), until one of them says stop; the jobs in flight
//! (their slots, tasks and the abort switch) are one value, `InFlight`.
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
//! retry (2 s, 4 s, 8 s) and `failed`. What a retry cannot fix is not
//! retried: an expired session (the trader must paste fresh cookies first;
//! they are told once, see [`crate::session_check::tell_trader`]) and a
//! Storage refusal such as a refused key or a missing bucket. A picture of
//! another symbol than the alert's is stored with a note for the trader. An
//! upload that lands after its signal was deleted is queued for deletion
//! ([`crate::deletions`]).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cookie_seal::Keyring;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::history_chart;
use crate::metrics::Metrics;
use crate::page::Expect;
use crate::queue::{FailOutcome, Job, Queue, QueueError};
use crate::render::{Chrome, RenderError, Request, Shot, Source};
use crate::session_check;
use crate::storage::{Storage, StorageError, Stored};
use crate::telegram::{Screenshot, Telegram};

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
    /// How the Telegram bot's chat linking polls (with a bot token only).
    pub telegram_poll: crate::telegram_link::PollSettings,
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
            Self::Render(RenderError::SessionExpired(_)) => "session_expired",
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
        match self {
            Self::Render(RenderError::SessionExpired(_)) => false,
            Self::Storage(error) => error.is_transient(),
            _ => true,
        }
    }

    /// What the trader reads on the signal (`screenshot_error`).
    fn reason(&self) -> String {
        match self {
            Self::Render(RenderError::SessionExpired(_)) => "Your TradingView session has expired or was signed out. \
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
            Self::Storage(error) => error.trader_reason(),
            Self::Database(_) => "The screenshot service lost its database connection.".into(),
            Self::Timeout(limit) => format!(
                "Taking the screenshot took longer than {} s.",
                limit.as_secs()
            ),
        }
    }
}

/// A stored screenshot: where, which kind of chart, a copy for Telegram
/// (only when a message may be sent), and the trader's note about it.
#[derive(Debug)]
struct Done {
    stored: Stored,
    kind: &'static str,
    png: Option<Bytes>,
    note: Option<String>,
}

/// Whether the queue loop goes round again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Again,
    Stop,
}

/// What one claim did: slots that were free, jobs that filled them.
#[derive(Clone, Copy, Debug)]
struct Claim {
    free: usize,
    claimed: usize,
}

/// Resolves with [`Next::Again`] when `event` happens, or [`Next::Stop`]
/// when `stop` comes first.
async fn until(stop: &CancellationToken, event: impl Future<Output = ()>) -> Next {
    tokio::select! {
        () = stop.cancelled() => Next::Stop,
        () = event => Next::Again,
    }
}

/// The jobs in flight: a slot and a task each.
#[derive(Debug)]
struct InFlight {
    tracker: TaskTracker,
    /// One permit per job that may run at once (`concurrency`).
    slots: Arc<Semaphore>,
    /// Wakes the loop whenever a job ends, so it claims again at once.
    finished: Arc<Notify>,
    /// Makes every job still running give its lease back (once the grace
    /// period is over).
    abort: CancellationToken,
}

impl InFlight {
    fn new(concurrency: u16) -> Self {
        Self {
            tracker: TaskTracker::new(),
            slots: Arc::new(Semaphore::new(usize::from(concurrency))),
            finished: Arc::new(Notify::new()),
            abort: CancellationToken::new(),
        }
    }

    /// Runs `job` on a task of its own, holding a slot until it ends.
    fn start(&self, worker: Arc<Worker>, job: Job) {
        // A job is only claimed for a free slot, so its permit exists.
        let permit = Arc::clone(&self.slots)
            .try_acquire_owned()
            .expect("claimed no more jobs than free slots");
        let abort = self.abort.clone();
        let finished = Arc::clone(&self.finished);
        let span =
            tracing::info_span!("capture", signal_id = %job.signal_id, attempt = job.attempt);
        self.tracker.spawn(
            async move {
                worker.process(job, abort).await;
                drop(permit);
                finished.notify_one();
            }
            .instrument(span),
        );
    }

    /// Waits up to `grace` for every job to end, then makes the rest give
    /// their leases back and waits for that.
    async fn finish(&self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.tracker.len(),
                "Captures did not finish within the grace period; giving their jobs back"
            );
            self.abort.cancel();
            self.tracker.wait().await;
        }
    }
}

/// What the queue loop remembers between rounds.
#[derive(Debug)]
struct LoopState {
    in_flight: InFlight,
    last_maintenance: Option<Instant>,
    /// Whether this daemon has said it is idle since it last slept.
    announced_idle: bool,
}

impl LoopState {
    fn new(concurrency: u16) -> Self {
        Self {
            in_flight: InFlight::new(concurrency),
            last_maintenance: None,
            announced_idle: false,
        }
    }

    fn maintenance_due(&self) -> bool {
        self.last_maintenance
            .is_none_or(|at| at.elapsed() >= MAINTENANCE_EVERY)
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
    pub async fn run(
        self: Arc<Self>,
        mode: Mode,
        wake: Arc<Notify>,
        stop: CancellationToken,
        grace: Duration,
    ) {
        let mut state = LoopState::new(self.settings.concurrency);
        while !stop.is_cancelled() {
            if state.maintenance_due() {
                self.maintenance().await;
                state.last_maintenance = Some(Instant::now());
            }
            let next = match self.claim_free_slots(&state.in_flight).await {
                Ok(claim) => self.wait(claim, mode, &mut state, &wake, &stop).await,
                Err(error) => {
                    tracing::warn!(error = %error, "Claiming capture jobs failed");
                    until(&stop, tokio::time::sleep(CLAIM_ERROR_BACKOFF)).await
                }
            };
            if next == Next::Stop {
                break;
            }
        }
        state.in_flight.finish(grace).await;
        if let Err(error) = self.queue.stopped(&self.settings.worker_id).await {
            tracing::warn!(error = %error, "Could not deregister the worker");
        }
    }

    /// Claims a job for every free slot and starts each on its own task.
    async fn claim_free_slots(self: &Arc<Self>, in_flight: &InFlight) -> Result<Claim, QueueError> {
        let free = in_flight.slots.available_permits();
        if free == 0 {
            return Ok(Claim { free, claimed: 0 });
        }
        let jobs = self
            .queue
            .claim(&self.settings.worker_id, free, self.settings.lease)
            .await?;
        let claimed = jobs.len();
        for job in jobs {
            in_flight.start(Arc::clone(self), job);
        }
        Ok(Claim { free, claimed })
    }

    /// Waits until it is time to claim again: when every slot got a job,
    /// until one frees (there may be more); otherwise as the mode says.
    async fn wait(
        &self,
        claim: Claim,
        mode: Mode,
        state: &mut LoopState,
        wake: &Notify,
        stop: &CancellationToken,
    ) -> Next {
        if claim.free > 0 && claim.claimed == claim.free {
            state.announced_idle = false;
            return until(stop, state.in_flight.finished.notified()).await;
        }
        match mode {
            Mode::Drain => self.wait_draining(claim, &state.in_flight, stop).await,
            Mode::Serve => self.wait_serving(claim, state, wake, stop).await,
        }
    }

    /// Drain mode: stops once nothing is claimed, in flight, queued or
    /// running; else looks again when a job ends or after a short pause.
    async fn wait_draining(
        &self,
        claim: Claim,
        in_flight: &InFlight,
        stop: &CancellationToken,
    ) -> Next {
        if claim.claimed == 0 && in_flight.tracker.is_empty() && self.queue_is_empty().await {
            return Next::Stop;
        }
        until(stop, async {
            tokio::select! {
                () = in_flight.finished.notified() => {}
                () = tokio::time::sleep(DRAIN_RECHECK) => {}
            }
        })
        .await
    }

    /// Serve mode: with a slot free and nothing due, asks for a NOTIFY on
    /// the next job (ingest sends one only to a daemon that said so) and
    /// rescans once before sleeping; then sleeps until a wake-up, a finished
    /// job or the poll interval.
    async fn wait_serving(
        &self,
        claim: Claim,
        state: &mut LoopState,
        wake: &Notify,
        stop: &CancellationToken,
    ) -> Next {
        if claim.claimed < claim.free && !state.announced_idle {
            match self.queue.idle().await {
                Ok(()) => state.announced_idle = true,
                Err(error) => tracing::warn!(error = %error, "Announcing idle failed"),
            }
            return Next::Again;
        }
        let next = until(stop, async {
            tokio::select! {
                () = state.in_flight.finished.notified() => {}
                () = wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        })
        .await;
        state.announced_idle = false;
        next
    }

    /// Whether the queue holds nothing queued or running; a failed read
    /// counts as not empty (drain mode then looks again).
    async fn queue_is_empty(&self) -> bool {
        match self.queue.status().await {
            Ok(status) => status.queued == 0 && status.running == 0,
            Err(error) => {
                tracing::warn!(error = %error, "Reading the queue status failed");
                false
            }
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
            Ok(status) => {
                self.metrics.queue_depth.set(status.queued);
                self.metrics.active_workers.set(status.active_workers);
                self.metrics.database_up.set(1);
            }
            Err(error) => {
                self.metrics.database_up.set(0);
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
                self.give_back(&job).await;
                self.metrics.in_flight.dec();
                return;
            }
        };
        match result {
            Ok(done) => self.completed(&job, &done, started).await,
            Err(failure) => self.failed(&job, &failure).await,
        }
        self.metrics.in_flight.dec();
    }

    /// Shutdown ran out of grace: the job goes back to the queue at once,
    /// its attempt not counted.
    async fn give_back(&self, job: &Job) {
        match self.queue.release(job).await {
            Ok(true) => tracing::info!("Gave the job back on shutdown"),
            Ok(false) => tracing::info!("The job's lease was already gone"),
            Err(error) => {
                tracing::warn!(error = %error, "Could not give the job back; its lease will expire");
            }
        }
        self.metrics.outcome("released", "shutdown");
    }

    /// Records a stored screenshot, unless the lease was lost meanwhile.
    async fn completed(&self, job: &Job, done: &Done, started: Instant) {
        let Done {
            stored, kind, png, ..
        } = done;
        match self
            .queue
            .complete(
                job,
                &stored.path,
                stored.url.as_deref(),
                done.note.as_deref(),
            )
            .await
        {
            Ok(true) => {
                if let Some(png) = png {
                    self.notify(job.signal_id, Screenshot::Captured(png.clone()));
                }
                let seconds = started.elapsed().as_secs_f64();
                self.metrics.capture_seconds.observe(seconds);
                self.metrics.outcome("completed", kind);
                tracing::info!(kind, path = %stored.path, seconds, note = done.note.as_deref(), "Capture completed");
            }
            Ok(false) => {
                self.metrics.outcome("stale", "lease_lost");
                // The signal may have been deleted while it was captured:
                // then nobody else will complete it, and the object just
                // uploaded must go too.
                match self.queue.queue_orphan(job, &stored.path).await {
                    Ok(true) => tracing::info!(
                        path = %stored.path,
                        "The signal was deleted during its capture; its screenshot is queued for deletion"
                    ),
                    Ok(false) => {
                        tracing::warn!("The lease expired before completion; result discarded");
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "Could not check whether the signal still exists");
                    }
                }
            }
            Err(error) => {
                self.metrics.outcome("error", "database");
                tracing::warn!(error = %error, "Completing the job failed; its lease will expire");
            }
        }
    }

    /// Records a failed attempt; the SQL decides between retry and
    /// `failed`. An expired session is marked so on the trader's row first
    /// (and the trader told, once).
    async fn failed(&self, job: &Job, failure: &Failure) {
        if matches!(failure, Failure::Render(RenderError::SessionExpired(_))) {
            match self.queue.expire_session(job).await {
                Ok(true) => {
                    let pool = self.queue.pool().clone();
                    let telegram = self.telegram.clone();
                    let user_id = job.user_id;
                    tokio::spawn(
                        async move {
                            session_check::tell_trader(&pool, telegram.as_deref(), user_id).await;
                        }
                        .instrument(tracing::info_span!("notify_session", %user_id)),
                    );
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(error = %error, "Could not mark the session expired"),
            }
        }
        let reason = failure.reason();
        match self.queue.fail(job, &reason, failure.retryable()).await {
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

    /// Renders and stores; returns where, and which kind of chart it was.
    async fn attempt(&self, job: &Job, cancel: CancellationToken) -> Result<Done, Failure> {
        let (width, height) = job.resolution.viewport();
        let dark = job.theme.is_dark();
        let (source, kind) =
            if let (Some(session), Some(chart_id)) = (self.session(job), job.chart_id.as_deref()) {
                (
                    Source::Chart {
                        url: self.chart_url(job, chart_id),
                        session,
                        expect: Some(Expect::new(&alert_symbol(job), job.interval.as_deref())),
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
        let Shot { png, note } = tokio::task::spawn_blocking(move || chrome.capture(&request))
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
        Ok(Done {
            stored,
            kind,
            png: copy,
            note,
        })
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

/// The alert's instrument as TradingView names it: `EXCHANGE:SYMBOL`, or the
/// ticker as sent.
fn alert_symbol(job: &Job) -> String {
    match (job.exchange.as_deref(), job.symbol.as_deref()) {
        (Some(exchange), Some(symbol)) => format!("{exchange}:{symbol}"),
        _ => job.ticker.clone(),
    }
}

/// Fills the chart URL template for `job`.
pub fn chart_url(template: &str, job: &Job, chart_id: &str) -> String {
    let symbol = alert_symbol(job);
    // Stored as TradingView's menu labels it (`1h`); its URLs want `60`.
    let interval = job
        .interval
        .as_deref()
        .and_then(crate::page::resolution)
        .unwrap_or_default();
    let encode = |value: &str| utf8_percent_encode(value, URL_COMPONENT).to_string();
    template
        .replace("{chart_id}", &encode(chart_id))
        .replace("{symbol}", &encode(&symbol))
        .replace("{interval}", &encode(&interval))
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
            interval: Some("4h".into()),
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
            "https://www.tradingview.com/chart/a%2Fb%3Fc/?symbol=BINANCE%3ABTC%2FUSDT&interval=240&theme=dark"
        );
    }

    #[test]
    fn session_expiry_is_not_retried_and_says_what_to_do() {
        let failure = Failure::Render(RenderError::SessionExpired("an Access Denied page".into()));
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

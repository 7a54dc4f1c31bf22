//! The daemon's top level: what runs, and how it stops.
//!
//! Up to six parts run side by side: the health/metrics endpoint, the LISTEN
//! session ([`crate::listener`]), the queue loop ([`crate::worker`]), the
//! removal of deleted signals' screenshots ([`crate::deletions`], every
//! [`crate::deletions::DELETIONS_EVERY`]), the TradingView session checks
//! with their gauge ([`crate::session_check`]) and, with a Telegram bot and
//! outside drain mode, the bot's chat linking ([`crate::telegram_link`]).
//! The queue loop ends on shutdown (after finishing or giving back its jobs
//! within the grace period) or, in drain mode, when the queue is empty (then
//! the deletions due are removed once more, so a drain leaves nothing queued
//! that it could do); then the periodic parts, the listener and the bot are
//! cancelled (the bot gives its poller lease back) and the health server is
//! stopped with the same grace period, so the process answers probes for as
//! long as it is doing anything.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use service_runtime::http::Drain;
use service_runtime::postgres::ConnectConfig;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::deletions::{self, DELETIONS_EVERY};
use crate::health::{HealthState, serve_health};
use crate::session_check::SessionChecks;
use crate::telegram_link::LinkBot;
use crate::worker::{Mode, Worker};

/// The daemon's periodic work beside the queue.
#[derive(Debug, Default)]
pub struct Upkeep {
    /// The session checks and the sessions gauge; `None`: neither.
    pub sessions: Option<Arc<SessionChecks>>,
    /// Whether the sessions are checked (`CAPTURE_SESSION_CHECK_INTERVAL`
    /// not `off`, and seal keys to open them); the gauge is kept either way.
    pub check_sessions: bool,
}

/// Why [`run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown future resolved.
    Shutdown,
    /// Drain mode ran out of work.
    Drained,
}

/// What [`run`] reports when it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Why the main loop ended.
    pub stopped: Stopped,
    /// How the health server's drain went.
    pub health: Drain,
}

/// Runs the daemon: serves health on `health`, listens for wake-ups on a
/// dedicated session made as `database` says, and works the queue until `shutdown`
/// resolves or, in [`Mode::Drain`], until there is no work left.
pub async fn run(
    health: TcpListener,
    worker: Arc<Worker>,
    database: ConnectConfig,
    upkeep: Upkeep,
    mode: Mode,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Outcome {
    let state = Arc::new(HealthState {
        queue: worker.queue.clone(),
        metrics: worker.metrics.clone(),
        started: Instant::now(),
    });
    let (stop_health, health_stopped) = oneshot::channel::<()>();
    let health_server = tokio::spawn(serve_health(
        health,
        state,
        async {
            // Resolves on an explicit stop or when the sender is dropped;
            // both mean the daemon is done.
            let _ = health_stopped.await;
        },
        grace,
    ));

    let wake = Arc::new(Notify::new());
    let stop_listening = CancellationToken::new();
    let listener = tokio::spawn(crate::listener::listen(
        database,
        Arc::clone(&wake),
        stop_listening.clone(),
    ));

    let stop_periodic = CancellationToken::new();
    let removing = tokio::spawn(remove_deleted_screenshots(
        Arc::clone(&worker),
        stop_periodic.clone(),
    ));
    let checking = upkeep
        .sessions
        .map(|sessions| tokio::spawn(sessions.run(upkeep.check_sessions, stop_periodic.clone())));
    // Drain mode is for back-fills and tests: it answers nobody on Telegram.
    let link_bot = worker
        .telegram
        .as_ref()
        .filter(|_| mode == Mode::Serve)
        .and_then(|telegram| {
            LinkBot::new(
                Arc::clone(telegram),
                worker.queue.pool().clone(),
                worker.settings.worker_id.clone(),
                worker.settings.telegram_poll,
            )
        })
        .map(|bot| tokio::spawn(bot.run(stop_listening.clone())));

    let stop = CancellationToken::new();
    let mut work = tokio::spawn(Arc::clone(&worker).run(mode, wake, stop.clone(), grace));
    let stopped = tokio::select! {
        result = &mut work => {
            if let Err(join_error) = result {
                tracing::error!(error = %join_error, "Queue loop failed");
            }
            Stopped::Drained
        }
        () = shutdown => {
            stop.cancel();
            if let Err(join_error) = work.await {
                tracing::error!(error = %join_error, "Queue loop failed");
            }
            Stopped::Shutdown
        }
    };

    stop_periodic.cancel();
    let _ = removing.await;
    if let Some(checking) = checking {
        let _ = checking.await;
    }
    if stopped == Stopped::Drained {
        remove_deleted_once(&worker, &CancellationToken::new()).await;
    }
    stop_listening.cancel();
    let _ = listener.await;
    if let Some(link_bot) = link_bot {
        let _ = link_bot.await;
    }
    let _ = stop_health.send(());
    let health = match health_server.await {
        Ok(drain) => drain,
        Err(join_error) => {
            // The serve loop does not panic; if it ever did, its
            // connections are gone, which is what a deadline miss means.
            tracing::error!(error = %join_error, "Health server task failed");
            Drain::DeadlineExceeded
        }
    };
    Outcome { stopped, health }
}

/// Removes deleted signals' screenshots every [`DELETIONS_EVERY`] until
/// `stop`.
async fn remove_deleted_screenshots(worker: Arc<Worker>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        remove_deleted_once(&worker, &stop).await;
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(DELETIONS_EVERY) => {}
        }
    }
}

/// One pass over the deletions due; failures are logged (and the entries
/// retried by the next pass).
async fn remove_deleted_once(worker: &Worker, stop: &CancellationToken) {
    let db = match worker.queue.pool().get().await {
        Ok(db) => db,
        Err(error) => {
            tracing::warn!(error = %error, "No database connection for the screenshot deletions");
            return;
        }
    };
    if let Err(error) = deletions::remove_due(
        &db,
        &worker.storage,
        deletions::BATCH,
        Some(&worker.metrics),
        stop,
    )
    .await
    {
        tracing::warn!(error = %error, "Removing deleted signals' screenshots failed");
    }
}

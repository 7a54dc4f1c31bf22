//! The daemon's top level: what runs, and how it stops.
//!
//! Three parts run side by side: the health/metrics endpoint, the LISTEN
//! session ([`crate::listener`]) and the queue loop ([`crate::worker`]);
//! with a Telegram bot and outside drain mode, a fourth: the bot's chat
//! linking ([`crate::telegram_link`]). The queue loop ends on shutdown
//! (after finishing or giving back its jobs within the grace period) or, in
//! drain mode, when the queue is empty; then the listener and the bot are
//! cancelled (the bot gives its poller lease back) and the health server is
//! stopped with the same grace period, so the process answers probes for as
//! long as it is doing anything.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use service_runtime::http::Drain;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::health::{HealthState, serve_health};
use crate::telegram_link::LinkBot;
use crate::worker::{Mode, Worker};

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
/// dedicated session to `listen_url`, and works the queue until `shutdown`
/// resolves or, in [`Mode::Drain`], until there is no work left.
pub async fn run(
    health: TcpListener,
    worker: Arc<Worker>,
    listen_url: String,
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
        listen_url,
        Arc::clone(&wake),
        stop_listening.clone(),
    ));

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
    let mut work = tokio::spawn(worker.run(mode, wake, stop.clone(), grace));
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

//! The daemon's top level: what runs, and how it stops.
//!
//! Today that is the health endpoint plus a main loop that has no queue work
//! yet (see the crate docs). The shape is the final one: the main loop ends
//! on shutdown (or when drain mode finds nothing left to do), and then the
//! health server is stopped with the same grace period, so the process
//! answers liveness probes for as long as it is doing anything.

use std::future::Future;
use std::time::Duration;

use service_runtime::http::Drain;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::health::serve_health;

/// How long the daemon keeps going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Wait for work until the shutdown signal.
    Serve,
    /// Work until nothing is left, then return. Queue work does not exist
    /// yet, so today this returns as soon as the daemon has started.
    Drain,
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

/// Runs the daemon: serves health on `health` and runs the main loop until
/// `shutdown` resolves or, in [`Mode::Drain`], until there is no work left.
pub async fn run(
    health: TcpListener,
    mode: Mode,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Outcome {
    let (stop_health, health_stopped) = oneshot::channel::<()>();
    let health_server = tokio::spawn(serve_health(
        health,
        async {
            // Resolves on an explicit stop or when the sender is dropped;
            // both mean the daemon is done.
            let _ = health_stopped.await;
        },
        grace,
    ));

    let stopped = match mode {
        Mode::Serve => {
            shutdown.await;
            Stopped::Shutdown
        }
        Mode::Drain => Stopped::Drained,
    };

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

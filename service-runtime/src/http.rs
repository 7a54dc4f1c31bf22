//! The accept loop both binaries' HTTP servers run on, with graceful shutdown.
//!
//! Why it is shared: draining correctly is fiddly (stop accepting, tell every
//! open connection to finish its current request and close, wait, but never
//! longer than the deadline the orchestrator gives us before SIGKILL), and
//! both the webhook server and the capture daemon's health endpoint need
//! exactly that. Routing stays with each binary; this module only moves
//! connections.
//!
//! Connections speak HTTP/1.1 (keep-alive) or HTTP/2 without TLS (h2c), as
//! the client chooses. TLS is terminated by the reverse proxy in front.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// How long to pause after `accept` fails before trying again. Accept errors
/// are mostly resource exhaustion (`EMFILE`, `ENFILE`, `ENOMEM`); retrying
/// in a tight loop would burn a core while nothing can improve, and a short
/// pause lets in-flight connections finish and free descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How the drain after shutdown ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a drain that hit its deadline cut requests off and should be reported"]
pub enum Drain {
    /// Every open connection finished on its own within the grace period.
    Complete,
    /// The grace period ran out with connections still open. They are
    /// dropped when the runtime shuts down.
    DeadlineExceeded,
}

/// Serves HTTP on `listener` until `shutdown` resolves, then drains.
///
/// `make_service` is called once per accepted connection with the peer
/// address, so handlers can see who is calling. On shutdown the listener is
/// closed at once (new connections are refused), idle keep-alive connections
/// are closed, requests in flight get up to `grace` to complete.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    mut make_service: M,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Drain
where
    M: FnMut(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer enables hyper's HTTP/1 header read timeout (30 s by default),
    // so a client that never finishes its headers cannot hold a connection.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());

    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "Failed to accept a connection; pausing");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let connection = builder
                    .serve_connection(TokioIo::new(stream), make_service(peer))
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        // Client-side trouble (resets, malformed requests,
                        // timeouts) is routine on the internet, not our error.
                        tracing::debug!(%peer, %error, "Connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);

    tokio::select! {
        () = graceful.shutdown() => Drain::Complete,
        () = tokio::time::sleep(grace) => Drain::DeadlineExceeded,
    }
}

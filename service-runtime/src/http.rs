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
//!
//! [`respond`] is the one way either binary writes a JSON answer, so every
//! JSON body has the same content type.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// Connection-level limits of [`serve_with`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a client may take to send a request's headers (HTTP/1).
    /// A slow-loris client is disconnected when it runs out.
    pub header_read_timeout: Duration,
    /// Connections served at once. Past it, new connections wait in the
    /// kernel's accept backlog instead of each costing a task and buffers.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// Serves HTTP on `listener` until `shutdown` resolves, then drains, with
/// the default [`Limits`].
pub async fn serve<M, S, B>(
    listener: TcpListener,
    make_service: M,
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
    serve_with(listener, make_service, shutdown, grace, Limits::default()).await
}

/// Serves HTTP on `listener` until `shutdown` resolves, then drains.
///
/// `make_service` is called once per accepted connection with the peer
/// address, so handlers can see who is calling. On shutdown the listener is
/// closed at once (new connections are refused), idle keep-alive connections
/// are closed, requests in flight get up to `grace` to complete.
pub async fn serve_with<M, S, B>(
    listener: TcpListener,
    mut make_service: M,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: Limits,
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
    // A timer enables hyper's HTTP/1 header read timeout, so a client that
    // never finishes its headers cannot hold a connection.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));

    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            accepted = accept_within(&listener, &slots) => {
                let (stream, peer, slot) = match accepted {
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
                    let _slot = slot;
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

/// Waits for a free connection slot, then for a connection.
async fn accept_within(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let slot = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the connection semaphore is never closed");
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, slot))
}

/// A JSON answer: `status`, `value` serialised as the body,
/// `Content-Type: application/json`.
pub fn respond(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    // Serialising our own plain values (strings, numbers, bools, maps of
    // them) cannot fail; if it ever did, an empty object is still JSON.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

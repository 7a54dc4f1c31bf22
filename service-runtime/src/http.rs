//! The accept loop both binaries' HTTP servers run on, with graceful shutdown.
//!
//! Why it is shared: draining correctly is fiddly (stop accepting, tell every
//! open connection to finish its current request and close, wait, but never
//! longer than the deadline the orchestrator gives us before SIGKILL), and
//! both the webhook server and the capture daemon's health endpoint need
//! exactly that. Routing stays with each binary; this module only moves
//! connections.
//!
//! Connections cannot pile up, whoever opens them (TradingView opens a new
//! connection per alert, thousands at bar close, from four addresses, so
//! nothing here is kept per address):
//!
//! - **HTTP/1.1 only.** TradingView, load balancers and the usual reverse
//!   proxies speak HTTP/1.1 to a backend. h2c is off: it would need its own
//!   idle and ping handling, and one h2 connection multiplexes many
//!   requests, which would make the connection limit no limit on requests.
//! - **A connection that sends nothing** is closed once
//!   [`Limits::header_read_timeout`] passes without a complete request head
//!   (hyper's timer, which starts as soon as the connection is served, and
//!   also covers a client that sends its headers slowly).
//! - **Idle keep-alive** connections (no request in flight) are closed after
//!   [`Limits::keep_alive_timeout`]. The wait for the next request's headers
//!   is also bounded by the header timeout, so the shorter of the two
//!   applies.
//! - **At the connection limit**, new connections wait in the kernel's
//!   backlog, and every open connection that has been idle for a short while
//!   ([`PRESSURE_IDLE`]) is closed at once to make room: under a flood of
//!   silent connections, requests that are actually being made still get
//!   slots within a fraction of a second. A connection whose request has
//!   begun to arrive is not idle (hyper finishes a request it has started
//!   reading), and the watchdog looks only after hyper has read what came.
//!   A bar close must not reach the limit at all: a connection that a
//!   starved sender has opened but not yet written to looks exactly like a
//!   silent one, so `INGEST_MAX_CONNECTIONS` is set above the burst.
//!
//! - **The accept backlog** is set by [`listen`], not left at the 1,024
//!   that `TcpListener::bind` asks for: at a bar close thousands of
//!   connections arrive within a second, and a connection that finds the
//!   backlog full has its SYN dropped, so the client tries again only after
//!   1 s, then 3 s: TradingView's 3 s are gone before hyper ever sees it.
//!
//! [`respond`] is the one way either binary writes a JSON answer, so every
//! JSON body has the same content type.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long to pause after `accept` fails before trying again. Accept errors
/// are mostly resource exhaustion (`EMFILE`, `ENFILE`, `ENOMEM`); retrying
/// in a tight loop would burn a core while nothing can improve, and a short
/// pause lets in-flight connections finish and free descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// At the connection limit, connections idle for this long are closed to
/// make room. Long enough that a client which has just connected and is
/// sending its request is not cut off; short enough that a flood of silent
/// connections is cleared many times a second.
pub const PRESSURE_IDLE: Duration = Duration::from_millis(200);

/// The accept backlog [`listen`] asks for unless told otherwise: Linux's
/// default ceiling (`net.core.somaxconn`, 4,096 since 5.4), which also caps
/// whatever is asked for.
pub const DEFAULT_BACKLOG: u32 = 4096;

/// Listens on `addr` with an accept backlog of `backlog` connections (the
/// kernel caps it at `net.core.somaxconn`), with `SO_REUSEADDR` as
/// `TcpListener::bind` sets it, so a restart does not wait for the old
/// socket's `TIME_WAIT`.
///
/// # Errors
/// The socket could not be created, bound or put to listening (the address
/// is taken, or not ours).
pub fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

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
    /// How long a client may take to send a request's headers, counted from
    /// the moment the server waits for them (a new connection, or the end
    /// of the previous request). A silent or slow-loris client is
    /// disconnected when it runs out.
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight is kept open.
    pub keep_alive_timeout: Duration,
    /// Connections served at once. Past it, new connections wait in the
    /// kernel's accept backlog (and idle ones are closed to make room)
    /// instead of each costing a task and buffers.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(30),
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
    let mut builder = http1::Builder::new();
    // A timer enables hyper's header read timeout, so a client that never
    // finishes its headers (or never starts them) cannot hold a connection.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let stopping = CancellationToken::new();
    let pressure = Arc::new(Notify::new());
    let connections = TaskTracker::new();

    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            accepted = accept_within(&listener, &slots, &pressure) => {
                let (stream, peer, slot) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "Failed to accept a connection; pausing");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let connection = Connection {
                    activity: Arc::new(Activity::new()),
                    keep_alive: limits.keep_alive_timeout,
                    stopping: stopping.clone(),
                    pressure: Arc::clone(&pressure),
                };
                let service = Tracked {
                    inner: make_service(peer),
                    activity: Arc::clone(&connection.activity),
                };
                let served = builder.serve_connection(TokioIo::new(stream), service);
                connections.spawn(async move {
                    let _slot = slot;
                    if let Err(error) = connection.run(served).await {
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
    stopping.cancel();
    connections.close();

    tokio::select! {
        () = connections.wait() => Drain::Complete,
        () = tokio::time::sleep(grace) => Drain::DeadlineExceeded,
    }
}

/// Waits for a free connection slot, then for a connection. At the limit,
/// idle connections are told to make room while it waits.
async fn accept_within(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    pressure: &Notify,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let slot = match Arc::clone(slots).try_acquire_owned() {
        Ok(slot) => slot,
        Err(_) => loop {
            pressure.notify_waiters();
            tokio::select! {
                slot = Arc::clone(slots).acquire_owned() => {
                    break slot.expect("the connection semaphore is never closed");
                }
                // Connections that were not idle enough a moment ago may be now.
                () = tokio::time::sleep(PRESSURE_IDLE / 2) => {}
            }
        },
    };
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, slot))
}

/// What the watchdog of one connection knows: requests in flight, and since
/// when none has been.
#[derive(Debug)]
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when the last request ended (0: none
    /// has; the connection has been idle since it was accepted).
    idle_since_ms: AtomicU64,
    /// Signalled when a request ends, so the watchdog sets its deadline anew.
    ended: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            ended: Notify::new(),
        }
    }

    /// Since when the connection has had no request in flight, if it has
    /// none now.
    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::SeqCst) == 0).then(|| {
            self.started + Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst))
        })
    }

    /// Milliseconds since `started`, at least 1 (0 means "never").
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// Counts a request in flight for as long as it lives (also when its
/// future is dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(self.0.now_ms(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.ended.notify_one();
    }
}

/// The service of one connection, counting its requests in flight.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(&self.activity);
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            drop(in_flight);
            response
        })
    }
}

/// One connection and the watchdog that closes it when it is idle too long,
/// when room is needed, or when the server shuts down.
struct Connection {
    activity: Arc<Activity>,
    keep_alive: Duration,
    stopping: CancellationToken,
    pressure: Arc<Notify>,
}

impl Connection {
    async fn run<S, B>(
        self,
        served: http1::Connection<TokioIo<tokio::net::TcpStream>, Tracked<S>>,
    ) -> Result<(), hyper::Error>
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
        S::Future: Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let mut served = pin!(served);
        let mut closing = false;
        loop {
            let idle_since = self.activity.idle_since();
            let deadline = idle_since.map(|since| since + self.keep_alive);
            tokio::select! {
                // The connection first: whatever has arrived is read (and a
                // request it completes counted in flight) before any branch
                // below judges the connection idle.
                biased;
                result = served.as_mut() => return result,
                () = self.stopping.cancelled(), if !closing => {
                    served.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = sleep_until(deadline), if !closing && deadline.is_some() => {
                    if self.activity.idle_since() == idle_since {
                        served.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
                () = self.pressure.notified(), if !closing => {
                    if self
                        .activity
                        .idle_since()
                        .is_some_and(|since| since.elapsed() >= PRESSURE_IDLE)
                    {
                        served.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
                // A request ended: the idle deadline starts again.
                () = self.activity.ended.notified(), if !closing => {}
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Serves on a fresh listener with `max_connections`, every request
    /// answered `200` at once, until the returned token is cancelled.
    fn server(max_connections: usize) -> (SocketAddr, CancellationToken) {
        let listener = listen("127.0.0.1:0".parse().unwrap(), 64).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let limits = Limits {
            header_read_timeout: Duration::from_secs(5),
            keep_alive_timeout: Duration::from_secs(5),
            max_connections,
        };
        let stopped = stop.clone();
        tokio::spawn(serve_with(
            listener,
            |_| {
                hyper::service::service_fn(|_: Request<Incoming>| async {
                    Ok::<_, Infallible>(respond(StatusCode::OK, &"ok"))
                })
            },
            async move { stopped.cancelled().await },
            Duration::from_secs(1),
            limits,
        ));
        (addr, stop)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_limit_a_connection_still_sending_its_request_is_not_cut_off() {
        // One slot. The first client takes 600 ms to send its request head,
        // a few bytes every 50 ms; a second client waits for the slot all
        // along, so the server is under pressure the whole time and the
        // first connection has finished no request for longer than
        // PRESSURE_IDLE. A request that has begun to arrive is finished and
        // answered (hyper's graceful shutdown closes only a connection with
        // nothing read), and then the second client is served.
        let (addr, stop) = server(1);
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            answer
        });
        let head =
            b"GET / HTTP/1.1\r\nhost: x\r\nx-a: 1\r\nx-b: 2\r\nx-c: 3\r\nconnection: close\r\n\r\n";
        for piece in head.chunks(head.len().div_ceil(12)) {
            first
                .write_all(piece)
                .await
                .expect("the server kept the connection open");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut answer = Vec::new();
        first.read_to_end(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "the sending client was cut off: {:?}",
            String::from_utf8_lossy(&answer)
        );
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the waiting client got the slot")
            .unwrap();
        assert!(second.starts_with(b"HTTP/1.1 200"));
        stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_limit_a_silent_connection_makes_room() {
        // The same slot held by a client that sends nothing: it is closed
        // once it has been silent for PRESSURE_IDLE, and the waiting client
        // is answered well within a second.
        let (addr, stop) = server(1);
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let mut waiting = tokio::net::TcpStream::connect(addr).await.unwrap();
        waiting
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(1), waiting.read_to_end(&mut answer))
            .await
            .expect("answered within a second")
            .unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        assert!(
            started.elapsed() >= Duration::from_millis(170),
            "closed before it was idle"
        );
        let mut rest = Vec::new();
        let read = silent.read_to_end(&mut rest).await;
        assert!(
            read.is_err() || rest.is_empty(),
            "the silent connection was closed"
        );
        stop.cancel();
    }

    /// Connects to `addr` and reports whether the handshake completed
    /// within `within` (a SYN the kernel dropped is retried only after 1 s).
    async fn connects(addr: SocketAddr, within: Duration) -> Option<tokio::net::TcpStream> {
        tokio::time::timeout(within, tokio::net::TcpStream::connect(addr))
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// `count` connections to `addr`, each of which must connect within
    /// 500 ms (`what` says why it should).
    async fn connect_all(addr: SocketAddr, count: usize, what: &str) -> Vec<tokio::net::TcpStream> {
        let mut held = Vec::with_capacity(count);
        for n in 0..count {
            let stream = connects(addr, Duration::from_millis(500)).await;
            held.push(
                stream.unwrap_or_else(|| panic!("connection {n} did not connect, but {what}")),
            );
        }
        held
    }

    #[tokio::test]
    async fn the_backlog_asked_for_is_the_backlog_the_kernel_keeps() {
        // Nothing accepts: connections the backlog has no room for have
        // their SYN dropped and do not connect within the window.
        let small = listen("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = small.local_addr().unwrap();
        let _held = connect_all(addr, 3, "fits a backlog of 2 (+1)").await;
        assert!(
            connects(addr, Duration::from_millis(300)).await.is_none(),
            "a fourth connection found room in a backlog of 2"
        );

        let large = listen("127.0.0.1:0".parse().unwrap(), 512).unwrap();
        let _held = connect_all(large.local_addr().unwrap(), 300, "fits a backlog of 512").await;
    }

    #[tokio::test]
    async fn a_taken_address_is_an_error_and_ipv6_listens_too() {
        let taken = listen("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let error = listen(taken.local_addr().unwrap(), 16).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
        let v6 = listen("[::1]:0".parse().unwrap(), 16).unwrap();
        assert!(v6.local_addr().unwrap().is_ipv6());
    }
}

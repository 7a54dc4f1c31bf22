//! The HTTP server: the route table, and what every request shares (the
//! database path, the guard, the metrics, the limits).
//!
//! | method | path                                  | answer                                   |
//! |--------|---------------------------------------|------------------------------------------|
//! | POST   | `/webhook/u/{token}`, `/webhook/{token}` | the alert, as DESIGN.md's contract says (`webhook`) |
//! | GET    | `/health`                             | status, queue length, live daemons, uptime (`health`) |
//! | GET    | `/health/live`                        | 200 while the process serves HTTP        |
//! | GET    | `/health/ready`                       | 200 when the database path answers       |
//! | GET    | `/metrics`                            | Prometheus text                          |
//! | PUT, DELETE, OPTIONS | `/v1/tradingview-session` | store or forget the trader's sealed TradingView session ([`session`]); 404 when not configured |
//!
//! The health and metrics routes are the *admin* routes: with an admin
//! listener ([`App::with_admin_listener`], `INGEST_ADMIN_LISTEN`) they are
//! served only there ([`run_admin`]) and the public listener answers them
//! 404, so the internet never sees queue figures or metrics, and cannot make
//! `/health` ask the database. Either way the database status behind them
//! is cached for [`health::STATUS_TTL`] and fetched by one request at a time.
//!
//! Each route lives in its own module and answers with the same JSON
//! helpers and the same [`ApiError`]; this module only picks the route and
//! records the request's metrics (route, outcome, latency). Outcomes are
//! the error codes of [`ApiError`] or a closed set of success labels, never
//! anything from the request.
//!
//! Database failures are logged once and counted in one place
//! (`App::db_failed`), whichever route met them; the caller gets an
//! opaque 503. The WARN and ERROR lines that every request of a flood
//! would repeat (a database outage during a bar-close burst) go through
//! [`crate::log_throttle`]: one line per kind and window, carrying how many
//! were held back; `/metrics` counts every one.

mod health;
pub mod session;
mod webhook;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use service_runtime::http::{Drain, Limits, serve_with};
use tokio::net::TcpListener;

use crate::api::{ApiError, Body};
use crate::batcher::{BatchSettings, Batcher};
use crate::db::{Database, DbError};
use crate::guard::Guard;
use crate::log_throttle::RepeatedLines;
use crate::metrics::Metrics;
use crate::spool_admission::SpoolAdmission;
use crate::tokens::TokenMemory;
pub use session::SessionEndpoint;

/// Request- and connection-level limits, how webhooks are batched, and the
/// drain deadline.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub max_body_bytes: u32,
    /// For the headers (a connection that sends nothing is closed after
    /// it), and then again for the body.
    pub read_timeout: Duration,
    /// How long an idle keep-alive connection is kept.
    pub keep_alive: Duration,
    pub max_connections: usize,
    pub grace: Duration,
    /// Batch size and calls in flight ([`crate::batcher`]).
    pub batch: BatchSettings,
    /// With a spool: how long a webhook may wait for its database call
    /// before it is spooled instead (202).
    pub queue_budget: Duration,
    /// How long a WARN or ERROR line that every request of a flood would
    /// repeat is held back after it was written ([`crate::log_throttle`]).
    pub log_repeat_window: Duration,
}

/// Everything a request needs: the database path, the guard, the metrics.
#[derive(Debug)]
pub struct App {
    db: Arc<Database>,
    batcher: Batcher,
    guard: Guard,
    tokens: Arc<TokenMemory>,
    metrics: Metrics,
    settings: Settings,
    started: Instant,
    /// `PUT`/`DELETE /v1/tradingview-session`, when configured.
    session: Option<SessionEndpoint>,
    /// The spool for when the database path is down, when configured.
    fallback: Option<SpoolAdmission>,
    /// Whether `/health*` and `/metrics` are served on an admin listener of
    /// their own (and not on the public one).
    admin_listener: bool,
    health: health::StatusCache,
    /// The throttles of the lines a flood of requests repeats.
    lines: RepeatedLines,
}

impl App {
    pub fn new(
        db: impl Into<Arc<Database>>,
        guard: Guard,
        tokens: Arc<TokenMemory>,
        metrics: Metrics,
        settings: Settings,
    ) -> Self {
        let db = db.into();
        Self {
            batcher: Batcher::new(Arc::clone(&db), settings.batch, metrics.clone()),
            db,
            guard,
            tokens,
            metrics,
            settings,
            started: Instant::now(),
            session: None,
            fallback: None,
            admin_listener: false,
            health: health::StatusCache::default(),
            lines: RepeatedLines::new(settings.log_repeat_window),
        }
    }

    /// Spools webhooks while the database path is down or saturated.
    #[must_use]
    pub fn with_fallback(mut self, fallback: SpoolAdmission) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// Serves `/health*` and `/metrics` only through [`run_admin`].
    #[must_use]
    pub fn with_admin_listener(mut self) -> Self {
        self.admin_listener = true;
        self
    }

    /// Serves the TradingView session endpoint.
    #[must_use]
    pub fn with_session(mut self, session: SessionEndpoint) -> Self {
        self.session = Some(session);
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Serves ingest's HTTP API on `listener` until `shutdown` resolves, then
/// lets in-flight requests finish within the grace period.
///
/// The caller binds the listener, so tests can use `127.0.0.1:0`.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> Drain {
    serve(listener, app, Surface::Public, shutdown).await
}

/// Serves only `/health*` and `/metrics` on `listener` (the admin listener,
/// [`App::with_admin_listener`]) until `shutdown` resolves.
pub async fn run_admin(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> Drain {
    serve(listener, app, Surface::Admin, shutdown).await
}

async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    surface: Surface,
    shutdown: impl Future<Output = ()>,
) -> Drain {
    let settings = app.settings;
    serve_with(
        listener,
        move |peer: SocketAddr| {
            let app = app.clone();
            service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(request, peer.ip(), surface).await) }
            })
        },
        shutdown,
        settings.grace,
        Limits {
            header_read_timeout: settings.read_timeout,
            keep_alive_timeout: settings.keep_alive,
            max_connections: settings.max_connections,
        },
    )
    .await
}

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Surface {
    /// Webhooks and the session endpoint (and the admin routes when there
    /// is no admin listener).
    Public,
    /// `/health*` and `/metrics` only.
    Admin,
}

/// Which route a request took, for metrics.
#[derive(Clone, Copy)]
enum Route {
    Webhook,
    Session,
    Health,
    Metrics,
    Other,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Session => "session",
            Self::Health => "health",
            Self::Metrics => "metrics",
            Self::Other => "other",
        }
    }
}

/// A route's outcome label (for metrics) and its answer.
type Answered = (&'static str, Response<Body>);

/// An error's answer, labelled with its code.
fn refused(error: ApiError) -> Answered {
    (error.code(), error.into_response())
}

impl App {
    async fn handle(
        &self,
        request: Request<Incoming>,
        peer: IpAddr,
        surface: Surface,
    ) -> Response<Body> {
        let started = Instant::now();
        self.metrics.in_flight.inc();
        let (route, (outcome, response)) = self.route(request, peer, surface).await;
        self.metrics
            .requests
            .with_label_values(&[route.label(), outcome])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[route.label()])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.in_flight.dec();
        response
    }

    /// The route table.
    async fn route(
        &self,
        request: Request<Incoming>,
        peer: IpAddr,
        surface: Surface,
    ) -> (Route, Answered) {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        let admin_here = match surface {
            Surface::Admin => true,
            Surface::Public => !self.admin_listener,
        };
        let admin_route = matches!(
            path.as_str(),
            "/health" | "/health/live" | "/health/ready" | "/metrics"
        );
        if surface == Surface::Admin && !admin_route || admin_route && !admin_here {
            return (
                Route::Other,
                refused(ApiError::NotFound {
                    path: path.chars().take(200).collect(),
                }),
            );
        }
        match (&method, path.as_str()) {
            (&Method::POST, p) if webhook::token_segment(p).is_some() => {
                (Route::Webhook, self.webhook(request, peer).await)
            }
            (_, p) if webhook::token_segment(p).is_some() => (
                Route::Webhook,
                refused(ApiError::MethodNotAllowed {
                    method,
                    allow: "POST",
                }),
            ),
            (_, session::PATH) if self.session.is_some() => {
                (Route::Session, self.session(request).await)
            }
            (&Method::GET, "/health") => (Route::Health, self.health().await),
            (&Method::GET, "/health/live") => (Route::Health, health::live()),
            (&Method::GET, "/health/ready") => (Route::Health, self.ready().await),
            (&Method::GET, "/metrics") => (Route::Metrics, self.render_metrics()),
            (_, "/health" | "/health/live" | "/health/ready" | "/metrics") => (
                Route::Other,
                refused(ApiError::MethodNotAllowed {
                    method,
                    allow: "GET",
                }),
            ),
            (_, path) => (
                Route::Other,
                refused(ApiError::NotFound {
                    path: path.chars().take(200).collect(),
                }),
            ),
        }
    }

    /// Counts a database failure and logs it (throttled by kind: during an
    /// outage every webhook fails alike); `then` says what the request got
    /// instead.
    fn db_failed(&self, error: &DbError, then: &'static str) {
        let kind = match error {
            DbError::Timeout(_) => "timeout",
            DbError::Http(_) | DbError::Pool(_) => "unreachable",
            DbError::Status { .. } | DbError::Query(_) | DbError::Alert { .. } => "status",
            DbError::Decode(_) | DbError::Mismatch { .. } => "decode",
        };
        self.metrics
            .upstream_errors
            .with_label_values(&[self.db.kind(), kind])
            .inc();
        if let Some(suppressed) = self.lines.db_failed(kind).admit(Instant::now()) {
            tracing::error!(path = self.db.kind(), kind, then, suppressed, error = %error_chain(error), "Database path failed");
        }
    }
}

/// An error and its sources on one line, for the single log line a 503 gets.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

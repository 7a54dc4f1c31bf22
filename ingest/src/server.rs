//! The HTTP server: routing, body limits, and the webhook's one database
//! call.
//!
//! | method | path                                  | answer                                   |
//! |--------|---------------------------------------|------------------------------------------|
//! | POST   | `/webhook/u/{token}`, `/webhook/{token}` | the alert, as DESIGN.md's contract says |
//! | GET    | `/health`                             | status, queue length, live daemons, uptime |
//! | GET    | `/health/live`                        | 200 while the process serves HTTP        |
//! | GET    | `/health/ready`                       | 200 when the database path answers       |
//! | GET    | `/metrics`                            | Prometheus text                          |
//! | PUT, DELETE, OPTIONS | `/v1/tradingview-session` | store or forget the trader's sealed TradingView session ([`crate::session`]); 404 when not configured |
//!
//! A webhook goes: allowlist and unknown-token throttle (no database work
//! for strangers) → token shape → body, bounded in size and time (a
//! declared oversize body is refused before a byte of it is read) → the
//! pure parser → exactly one `public.ingest_signal` call, which decides
//! everything else and logs the delivery for the trader, rejections
//! included → the answer. `/health/live` checks nothing else on purpose, so
//! an orchestrator does not restart a healthy process because a dependency
//! is down.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde::Serialize;
use serde_json::json;
use service_runtime::http::{Drain, Limits, serve_with};
use tokio::net::TcpListener;
use tracing::Instrument as _;

use crate::api::{Accepted, ApiError, Body, json};
use crate::db::{Database, DbError, IngestCall, IngestOutcome, Rejection};
use crate::guard::{Guard, Probe};
use crate::metrics::Metrics;
use crate::session::{self, SessionState};
use crate::signal::{ChartId, ParseError, Signal, WebhookToken};

/// How much of a rejected, non-text body is passed on for the trader's
/// delivery log (which keeps its first 500 characters).
const REJECTED_EXCERPT_CHARS: usize = 1000;

/// Request-level limits and the drain deadline.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub max_body_bytes: u32,
    /// For the headers, and then again for the body.
    pub read_timeout: Duration,
    pub max_connections: usize,
    pub grace: Duration,
}

/// Everything a request needs: the database path, the guard, the metrics.
#[derive(Debug)]
pub struct App {
    db: Database,
    guard: Guard,
    metrics: Metrics,
    settings: Settings,
    started: Instant,
    /// `PUT`/`DELETE /v1/tradingview-session`, when configured.
    session: Option<SessionState>,
}

impl App {
    pub fn new(db: Database, guard: Guard, metrics: Metrics, settings: Settings) -> Self {
        Self {
            db,
            guard,
            metrics,
            settings,
            started: Instant::now(),
            session: None,
        }
    }

    /// Serves the TradingView session endpoint with `session`.
    #[must_use]
    pub fn with_session(mut self, session: SessionState) -> Self {
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
    let settings = app.settings;
    serve_with(
        listener,
        move |peer: SocketAddr| {
            let app = app.clone();
            service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(request, peer.ip()).await) }
            })
        },
        shutdown,
        settings.grace,
        Limits {
            header_read_timeout: settings.read_timeout,
            max_connections: settings.max_connections,
        },
    )
    .await
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

/// The token segment of a webhook path, if the path is one.
fn webhook_token(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/webhook/")?;
    let token = rest.strip_prefix("u/").unwrap_or(rest);
    (!token.is_empty() && !token.contains('/')).then_some(token)
}

impl App {
    async fn handle(&self, request: Request<Incoming>, peer: IpAddr) -> Response<Body> {
        let started = Instant::now();
        self.metrics.in_flight.inc();
        let path = request.uri().path().to_owned();
        let (route, outcome, response) = match (request.method(), path.as_str()) {
            (&Method::POST, p) if webhook_token(p).is_some() => {
                let (outcome, response) = self.webhook(request, peer).await;
                (Route::Webhook, outcome, response)
            }
            (method, p) if webhook_token(p).is_some() => {
                let error = ApiError::MethodNotAllowed {
                    method: method.clone(),
                    allow: "POST",
                };
                (Route::Webhook, error.code(), error.into_response())
            }
            (_, session::PATH) if self.session.is_some() => {
                let state = self.session.as_ref().expect("checked above");
                let response = session::handle(request, state).await;
                let outcome = if response.status().is_success() {
                    "ok"
                } else {
                    "refused"
                };
                (Route::Session, outcome, response)
            }
            (&Method::GET, "/health") => (Route::Health, "ok", self.health().await),
            (&Method::GET, "/health/live") => (
                Route::Health,
                "ok",
                json(StatusCode::OK, &json!({ "status": "ok" })),
            ),
            (&Method::GET, "/health/ready") => (Route::Health, "ok", self.ready().await),
            (&Method::GET, "/metrics") => (Route::Metrics, "ok", self.render_metrics()),
            (method, "/health" | "/health/live" | "/health/ready" | "/metrics") => {
                let error = ApiError::MethodNotAllowed {
                    method: method.clone(),
                    allow: "GET",
                };
                (Route::Other, error.code(), error.into_response())
            }
            (_, path) => {
                let error = ApiError::NotFound {
                    path: path.chars().take(200).collect(),
                };
                (Route::Other, error.code(), error.into_response())
            }
        };
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

    /// One webhook delivery: returns the outcome label and the answer.
    async fn webhook(
        &self,
        request: Request<Incoming>,
        peer: IpAddr,
    ) -> (&'static str, Response<Body>) {
        let ip = self.guard.client_ip(peer, request.headers());
        let raw_token = webhook_token(request.uri().path()).unwrap_or_default();
        let token = WebhookToken::parse(raw_token).ok();
        let span = tracing::info_span!(
            "webhook",
            token = token.as_ref().map_or("malformed".into(), WebhookToken::fingerprint),
            client = %ip,
        );
        async move {
            let result = self.webhook_inner(request, ip, token).await;
            match result {
                Ok(accepted) => {
                    let outcome = if accepted.duplicate {
                        "duplicate"
                    } else {
                        "accepted"
                    };
                    tracing::info!(outcome, signal_id = %accepted.signal_id, "Webhook accepted");
                    (outcome, json(StatusCode::OK, &accepted))
                }
                Err(error) => {
                    if !matches!(error, ApiError::Unavailable) {
                        tracing::info!(
                            outcome = error.code(),
                            status = error.status().as_u16(),
                            "Webhook refused"
                        );
                    }
                    (error.code(), error.into_response())
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn webhook_inner(
        &self,
        request: Request<Incoming>,
        ip: IpAddr,
        token: Option<WebhookToken>,
    ) -> Result<Accepted, ApiError> {
        if !self.guard.allows(ip) {
            return Err(ApiError::SourceNotAllowed);
        }
        let probe = self.guard.admit(ip).map_err(|wait| ApiError::RateLimited {
            message: "too many requests with unknown webhook tokens from your address".into(),
            retry_after: wait.as_secs().max(1),
        })?;
        let Some(token) = token else {
            probe.unknown_token();
            return Err(ApiError::UnknownToken);
        };
        let received_at = Utc::now();
        let chart = chart_param(request.uri().query());
        let body = self.read_body(request).await;

        let (raw, parsed): (String, Result<Signal, (Rejection, String)>) = match body {
            Err(BodyError::TooLarge) => (
                String::new(),
                Err((
                    Rejection::BodyTooLarge,
                    ApiError::BodyTooLarge {
                        limit: self.settings.max_body_bytes,
                    }
                    .to_string(),
                )),
            ),
            Err(BodyError::Timeout) => return Err(ApiError::RequestTimeout),
            Ok(bytes) => match Signal::parse(&bytes) {
                Ok(signal) => (String::new(), Ok(signal)),
                Err(error) => (
                    excerpt(&bytes),
                    Err((rejection_of(&error), error.to_string())),
                ),
            },
        };
        let (chart_id, parsed) = match chart {
            Ok(chart_id) => (chart_id, parsed),
            Err(message) => (None, Err((Rejection::InvalidBody, message))),
        };
        let call = IngestCall {
            delivery_id: uuid::Uuid::now_v7(),
            token: &token,
            received_at,
            raw_message: match &parsed {
                Ok(signal) => signal.raw_message(),
                Err(_) => &raw,
            },
            chart_id: chart_id.as_ref().map(ChartId::as_str),
            body: parsed.as_ref().map_err(|(r, m)| (*r, m.clone())),
        };
        let outcome = self
            .db
            .ingest(&call)
            .await
            .map_err(|error| self.unavailable(&error))?;
        self.answer(outcome, probe)
    }

    /// Maps `ingest_signal`'s decision onto the HTTP answer.
    fn answer(&self, outcome: IngestOutcome, probe: Probe<'_>) -> Result<Accepted, ApiError> {
        let message = outcome.message.clone().unwrap_or_default();
        let retry_after = u64::try_from(outcome.retry_after.unwrap_or(1)).unwrap_or(1);
        match outcome.outcome.as_str() {
            "accepted" | "duplicate" => {
                let Some(signal_id) = outcome.signal_id else {
                    tracing::error!(outcome = %outcome.outcome, "ingest_signal accepted without a signal id");
                    return Err(ApiError::Unavailable);
                };
                Ok(Accepted {
                    success: true,
                    signal_id,
                    screenshot_status: outcome
                        .screenshot_status
                        .unwrap_or_else(|| "pending".into()),
                    estimated_wait: outcome.estimated_wait.unwrap_or(0),
                    duplicate: outcome.outcome == "duplicate",
                })
            }
            "unknown_token" => {
                probe.unknown_token();
                Err(ApiError::UnknownToken)
            }
            "webhook_disabled" => Err(ApiError::WebhookDisabled(message)),
            "no_ticker" => Err(ApiError::NoTicker(message)),
            "invalid_body" => Err(ApiError::InvalidBody(message)),
            "body_too_large" => Err(ApiError::BodyTooLarge {
                limit: self.settings.max_body_bytes,
            }),
            "quota_exceeded" => Err(ApiError::QuotaExceeded {
                message,
                retry_after,
            }),
            "rate_limited" => Err(ApiError::RateLimited {
                message,
                retry_after,
            }),
            other => {
                tracing::error!(
                    outcome = other,
                    "ingest_signal returned an outcome this edge does not know"
                );
                Err(ApiError::Unavailable)
            }
        }
    }

    /// Logs a database failure once, counts it, and hides it.
    fn unavailable(&self, error: &DbError) -> ApiError {
        let kind = match error {
            DbError::Timeout(_) => "timeout",
            DbError::Http(_) | DbError::Pool(_) => "unreachable",
            DbError::Status { .. } | DbError::Query(_) => "status",
            DbError::Decode(_) => "decode",
        };
        self.metrics
            .upstream_errors
            .with_label_values(&[self.db.kind(), kind])
            .inc();
        tracing::error!(path = self.db.kind(), kind, error = %error_chain(error), "Database path failed; answered 503");
        ApiError::Unavailable
    }

    async fn read_body(&self, request: Request<Incoming>) -> Result<Bytes, BodyError> {
        let limit = self.settings.max_body_bytes as usize;
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(BodyError::TooLarge);
        }
        let body = Limited::new(request.into_body(), limit);
        match tokio::time::timeout(self.settings.read_timeout, body.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                Err(BodyError::TooLarge)
            }
            // Too slow, or the client went away mid-body: nothing to record.
            Err(_) | Ok(Err(_)) => Err(BodyError::Timeout),
        }
    }

    async fn health(&self) -> Response<Body> {
        let uptime = self.started.elapsed().as_secs();
        match self.db.queue_status().await {
            Ok(queue) => json(
                StatusCode::OK,
                &json!({
                    "status": "ok",
                    "queue_length": queue.queue_length,
                    "active_workers": queue.active_workers,
                    "uptime": uptime,
                    "database": self.db.kind(),
                }),
            ),
            Err(error) => {
                let _ = self.unavailable(&error);
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({
                        "status": "unavailable",
                        "queue_length": null,
                        "active_workers": null,
                        "uptime": uptime,
                        "database": self.db.kind(),
                    }),
                )
            }
        }
    }

    async fn ready(&self) -> Response<Body> {
        #[derive(Serialize)]
        struct Ready {
            status: &'static str,
        }
        match self.db.queue_status().await {
            Ok(_) => json(StatusCode::OK, &Ready { status: "ready" }),
            Err(error) => {
                let _ = self.unavailable(&error);
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &Ready {
                        status: "unavailable",
                    },
                )
            }
        }
    }

    fn render_metrics(&self) -> Response<Body> {
        let mut response = Response::new(Full::new(Bytes::from(self.metrics.render())));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }
}

enum BodyError {
    TooLarge,
    Timeout,
}

fn rejection_of(error: &ParseError) -> Rejection {
    match error {
        ParseError::NoTicker => Rejection::NoTicker,
        ParseError::NotUtf8(_) | ParseError::NulByte { .. } | ParseError::Empty => {
            Rejection::InvalidBody
        }
    }
}

/// `?chart=` as a chart id: `Ok(None)` when absent, `Err(message)` when
/// present but not a chart id.
fn chart_param(query: Option<&str>) -> Result<Option<ChartId>, String> {
    let Some(value) = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(key, _)| key == "chart")
            .map(|(_, value)| value.into_owned())
    }) else {
        return Ok(None);
    };
    if value.is_empty() {
        return Ok(None);
    }
    ChartId::parse(&value)
        .map(Some)
        .map_err(|error| format!("?chart= is not a TradingView chart id: {error}"))
}

/// A rejected body as text for the delivery log: lossy UTF-8, NULs (which
/// Postgres text cannot hold) replaced, cut short.
fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(REJECTED_EXCERPT_CHARS)
        .map(|c| if c == '\0' { '\u{fffd}' } else { c })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_paths_name_their_token() {
        assert_eq!(webhook_token("/webhook/u/abc"), Some("abc"));
        assert_eq!(webhook_token("/webhook/abc"), Some("abc"));
        assert_eq!(webhook_token("/webhook/"), None);
        assert_eq!(webhook_token("/webhook/u/"), None);
        assert_eq!(webhook_token("/webhook/u/a/b"), None);
        assert_eq!(webhook_token("/health"), None);
    }

    #[test]
    fn the_chart_parameter_is_a_chart_id_or_an_error() {
        assert_eq!(chart_param(None), Ok(None));
        assert_eq!(chart_param(Some("x=1")), Ok(None));
        assert_eq!(chart_param(Some("chart=")), Ok(None));
        assert_eq!(
            chart_param(Some("chart=aBcD1234")).map(|c| c.map(|c| c.as_str().to_owned())),
            Ok(Some("aBcD1234".to_owned()))
        );
        assert!(chart_param(Some("chart=../../etc")).is_err());
    }

    #[test]
    fn excerpts_hold_no_nul_and_stay_short() {
        let text = excerpt(b"a\0b\xff");
        assert_eq!(text, "a\u{fffd}b\u{fffd}");
        assert_eq!(excerpt(&[b'x'; 5000]).len(), REJECTED_EXCERPT_CHARS);
    }
}

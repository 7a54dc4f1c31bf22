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
//!
//! With a spool configured ([`crate::spool_admission`]), a call that fails with an
//! error a retry can fix, or any webhook arriving while older ones wait for
//! replay, is appended to the spool and answered 202; `/health` and
//! `/health/ready` then answer 200 with status `spooling` as long as the
//! spool has room, and report its depth, size, oldest entry and replays.

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
use serde_json::{Value, json};
use service_runtime::http::{Drain, Limits, serve_with};
use tokio::net::TcpListener;
use tracing::Instrument as _;
use webhook_spool::SpooledWebhook;

use crate::api::{Accepted, ApiError, Body, Spooled, json};
use crate::db::{Database, DbError, IngestOutcome, QueueStatus};
use crate::delivery::{self, Delivery};
use crate::guard::{Guard, Probe};
use crate::metrics::Metrics;
use crate::session::{self, SessionState};
use crate::signal::WebhookToken;
use crate::spool_admission::SpoolAdmission;

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
    db: Arc<Database>,
    guard: Guard,
    metrics: Metrics,
    settings: Settings,
    started: Instant,
    /// `PUT`/`DELETE /v1/tradingview-session`, when configured.
    session: Option<SessionState>,
    /// The spool for when the database path is down, when configured.
    fallback: Option<SpoolAdmission>,
}

impl App {
    pub fn new(
        db: impl Into<Arc<Database>>,
        guard: Guard,
        metrics: Metrics,
        settings: Settings,
    ) -> Self {
        Self {
            db: db.into(),
            guard,
            metrics,
            settings,
            started: Instant::now(),
            session: None,
            fallback: None,
        }
    }

    /// Spools webhooks while the database path is down.
    #[must_use]
    pub fn with_fallback(mut self, fallback: SpoolAdmission) -> Self {
        self.fallback = Some(fallback);
        self
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
                Ok(Answer::Stored(accepted)) => {
                    let outcome = if accepted.duplicate {
                        "duplicate"
                    } else {
                        "accepted"
                    };
                    tracing::info!(outcome, signal_id = %accepted.signal_id, "Webhook accepted");
                    (outcome, json(StatusCode::OK, &accepted))
                }
                Ok(Answer::Spooled(spooled)) => {
                    tracing::info!(delivery_id = %spooled.delivery_id, "Webhook spooled for replay");
                    ("spooled", json(StatusCode::ACCEPTED, &spooled))
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
    ) -> Result<Answer, ApiError> {
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
        let chart = chart_value(request.uri().query());
        let body = match self.read_body(request).await {
            Ok(bytes) => Some(bytes),
            Err(BodyError::TooLarge) => None,
            Err(BodyError::Timeout) => return Err(ApiError::RequestTimeout),
        };
        let delivery = Delivery::new(
            uuid::Uuid::now_v7(),
            token,
            received_at,
            chart.as_deref(),
            body.as_deref().map_or(
                delivery::Body::TooLarge {
                    limit: self.settings.max_body_bytes,
                },
                delivery::Body::Read,
            ),
        );
        // Behind older webhooks still waiting for replay: keep arrival order.
        // If the spool cannot take this one (full, a stranger's limit, a
        // failed disk), the database may still: order gives way to the alert.
        let mut spool_refused = false;
        if let (Some(fallback), Some(body)) = (&self.fallback, &body)
            && fallback.is_replaying()
        {
            let spooled = self
                .spool(
                    fallback,
                    &delivery,
                    chart.clone(),
                    body.clone(),
                    ip,
                    "trying the database",
                )
                .await;
            match spooled {
                Ok(answer) => return answer,
                Err(()) => spool_refused = true,
            }
        }
        let started = Instant::now();
        let result = self.db.ingest(&delivery.call()).await;
        self.metrics
            .db_call(self.db.kind(), "ingest_signal", started);
        match result {
            Ok(outcome) => {
                if let Some(fallback) = &self.fallback {
                    fallback.learn(&delivery.token, &outcome);
                }
                self.answer(outcome, probe).map(Answer::Stored)
            }
            Err(error) => match (&self.fallback, body) {
                (Some(fallback), Some(body)) if error.is_transient() && !spool_refused => {
                    self.db_failed(&error, "spooling");
                    self.spool(fallback, &delivery, chart, body, ip, "answered 503")
                        .await
                        .unwrap_or(Err(ApiError::Unavailable))
                }
                _ => {
                    self.db_failed(&error, "answered 503");
                    Err(ApiError::Unavailable)
                }
            },
        }
    }

    /// Appends the webhook to the spool. Once it is durable, the answer:
    /// 202 for a signal, the edge's own refusal for a body that is none (the
    /// replay logs it for the trader). `Err(())` when the spool refused it
    /// (counted, and logged saying what happens `then`).
    async fn spool(
        &self,
        fallback: &SpoolAdmission,
        delivery: &Delivery,
        chart: Option<String>,
        body: Bytes,
        ip: IpAddr,
        then: &'static str,
    ) -> Result<Result<Answer, ApiError>, ()> {
        let webhook = SpooledWebhook {
            delivery_id: delivery.id,
            token: delivery.token.clone(),
            chart,
            body,
            received_at: delivery.received_at,
            client_ip: Some(ip),
        };
        if let Err(refused) = fallback.spool(&webhook).await {
            self.metrics
                .spool_refusals
                .with_label_values(&[refused.label()])
                .inc();
            tracing::warn!(reason = refused.label(), error = %refused, then, "Spool refused a webhook");
            return Err(());
        }
        Ok(match delivery.refusal() {
            Some(refusal) => Err(refusal),
            None => Ok(Answer::Spooled(Spooled::new(delivery.id))),
        })
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

    /// Logs a database failure once and counts it; `then` says what the
    /// request got instead.
    fn db_failed(&self, error: &DbError, then: &'static str) {
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
        tracing::error!(path = self.db.kind(), kind, then, error = %error_chain(error), "Database path failed");
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
        let (status, queue) = self.database_status().await;
        let mut body = json!({
            "status": status.label(),
            "queue_length": queue.as_ref().map(|q| q.queue_length),
            "active_workers": queue.as_ref().map(|q| q.active_workers),
            "uptime": uptime,
            "database": self.db.kind(),
        });
        if let Some(fallback) = &self.fallback {
            body["spool"] = spool_report(fallback);
        }
        json(status.http(), &body)
    }

    async fn ready(&self) -> Response<Body> {
        let (status, _) = self.database_status().await;
        json(status.http(), &json!({ "status": status.ready_label() }))
    }

    /// Whether the database path answers and, if not, whether webhooks can
    /// still be spooled.
    async fn database_status(&self) -> (Status, Option<QueueStatus>) {
        let started = Instant::now();
        let result = self.db.queue_status().await;
        self.metrics
            .db_call(self.db.kind(), "capture_queue_status", started);
        match result {
            Ok(queue) => (Status::Ok, Some(queue)),
            Err(error) => {
                let spooling = self.fallback.as_ref().is_some_and(|fallback| {
                    let stats = fallback.stats();
                    stats.bytes < stats.max_bytes
                });
                self.db_failed(&error, "health check");
                let status = if spooling {
                    Status::Spooling
                } else {
                    Status::Unavailable
                };
                (status, None)
            }
        }
    }

    fn render_metrics(&self) -> Response<Body> {
        if let Some(fallback) = &self.fallback {
            self.metrics.observe_spool(
                &fallback.stats(),
                fallback.replays().snapshot(),
                Utc::now(),
            );
        }
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

/// A webhook's good answer.
enum Answer {
    /// 200: stored (or recognised as a retry of a stored one).
    Stored(Accepted),
    /// 202: durably spooled, stored when the database is back.
    Spooled(Spooled),
}

/// What `/health` and `/health/ready` report.
#[derive(Clone, Copy)]
enum Status {
    Ok,
    /// The database path is down; webhooks are spooled.
    Spooling,
    Unavailable,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Spooling => "spooling",
            Self::Unavailable => "unavailable",
        }
    }

    fn ready_label(self) -> &'static str {
        match self {
            Self::Ok => "ready",
            other => other.label(),
        }
    }

    fn http(self) -> StatusCode {
        match self {
            Self::Ok | Self::Spooling => StatusCode::OK,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The spool's part of `/health`.
fn spool_report(fallback: &SpoolAdmission) -> Value {
    let stats = fallback.stats();
    let replays = fallback.replays().snapshot();
    json!({
        "entries": stats.entries,
        "bytes": stats.bytes,
        "max_bytes": stats.max_bytes,
        "oldest_age_seconds": stats
            .oldest_age(Utc::now())
            .map(|age| age.num_milliseconds().max(0) / 1000),
        "replayed": {
            "accepted": replays.accepted,
            "duplicate": replays.duplicate,
            "rejected": replays.rejected,
            "transient_failures": replays.transient_failures,
        },
    })
}

/// The raw `?chart=` value, if any (checked by [`Delivery::new`]).
fn chart_value(query: Option<&str>) -> Option<String> {
    query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(key, _)| key == "chart")
            .map(|(_, value)| value.into_owned())
    })
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
    fn the_chart_value_is_read_from_the_query() {
        assert_eq!(chart_value(None), None);
        assert_eq!(chart_value(Some("x=1")), None);
        assert_eq!(
            chart_value(Some("a=b&chart=aBcD1234")).as_deref(),
            Some("aBcD1234")
        );
        assert_eq!(chart_value(Some("chart=a%2Fb")).as_deref(), Some("a/b"));
    }
}

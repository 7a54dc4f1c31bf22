//! The daemon's HTTP endpoint: health and metrics.
//!
//! - `GET /health/live`: 200 `{"status":"ok"}` while the process is up. It
//!   checks nothing else, so a database outage does not make an orchestrator
//!   restart a daemon that would recover on its own.
//! - `GET /health`: `status`, `queue_length`, `in_flight`, `active_workers`,
//!   `uptime` (seconds); 503 with `status: "degraded"` when the database
//!   cannot be read.
//! - `GET /metrics`: Prometheus text (see [`crate::metrics`]).
//!
//! Everything else gets a JSON 404 in the same error shape as ingest.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde_json::json;
use service_runtime::http::{Drain, respond, serve};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::queue::Queue;

/// What the endpoint reports on.
#[derive(Debug)]
pub struct HealthState {
    pub queue: Queue,
    pub metrics: Metrics,
    pub started: Instant,
}

/// Serves the endpoint on `listener` until `shutdown` resolves.
pub async fn serve_health(
    listener: TcpListener,
    state: Arc<HealthState>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Drain {
    serve(
        listener,
        move |_peer| {
            let state = Arc::clone(&state);
            service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(&request, &state).await) }
            })
        },
        shutdown,
        grace,
    )
    .await
}

async fn route(request: &Request<Incoming>, state: &HealthState) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return not_found();
    }
    match request.uri().path() {
        "/health/live" => respond(StatusCode::OK, &json!({ "status": "ok" })),
        "/health" => {
            let uptime = state.started.elapsed().as_secs();
            let in_flight = state.metrics.in_flight.get();
            match state.queue.health().await {
                Ok((queue_length, active_workers)) => respond(
                    StatusCode::OK,
                    &json!({
                        "status": "ok",
                        "queue_length": queue_length,
                        "in_flight": in_flight,
                        "active_workers": active_workers,
                        "uptime": uptime,
                    }),
                ),
                Err(error) => {
                    tracing::warn!(error = %error, "Health check cannot read the queue");
                    respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({ "status": "degraded", "in_flight": in_flight, "uptime": uptime }),
                    )
                }
            }
        }
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(state.metrics.render())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        _ => not_found(),
    }
}

fn not_found() -> Response<Full<Bytes>> {
    respond(
        StatusCode::NOT_FOUND,
        &json!({
            "success": false,
            "error": { "code": "not_found", "message": "the capture daemon serves GET /health, /health/live and /metrics" },
        }),
    )
}

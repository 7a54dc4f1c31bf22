//! The daemon's health endpoint.
//!
//! `GET /health/live` answers 200 `{"status":"ok"}` while the process is up;
//! every other request gets a JSON 404 in the same error shape as ingest.
//! Liveness checks nothing beyond "the process serves HTTP", so a database
//! outage does not make an orchestrator restart a daemon that would recover
//! on its own.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde_json::json;
use service_runtime::http::{Drain, serve};
use tokio::net::TcpListener;

/// Serves the health endpoint on `listener` until `shutdown` resolves.
pub async fn serve_health(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Drain {
    serve(
        listener,
        |_peer| service_fn(|request| async move { Ok::<_, Infallible>(route(&request)) }),
        shutdown,
        grace,
    )
    .await
}

fn route(request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() == Method::GET && request.uri().path() == "/health/live" {
        respond(StatusCode::OK, &json!({ "status": "ok" }))
    } else {
        respond(
            StatusCode::NOT_FOUND,
            &json!({
                "success": false,
                "error": { "code": "not_found", "message": "the capture daemon serves only GET /health/live" },
            }),
        )
    }
}

fn respond(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

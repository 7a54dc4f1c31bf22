//! The HTTP server: routing and the serve-until-shutdown entry point.
//!
//! Routes today:
//!
//! | method | path           | answer                        |
//! |--------|----------------|-------------------------------|
//! | GET    | `/health/live` | 200 `{"status":"ok"}`         |
//! | other  | `/health/live` | 405 `method_not_allowed`      |
//! | any    | anything else  | 404 `not_found`               |
//!
//! `/health/live` says only that the process is up and serving HTTP; it
//! deliberately checks nothing else, so an orchestrator does not restart a
//! healthy process because a dependency is down.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde::Serialize;
use service_runtime::http::{Drain, serve};
use tokio::net::TcpListener;

use crate::api::{ApiError, Body, json};

/// Serves ingest's HTTP API on `listener` until `shutdown` resolves, then
/// lets in-flight requests finish for at most `grace`.
///
/// The caller binds the listener, so tests can use `127.0.0.1:0`.
pub async fn run(
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

fn route(request: &Request<Incoming>) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/health/live") => live(),
        (method, "/health/live") => ApiError::MethodNotAllowed {
            method: method.clone(),
            allow: "GET",
        }
        .into_response(),
        (_, path) => ApiError::NotFound {
            path: path.to_owned(),
        }
        .into_response(),
    }
}

fn live() -> Response<Body> {
    #[derive(Serialize)]
    struct Live {
        status: &'static str,
    }
    json(StatusCode::OK, &Live { status: "ok" })
}

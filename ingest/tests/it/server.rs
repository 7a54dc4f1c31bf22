//! The HTTP server as a client sees it: real sockets on `127.0.0.1:0`, a
//! keep-alive connection, shutdown and its drain. The database path leads
//! nowhere: these tests never reach it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use ingest::db::{Database, RestPath};
use service_runtime::SecretString;
use service_runtime::http::Drain;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::helpers::{Options, TestApp, Upstream, spawn_app};

/// An app whose database path leads nowhere, with the drain deadline `grace`.
async fn spawn(grace: Duration) -> TestApp {
    spawn_with(grace, |_| {}).await
}

/// [`spawn`], with `adjust` applied to the options.
pub(crate) async fn spawn_with(grace: Duration, adjust: impl FnOnce(&mut Options)) -> TestApp {
    let nowhere = RestPath::new(
        &"http://127.0.0.1:9".parse().expect("url"),
        &SecretString::from("sb_secret_unused"),
    )
    .expect("a client");
    let mut options = Options::on(Upstream::Given(Database::rest(
        nowhere,
        Duration::from_secs(1),
    )));
    options.read_timeout = Duration::from_secs(30);
    options.grace = grace;
    adjust(&mut options);
    spawn_app(options).await
}

/// An HTTP/1.1 client connection kept open between requests.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    connection: JoinHandle<Result<(), hyper::Error>>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let connection = tokio::spawn(connection);
        Self { sender, connection }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
    ) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .body(Empty::new())
            .expect("request");
        let response = self.sender.send_request(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json = serde_json::from_slice(&body).expect("JSON body");
        (status, headers, json)
    }
}

#[tokio::test]
async fn health_live_answers_ok() {
    let app = spawn(Duration::from_secs(5)).await;
    let mut client = Client::connect(app.addr).await;

    let (status, headers, body) = client.send(Method::GET, "/health/live").await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body, serde_json::json!({ "status": "ok" }));
}

#[tokio::test]
async fn unknown_route_is_a_json_404() {
    let app = spawn(Duration::from_secs(5)).await;
    let mut client = Client::connect(app.addr).await;

    let (status, headers, body) = client.send(Method::GET, "/nope").await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("/nope")
    );
}

#[tokio::test]
async fn wrong_method_on_a_known_path_is_a_405() {
    let app = spawn(Duration::from_secs(5)).await;
    let mut client = Client::connect(app.addr).await;

    let (status, headers, body) = client.send(Method::POST, "/health/live").await;

    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET");
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

/// An idle keep-alive connection must not hold shutdown up: the server
/// closes it, returns `Complete` well inside the grace period, and stops
/// accepting new connections.
#[tokio::test]
async fn shutdown_closes_idle_connections_and_completes() {
    let app = spawn(Duration::from_secs(30)).await;
    let addr = app.addr;
    let mut client = Client::connect(addr).await;
    let (status, _, _) = client.send(Method::GET, "/health/live").await;
    assert_eq!(status, StatusCode::OK);

    let drain = app.shut_down(Duration::from_secs(5)).await;

    assert_eq!(drain, Drain::Complete);
    let closed = tokio::time::timeout(Duration::from_secs(5), client.connection)
        .await
        .expect("client connection closed by the server");
    assert!(closed.expect("client task").is_ok());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener is closed"
    );
}

/// A request still in flight when shutdown starts (here: headers half sent
/// and never finished) is waited for, but only for the grace period.
#[tokio::test]
async fn shutdown_drain_is_bounded_by_the_grace_period() {
    let grace = Duration::from_millis(300);
    let app = spawn(grace).await;
    let mut stalled = TcpStream::connect(app.addr).await.expect("connect");
    stalled
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write half a request");
    // Let the server read the partial request before shutting down.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = tokio::time::Instant::now();
    let drain = app.shut_down(Duration::from_secs(5)).await;

    assert_eq!(drain, Drain::DeadlineExceeded);
    assert!(started.elapsed() >= grace);
}

/// With an admin listener, `/health*` and `/metrics` are served there and
/// nowhere else, and the admin listener serves nothing else.
#[tokio::test]
async fn the_admin_routes_are_served_only_on_the_admin_listener() {
    let app = spawn_with(Duration::from_secs(5), |options| {
        options.admin_listener = true;
    })
    .await;
    let admin = app.admin_addr.expect("an admin listener");
    let mut public = Client::connect(app.addr).await;
    let mut private = Client::connect(admin).await;
    for path in ["/health", "/health/live", "/health/ready", "/metrics"] {
        let (status, _, body) = public.send(Method::GET, path).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{path} on the public listener"
        );
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (status, _, body) = private.send(Method::GET, "/health/live").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, serde_json::json!({ "status": "ok" }))
    );
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(
        metrics
            .text()
            .await
            .expect("text")
            .contains("ingest_requests_total{outcome=\"not_found\",route=\"other\"} 4")
    );
    let (status, _, _) = private
        .send(Method::POST, "/webhook/u/abcdefghijklmnopqrstuvwxyz0123")
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no webhooks on the admin listener"
    );
}

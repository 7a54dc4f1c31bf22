//! The daemon as an orchestrator sees it: a health endpoint, and a process
//! that stops when told to (or, in drain mode, when there is nothing to do).

use std::time::Duration;

use bytes::Bytes;
use capture::daemon::{self, Mode, Outcome, Stopped};
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use service_runtime::http::Drain;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

async fn get(addr: std::net::SocketAddr, path: &str) -> (StatusCode, serde_json::Value) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&body).expect("JSON body"))
}

#[tokio::test]
async fn serves_health_until_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let daemon = tokio::spawn(daemon::run(
        listener,
        Mode::Serve,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));

    assert_eq!(
        get(addr, "/health/live").await,
        (StatusCode::OK, serde_json::json!({ "status": "ok" }))
    );
    let (status, body) = get(addr, "/other").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");

    stop.send(()).expect("daemon running");
    let outcome = tokio::time::timeout(Duration::from_secs(5), daemon)
        .await
        .expect("daemon stopped within 5 s")
        .expect("daemon task did not panic");
    assert_eq!(
        outcome,
        Outcome {
            stopped: Stopped::Shutdown,
            health: Drain::Complete
        }
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "health listener closed"
    );
}

#[tokio::test]
async fn drain_mode_returns_without_a_shutdown_signal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let outcome = tokio::time::timeout(
        Duration::from_secs(5),
        daemon::run(
            listener,
            Mode::Drain,
            std::future::pending(),
            Duration::from_secs(5),
        ),
    )
    .await
    .expect("drain mode returned within 5 s");
    assert_eq!(outcome.stopped, Stopped::Drained);
    assert_eq!(outcome.health, Drain::Complete);
}

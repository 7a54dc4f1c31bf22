//! Connections that cannot pile up: a connection that sends nothing is
//! dropped, an idle keep-alive connection is closed, and a flood of silent
//! connections from TradingView's four addresses (127.0.0.2-127.0.0.5 stand
//! in for them) does not keep a real request out. The database path leads
//! nowhere: `/health/live` is the request.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::server::spawn_with;

/// Connects to `addr` from `source`.
async fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source");
    socket.connect(addr).await.expect("connect")
}

/// Reads until the server closes `stream`; how long that took, or `None`
/// if it stayed open for `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut buf))
        .await
        .ok()
        .map(|_| started.elapsed())
}

const LIVE: &[u8] = b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n";

#[tokio::test]
async fn a_connection_that_sends_nothing_is_dropped_after_the_read_timeout() {
    let app = spawn_with(Duration::from_secs(1), |options| {
        options.read_timeout = Duration::from_millis(500);
        options.keep_alive = Duration::from_secs(30);
    })
    .await;
    let mut silent = TcpStream::connect(app.addr).await.expect("connect");
    let took = closed_within(&mut silent, Duration::from_secs(5))
        .await
        .expect("the silent connection was closed");
    assert!(took >= Duration::from_millis(400), "closed early: {took:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let app = spawn_with(Duration::from_secs(1), |options| {
        options.read_timeout = Duration::from_secs(30);
        options.keep_alive = Duration::from_millis(500);
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream.write_all(LIVE).await.expect("request");
    let mut head = [0; 12];
    stream.read_exact(&mut head).await.expect("answer");
    assert_eq!(&head, b"HTTP/1.1 200");
    let took = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("the idle connection was closed");
    assert!(took >= Duration::from_millis(300), "closed early: {took:?}");
}

/// 2,000 silent connections from four addresses against a limit of 256
/// connections: a request on a new connection from one of those addresses
/// is still answered within a second, because idle connections make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_from_four_addresses_do_not_keep_requests_out() {
    let app = spawn_with(Duration::from_secs(1), |options| {
        options.read_timeout = Duration::from_secs(5);
        options.keep_alive = Duration::from_secs(5);
        options.max_connections = 256;
    })
    .await;
    let sources: Vec<IpAddr> = (2..=5).map(|n| IpAddr::from([127, 0, 0, n])).collect();
    let mut silent = Vec::new();
    for n in 0..2000 {
        silent.push(connect_from(sources[n % 4], app.addr).await);
    }
    let started = Instant::now();
    let mut stream = connect_from(sources[0], app.addr).await;
    stream.write_all(LIVE).await.expect("request");
    let mut head = [0; 12];
    tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut head))
        .await
        .expect("answered within a second")
        .expect("an answer");
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(silent);
}

//! The webhook end to end: real sockets, the real PostgREST behind the
//! stack's gateway and a direct Postgres pool, the real `ingest_signal`.
//! Every HTTP outcome of DESIGN.md's contract has a test, on both paths
//! where the path matters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;
use stack_harness::Stack;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use crate::helpers::{Options, Upstream, assert_error, pool_at, rest_at, spawn_app};

/// The two database paths, for tests that run on both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Rest,
    Pool,
}

impl Path {
    fn options(self) -> Options {
        Options::on(match self {
            Self::Rest => Upstream::Rest,
            Self::Pool => Upstream::Pool,
        })
    }
}

const JSON_ALERT: &str = r#"{"ticker":"BINANCE:BTCUSDT","price":"67890.5","action":"buy","interval":"1h","strategy":"Trend Pro"}"#;

#[tokio::test]
async fn an_alert_becomes_a_signal_through_postgrest() {
    accepted_on(Path::Rest).await;
}

#[tokio::test]
async fn an_alert_becomes_a_signal_through_the_pool() {
    accepted_on(Path::Pool).await;
}

async fn accepted_on(path: Path) {
    let app = spawn_app(path.options()).await;
    let trader = app.trader("pro").await;
    let (status, _, body) = app
        .post(
            &format!("/webhook/u/{}?chart=aBcD1234", trader.webhook_token),
            JSON_ALERT,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["screenshot_status"], "pending");
    assert!(body["estimated_wait"].is_i64(), "{body}");
    assert_eq!(body["duplicate"], false);
    let id: Uuid = body["signal_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");

    let row = app
        .stack()
        .db()
        .await
        .query_one(
            "select user_id, ticker, exchange, symbol, price::text, direction, interval, indicator_name, \
                    chart_id, raw_message, screenshot_status from public.signals where id = $1",
            &[&id],
        )
        .await
        .expect("the signal row");
    assert_eq!(row.get::<_, Uuid>(0), trader.id);
    assert_eq!(row.get::<_, String>(1), "BINANCE:BTCUSDT");
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("BINANCE"));
    assert_eq!(row.get::<_, String>(3), "BTCUSDT");
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("67890.5"));
    assert_eq!(row.get::<_, Option<String>>(5).as_deref(), Some("long"));
    assert_eq!(row.get::<_, Option<String>>(6).as_deref(), Some("1h"));
    assert_eq!(
        row.get::<_, Option<String>>(7).as_deref(),
        Some("Trend Pro")
    );
    assert_eq!(row.get::<_, Option<String>>(8).as_deref(), Some("aBcD1234"));
    assert_eq!(
        row.get::<_, String>(9),
        JSON_ALERT,
        "the body is stored untouched"
    );
    assert_eq!(row.get::<_, String>(10), "pending");
    assert_eq!(
        app.deliveries(&trader).await,
        vec![("accepted".to_owned(), None, 200)]
    );
    assert_eq!(
        app.count(
            "select count(*) from public.webhook_deliveries where user_id = $1 and delivery_id is not null",
            trader.id
        )
        .await,
        1,
        "every call carries a delivery id, so a replay can be recognised"
    );
}

#[tokio::test]
async fn text_alerts_and_the_short_alias_are_accepted() {
    let app = spawn_app(Path::Rest.options()).await;
    let trader = app.trader("pro").await;
    // A JSON-looking message with a trailing newline arrives as text/plain.
    let body = "🚨 Señal: COMPRA\r\nTicker: NASDAQ:AAPL\r\nPrecio: 1.234,56\r\n";
    let (status, _, answer) = app
        .post_with(
            &format!("/webhook/{}", trader.webhook_token),
            body,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(app.signals_of(&trader).await, 1);
}

#[tokio::test]
async fn a_retry_returns_the_first_signal_and_stores_no_second_on_both_paths() {
    for path in [Path::Rest, Path::Pool] {
        let app = spawn_app(path.options()).await;
        let trader = app.trader("pro").await;
        let url = format!("/webhook/u/{}?chart=aBcD1234", trader.webhook_token);
        let (_, _, first) = app.post(&url, JSON_ALERT).await;
        let (status, _, retry) = app.post(&url, JSON_ALERT).await;
        assert_eq!(status, StatusCode::OK, "{retry}");
        assert_eq!(retry["signal_id"], first["signal_id"], "{path:?}");
        assert_eq!(retry["duplicate"], true);
        assert_eq!(app.signals_of(&trader).await, 1, "{path:?}");
        // Another chart is another alert.
        let (_, _, other) = app
            .post(
                &format!("/webhook/u/{}?chart=zzzz9999", trader.webhook_token),
                JSON_ALERT,
            )
            .await;
        assert_ne!(other["signal_id"], first["signal_id"]);
        assert_eq!(app.signals_of(&trader).await, 2);
    }
}

#[tokio::test]
async fn unknown_and_malformed_tokens_are_404() {
    for path in [Path::Rest, Path::Pool] {
        let app = spawn_app(path.options()).await;
        let (status, _, body) = app
            .post(
                "/webhook/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                JSON_ALERT,
            )
            .await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_token");
        let (status, _, body) = app.post("/webhook/u/short", JSON_ALERT).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_token");
        let (status, _, body) = app
            .post("/webhook/u/bad%20token%20with%20spaces!!", JSON_ALERT)
            .await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_token");
    }
}

#[tokio::test]
async fn a_disabled_webhook_is_403_and_logged() {
    let app = spawn_app(Path::Pool.options()).await;
    let trader = app.trader("pro").await;
    app.stack()
        .db()
        .await
        .execute(
            "update public.user_config set webhook_enabled = false where user_id = $1",
            &[&trader.id],
        )
        .await
        .expect("disable");
    let (status, _, body) = app
        .post(&format!("/webhook/u/{}", trader.webhook_token), JSON_ALERT)
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "webhook_disabled");
    assert_eq!(app.signals_of(&trader).await, 0);
    assert_eq!(
        app.deliveries(&trader).await,
        vec![(
            "rejected".to_owned(),
            Some("webhook_disabled".to_owned()),
            403
        )]
    );
}

#[tokio::test]
async fn bad_bodies_get_clear_errors_and_land_in_the_delivery_log() {
    let app = spawn_app(Path::Rest.options()).await;
    let trader = app.trader("pro").await;
    let url = format!("/webhook/u/{}", trader.webhook_token);

    let (status, _, body) = app.post(&url, "just words, nothing to trade").await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "no_ticker");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("ticker")
    );

    let (status, _, body) = app.post(&url, b"NASDAQ:AAPL \xff\xfe buy".to_vec()).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_body");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("UTF-8")
    );

    let (status, _, body) = app.post(&url, "NASDAQ:AAPL\0 buy").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_body");

    let (status, _, body) = app.post(&url, "  \n ").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_body");

    let (status, _, body) = app.post(&format!("{url}?chart=../../x"), JSON_ALERT).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_body");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("chart")
    );

    assert_eq!(app.signals_of(&trader).await, 0);
    let reasons: Vec<Option<String>> = app
        .deliveries(&trader)
        .await
        .into_iter()
        .map(|d| d.1)
        .collect();
    assert_eq!(
        reasons,
        [
            "no_ticker",
            "invalid_body",
            "invalid_body",
            "invalid_body",
            "invalid_body"
        ]
        .map(|r| Some(r.to_owned()))
    );
}

#[tokio::test]
async fn a_ten_megabyte_body_is_refused_early_with_413() {
    let mut options = Path::Pool.options();
    options.max_body_bytes = 16 * 1024;
    let app = spawn_app(options).await;
    let trader = app.trader("pro").await;
    let url = format!("/webhook/u/{}", trader.webhook_token);

    // Declared in Content-Length: refused without reading it.
    let huge = vec![b'x'; 10 * 1024 * 1024];
    let started = Instant::now();
    let (status, _, body) = app.post(&url, huge).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Streamed without a length: cut off once past the limit.
    let chunks = futures::stream::iter(
        (0..640).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 16 * 1024]))),
    );
    let (status, _, body) = app.post(&url, reqwest::Body::wrap_stream(chunks)).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );

    assert_eq!(
        app.deliveries(&trader).await,
        vec![
            (
                "rejected".to_owned(),
                Some("body_too_large".to_owned()),
                413
            );
            2
        ]
    );
}

#[tokio::test]
async fn the_monthly_quota_and_the_rate_limit_answer_429_with_retry_after() {
    let app = spawn_app(Path::Rest.options()).await;
    let trader = app.trader("free").await;
    let db = app.stack().db().await;
    db.execute(
        "update public.user_config set signals_this_period = 100 where user_id = $1",
        &[&trader.id],
    )
    .await
    .expect("use up the quota");
    let (status, headers, body) = app
        .post(&format!("/webhook/u/{}", trader.webhook_token), JSON_ALERT)
        .await;
    assert_error(
        status,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exceeded",
    );
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=31 * 24 * 3600).contains(&retry), "{retry}");

    let limited = app.trader("free").await; // 10 per minute
    for n in 0..10 {
        let (status, _, body) = app
            .post(
                &format!("/webhook/u/{}", limited.webhook_token),
                format!("NYSE:IBM buy {n}"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, headers, body) = app
        .post(
            &format!("/webhook/u/{}", limited.webhook_token),
            "NYSE:IBM buy 11",
        )
        .await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(app.signals_of(&limited).await, 10);
}

#[tokio::test]
async fn an_unreachable_database_is_a_quick_opaque_503_on_both_paths() {
    let stack = Stack::from_env();
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let rest = rest_at(
        &stack,
        &format!("http://{dead_addr}"),
        Duration::from_secs(2),
    );
    let pool = pool_at(
        &format!("postgresql://postgres@{dead_addr}/postgres"),
        Duration::from_secs(2),
    );
    for db in [rest, pool] {
        let app = spawn_app(Options::on(Upstream::Given(db))).await;
        let started = Instant::now();
        let (status, headers, body) = app
            .post(
                "/webhook/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                JSON_ALERT,
            )
            .await;
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        );
        assert!(headers.contains_key("retry-after"));
        let message = body["error"]["message"].as_str().expect("message");
        assert!(
            !message.contains("127.0.0.1") && !message.contains("refused"),
            "{message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let (status, _) = app.get("/health/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test]
async fn a_database_that_hangs_is_cut_off_by_the_deadline() {
    // Accepts connections and never answers a byte.
    let hang = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hang_addr = hang.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hang.accept().await {
            held.push(stream);
        }
    });
    let stack = Stack::from_env();
    let db = rest_at(
        &stack,
        &format!("http://{hang_addr}"),
        Duration::from_millis(500),
    );
    let app = spawn_app(Options::on(Upstream::Given(db))).await;
    let started = Instant::now();
    let (status, _, body) = app
        .post(
            "/webhook/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            JSON_ALERT,
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics.contains(r#"ingest_upstream_errors_total{kind="timeout",path="rest"} 1"#),
        "{metrics}"
    );
    // The failed call is timed too, at its full half second: a slow database
    // shows in the histogram, not only in the error count.
    for line in [
        r#"ingest_db_call_duration_seconds_count{call="ingest_signals",path="rest"} 1"#,
        r#"ingest_db_call_duration_seconds_bucket{call="ingest_signals",path="rest",le="0.25"} 0"#,
        r#"ingest_db_call_duration_seconds_bucket{call="ingest_signals",path="rest",le="1"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn a_slow_client_is_disconnected() {
    let mut options = Path::Rest.options();
    options.read_timeout = Duration::from_millis(500);
    let app = spawn_app(options).await;
    // Headers that never finish.
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /webhook/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\n",
        )
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a slow-loris connection open");

    // A body that never finishes.
    let trader = app.trader("pro").await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(
            format!(
                "POST /webhook/u/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nNYSE:",
                trader.webhook_token
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server waited forever for a body");
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(app.signals_of(&trader).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guessing_from_one_address_is_throttled_while_traders_keep_posting() {
    const WAVE: usize = 10;
    let mut options = Path::Pool.options();
    options.trusted_proxies = vec!["127.0.0.1"];
    options.unknown_token_per_minute = 20;
    let app = Arc::new(spawn_app(options).await);
    let trader = app.trader("premium").await;
    let guesser = [("x-forwarded-for", "203.0.113.9")];

    let started = Instant::now();
    let attack = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            for wave in 0..10_000 / WAVE {
                let answers = join_all((0..WAVE).map(|n| {
                    let app = app.clone();
                    async move {
                        let token = format!("{:0>43}", wave * WAVE + n);
                        app.post_with(&format!("/webhook/u/{token}"), "NYSE:IBM buy", &guesser)
                            .await
                            .0
                    }
                }))
                .await;
                for status in answers {
                    *statuses.entry(status.as_u16()).or_default() += 1;
                }
            }
            statuses
        })
    };
    let mut trader_answers = Vec::new();
    for n in 0..20 {
        let (status, _, body) = app
            .post_with(
                &format!("/webhook/u/{}", trader.webhook_token),
                format!("NYSE:IBM buy {n}"),
                &[("x-forwarded-for", "52.89.214.238")],
            )
            .await;
        trader_answers.push((status, body));
    }
    let statuses = attack.await.expect("attack task");
    let refilled = usize::try_from(started.elapsed().as_secs()).expect("short") * 20 / 60 + 1;
    assert_eq!(statuses.values().sum::<usize>(), 10_000, "{statuses:?}");
    // The budget is 20 a minute, refilling as the attack goes on. The first
    // wave passes freely (the address is clean until its first unknown
    // token); after that, requests reserve budget while their call runs, so
    // concurrency cannot overdraw it.
    let not_found = statuses.get(&404).copied().unwrap_or(0);
    assert!(
        (20..=20 + WAVE + refilled).contains(&not_found),
        "{statuses:?} in {:?}",
        started.elapsed()
    );
    assert_eq!(
        statuses.get(&429).copied().unwrap_or(0),
        10_000 - not_found,
        "{statuses:?}"
    );
    for (status, body) in &trader_answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    assert_eq!(app.signals_of(&trader).await, 20);
}

#[tokio::test]
async fn the_allowlist_refuses_other_sources() {
    let mut options = Path::Rest.options();
    options.trusted_proxies = vec!["127.0.0.1"];
    options.allowed = Some(vec!["52.89.214.238", "34.212.75.30"]);
    let app = spawn_app(options).await;
    let trader = app.trader("pro").await;
    let url = format!("/webhook/u/{}", trader.webhook_token);
    let (status, _, body) = app
        .post_with(&url, JSON_ALERT, &[("x-forwarded-for", "198.51.100.7")])
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "source_not_allowed");
    let (status, _, body) = app
        .post_with(&url, JSON_ALERT, &[("x-forwarded-for", "34.212.75.30")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.signals_of(&trader).await, 1);
}

#[tokio::test]
async fn health_ready_and_metrics_report_the_service() {
    for path in [Path::Rest, Path::Pool] {
        let app = spawn_app(path.options()).await;
        let (status, body) = app.get("/health").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let health: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(health["status"], "ok");
        assert!(
            health["queue_length"].is_i64() && health["active_workers"].is_i64(),
            "{health}"
        );
        assert!(health["uptime"].is_u64());
        let (status, body) = app.get("/health/ready").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, r#"{"status":"ready"}"#)
        );

        let trader = app.trader("pro").await;
        app.post(&format!("/webhook/u/{}", trader.webhook_token), JSON_ALERT)
            .await;
        let (status, metrics) = app.get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            metrics.contains(r#"ingest_requests_total{outcome="accepted",route="webhook"} 1"#),
            "{metrics}"
        );
        assert!(
            metrics.contains("ingest_request_duration_seconds_bucket"),
            "{metrics}"
        );
        assert!(metrics.contains("ingest_in_flight_requests"), "{metrics}");
        // Every database call is timed, by path and call: the webhook's
        // batch of one, and one queue status for both /health and
        // /health/ready (the status is cached for a second, so probes
        // cannot hammer the database).
        let path = match path {
            Path::Rest => "rest",
            Path::Pool => "pool",
        };
        for (call, count) in [("ingest_signals", 1), ("capture_queue_status", 1)] {
            let line = format!(
                r#"ingest_db_call_duration_seconds_count{{call="{call}",path="{path}"}} {count}"#
            );
            assert!(metrics.contains(&line), "{line} in {metrics}");
        }
        assert!(
            !metrics.contains(&trader.webhook_token),
            "a token leaked into the metrics"
        );
    }
}

/// A bounded load run: every 200 answer is exactly one stored signal, and
/// no signal exists without one. 400 alerts from 8 traders, 16 at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_stored_signals_equal_the_200_answers_exactly() {
    use futures::StreamExt as _;
    for path in [Path::Rest, Path::Pool] {
        let app = Arc::new(spawn_app(path.options()).await);
        let mut traders = Vec::new();
        for _ in 0..8 {
            traders.push(app.trader("premium").await);
        }
        let answers: Vec<_> = futures::stream::iter((0..400).map(|n| {
            let app = app.clone();
            let token = traders[n % traders.len()].webhook_token.clone();
            async move {
                app.post(
                    &format!("/webhook/u/{token}"),
                    format!("BINANCE:ETHUSDT sell #{n}"),
                )
                .await
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await;
        let mut ids = std::collections::HashSet::new();
        for (status, _, body) in &answers {
            assert_eq!(*status, StatusCode::OK, "{path:?}: {body}");
            assert!(ids.insert(body["signal_id"].as_str().expect("id").to_owned()));
        }
        let mut stored = 0;
        for trader in &traders {
            stored += app.signals_of(trader).await;
        }
        assert_eq!(stored, i64::try_from(ids.len()).expect("small"), "{path:?}");
        assert_eq!(stored, 400, "{path:?}");
    }
}

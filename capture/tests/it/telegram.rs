//! The Telegram Bot API contract, against the stub Bot API
//! ([`crate::support::telegram_stub`]): method, path (with the bot token),
//! content type and every form field.

use std::time::{Duration, Instant};

use bytes::Bytes;
use capture::telegram::{Notification, NotifyError, RetryPolicy, Screenshot, Telegram};
use service_runtime::SecretString;
use tokio::net::TcpListener;

use crate::support::link_chat;
use crate::support::telegram_stub::{Recorded, Stub};

const TOKEN: &str = "123456:test-bot-token";

fn client(base: &str) -> Telegram {
    Telegram::new(
        base.parse().expect("url"),
        SecretString::from(TOKEN),
        RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(50),
            max_wait: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        },
    )
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\nnot really a png, but bytes are bytes";

fn notification(screenshot: Screenshot) -> Notification {
    Notification {
        chat_id: "-1001234567890".parse().expect("chat id"),
        ticker: "BINANCE:BTC_USDT".into(),
        direction: Some("long".into()),
        price: Some("67890.5".into()),
        indicator: Some("Trend Pro".into()),
        time: "2026-11-22 10:00:00 UTC".into(),
        screenshot,
    }
}

/// One part of a multipart/form-data body: name, file name, content type,
/// value.
type FormField = (String, Option<String>, Option<String>, Vec<u8>);

/// Splits a multipart/form-data body into its parts.
fn form_fields(recorded: &Recorded) -> Vec<FormField> {
    let boundary = recorded
        .content_type
        .strip_prefix("multipart/form-data; boundary=")
        .unwrap_or_else(|| panic!("not a form: {}", recorded.content_type));
    let delimiter = format!("--{boundary}");
    let body = &recorded.body[..];
    let mut fields = Vec::new();
    let positions: Vec<usize> = body
        .windows(delimiter.len())
        .enumerate()
        .filter(|(_, w)| *w == delimiter.as_bytes())
        .map(|(i, _)| i)
        .collect();
    for pair in positions.windows(2) {
        let part = &body[pair[0] + delimiter.len() + 2..pair[1] - 2];
        let split = part
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("part headers");
        let headers = String::from_utf8(part[..split].to_vec()).expect("utf-8 headers");
        let value = part[split + 4..].to_vec();
        let attribute = |key: &str| {
            headers.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix(&format!("{key}=\""))
                    .map(|v| v.split('"').next().unwrap_or_default().to_owned())
            })
        };
        let content_type = headers.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        });
        fields.push((
            attribute("name").expect("name"),
            attribute("filename"),
            content_type,
            value,
        ));
    }
    fields
}

#[tokio::test]
async fn a_capture_is_sent_as_a_photo_with_an_html_caption() {
    let (stub, base) = Stub::start(&[(200, r#"{"ok":true,"result":{}}"#)]).await;
    client(&base)
        .send(&notification(Screenshot::Captured(Bytes::from_static(PNG))))
        .await
        .expect("delivered");

    let requests = stub.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/bot{TOKEN}/sendPhoto"));
    let fields = form_fields(request);
    let names: Vec<&str> = fields.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["chat_id", "caption", "parse_mode", "photo"]);
    assert_eq!(fields[0].3, b"-1001234567890");
    assert_eq!(
        String::from_utf8(fields[1].3.clone()).expect("utf-8"),
        "<b>BINANCE:BTC_USDT</b> 🟢 LONG @ <code>67890.5</code>\nTrend Pro\n<i>2026-11-22 10:00:00 UTC</i>"
    );
    assert_eq!(fields[2].3, b"HTML");
    assert_eq!(fields[3].1.as_deref(), Some("signal.png"));
    assert_eq!(fields[3].2.as_deref(), Some("image/png"));
    assert_eq!(fields[3].3, PNG);
}

#[tokio::test]
async fn a_failed_capture_is_sent_as_a_message_with_the_reason() {
    let (stub, base) = Stub::start(&[(200, r#"{"ok":true,"result":{}}"#)]).await;
    client(&base)
        .send(&notification(Screenshot::Failed(
            "TradingView session expired: paste fresh cookies".into(),
        )))
        .await
        .expect("delivered");

    let requests = stub.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, format!("/bot{TOKEN}/sendMessage"));
    assert_eq!(requests[0].content_type, "application/json");
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({
            "chat_id": "-1001234567890",
            "text": "<b>BINANCE:BTC_USDT</b> 🟢 LONG @ <code>67890.5</code>\nTrend Pro\n<i>2026-11-22 10:00:00 UTC</i>\nNo screenshot: TradingView session expired: paste fresh cookies",
            "parse_mode": "HTML",
            "link_preview_options": { "is_disabled": true },
        })
    );
}

#[tokio::test]
async fn a_flood_limit_is_waited_out_then_retried() {
    let (stub, base) = Stub::start(&[
        (
            429,
            r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 1","parameters":{"retry_after":1}}"#,
        ),
        (200, r#"{"ok":true,"result":{}}"#),
    ])
    .await;
    let started = Instant::now();
    client(&base)
        .send(&notification(Screenshot::Captured(Bytes::from_static(PNG))))
        .await
        .expect("delivered on the second attempt");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retry_after was not honoured: {:?}",
        started.elapsed()
    );
    let requests = stub.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(form_fields(&requests[0]), form_fields(&requests[1]));
}

#[tokio::test]
async fn a_bad_chat_is_not_retried() {
    let (stub, base) = Stub::start(&[(
        400,
        r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#,
    )])
    .await;
    let error = client(&base)
        .send(&notification(Screenshot::Captured(Bytes::from_static(PNG))))
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, NotifyError::Rejected { status: 400, description } if description == "Bad Request: chat not found"),
        "{error:?}"
    );
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_a_few_times_then_given_up() {
    let (stub, base) = Stub::start(&[
        (502, r#"{"ok":false,"description":"Bad Gateway"}"#),
        (502, r#"{"ok":false,"description":"Bad Gateway"}"#),
        (502, r#"{"ok":false,"description":"Bad Gateway"}"#),
    ])
    .await;
    let error = client(&base)
        .send(&notification(Screenshot::Failed("page never ready".into())))
        .await
        .expect_err("gave up");
    assert!(
        matches!(error, NotifyError::GaveUp { attempts: 3, .. }),
        "{error:?}"
    );
    assert_eq!(stub.requests().len(), 3);
    assert!(!error.to_string().contains(TOKEN));
}

#[tokio::test]
async fn network_errors_never_carry_the_token() {
    // Nothing listens on this port once the listener is dropped.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let error = client(&base)
        .send(&notification(Screenshot::Failed("x".into())))
        .await
        .expect_err("no server");
    assert!(!error.to_string().contains(TOKEN), "{error}");
    assert!(!format!("{error:?}").contains(TOKEN), "{error:?}");
}

/// Stores a signal for a fresh trader with the given notification settings
/// (the chat linked as the bot links it).
async fn signal_of_trader(
    db: &mut tokio_postgres::Client,
    notify: bool,
    chat: Option<&str>,
    on_failure: bool,
) -> uuid::Uuid {
    let trader = stack_harness::trader_in(db, "free").await;
    if let Some(chat) = chat {
        link_chat(db, &trader, chat).await;
    }
    db.execute(
        "update public.user_config set notify_telegram = $2, notify_on_failure = $3 where user_id = $1",
        &[&trader.id, &notify, &on_failure],
    )
    .await
    .expect("settings");
    db.query_one(
        "select (public.ingest_signal($1, '2026-11-22 10:00:00+00', 'alert', null, 'BINANCE:BTC_USDT', \
                 'BINANCE', 'BTC_USDT', 67890.5, 'long', 'alert', '1h', 'Trend Pro') ->> 'signal_id')::uuid",
        &[&trader.webhook_token],
    )
    .await
    .expect("ingest")
    .get(0)
}

#[tokio::test]
async fn notifications_follow_the_traders_settings_read_fresh() {
    let stack = stack_harness::Stack::from_env();
    let mut db = stack.db().await;
    let png = || Screenshot::Captured(Bytes::from_static(PNG));
    let failed = || Screenshot::Failed("page never ready".into());

    let wants_all = signal_of_trader(&mut db, true, Some("-1001234567890"), true).await;
    let n = capture::telegram::notification_for(&db, wants_all, png())
        .await
        .expect("query")
        .expect("a notification");
    assert_eq!(n.chat_id.as_str(), "-1001234567890");
    assert_eq!(n.ticker, "BINANCE:BTC_USDT");
    assert_eq!(n.direction.as_deref(), Some("long"));
    assert_eq!(n.price.as_deref(), Some("67890.5"));
    assert_eq!(n.indicator.as_deref(), Some("Trend Pro"));
    assert_eq!(n.time, "2026-11-22 10:00:00 UTC");
    assert!(
        capture::telegram::notification_for(&db, wants_all, failed())
            .await
            .expect("query")
            .is_some()
    );

    let no_failures = signal_of_trader(&mut db, true, Some("@signal_room"), false).await;
    assert!(
        capture::telegram::notification_for(&db, no_failures, png())
            .await
            .expect("query")
            .is_some()
    );
    assert!(
        capture::telegram::notification_for(&db, no_failures, failed())
            .await
            .expect("query")
            .is_none(),
        "failures only for traders who asked"
    );

    let switched_off = signal_of_trader(&mut db, false, Some("12345"), true).await;
    assert!(
        capture::telegram::notification_for(&db, switched_off, png())
            .await
            .expect("query")
            .is_none()
    );
}

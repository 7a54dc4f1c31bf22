//! The direct database path over TLS: a server whose certificate is issued for another name is
//! refused under `verify-full` (503, nothing reaches Postgres), and the same server is used
//! under `verify-ca`, so the refusal is the name's.

use std::time::Duration;

use reqwest::StatusCode;
use stack_harness::Stack;
use stack_harness::tls::WrongNameProxy;

use crate::helpers::{Options, Upstream, assert_error, pool_at, spawn_app};

const ALERT: &str = r#"{"ticker":"BINANCE:BTCUSDT","price":"67890.5","action":"buy"}"#;

#[tokio::test]
async fn the_pool_refuses_a_certificate_for_another_name_under_verify_full() {
    let stack = Stack::from_env();
    let proxy = WrongNameProxy::start(&stack).await;
    let trader = stack.trader("pro").await;
    let path = format!("/webhook/u/{}", trader.webhook_token);
    let deadline = Duration::from_secs(2);

    let url = proxy.url(&stack.database_url, "verify-full", "");
    let refusing = spawn_app(Options::on(Upstream::Given(pool_at(&url, deadline)))).await;
    let (status, _, body) = refusing.post(&path, ALERT).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    assert_eq!(proxy.handshakes(), 0, "no TLS session was completed");
    assert_eq!(refusing.signals_of(&trader).await, 0);

    let url = proxy.url(&stack.database_url, "verify-ca", "channel_binding=disable");
    let trusting = spawn_app(Options::on(Upstream::Given(pool_at(&url, deadline)))).await;
    let (status, _, body) = trusting.post(&path, ALERT).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(trusting.signals_of(&trader).await, 1);
    assert!(proxy.handshakes() >= 1);
}

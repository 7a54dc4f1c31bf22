//! Row level security and grants through the real PostgREST, with minted JWTs, exactly as the
//! dashboard's supabase-js client meets them.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use stack_harness::{As, Stack, Trader};

async fn rows(stack: &Stack, path: &str, who: As<'_>) -> (StatusCode, Value) {
    let response = stack
        .rest(Method::GET, path, who)
        .send()
        .await
        .expect("PostgREST answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn patch(stack: &Stack, path: &str, who: As<'_>, body: Value) -> (StatusCode, Value) {
    let response = stack
        .rest(Method::PATCH, path, who)
        .header("Prefer", "return=representation")
        .json(&body)
        .send()
        .await
        .expect("PostgREST answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn two_traders_with_signals(stack: &Stack) -> (Trader, String, Trader, String) {
    let a = stack.trader("pro").await;
    let b = stack.trader("pro").await;
    let a_signal = stack
        .ingest(&a.webhook_token, "A: BINANCE:BTCUSDT long")
        .await["signal_id"]
        .as_str()
        .expect("accepted")
        .to_owned();
    let b_signal = stack
        .ingest(&b.webhook_token, "B: BINANCE:BTCUSDT long")
        .await["signal_id"]
        .as_str()
        .expect("accepted")
        .to_owned();
    (a, a_signal, b, b_signal)
}

#[tokio::test]
async fn a_trader_reads_only_their_own_rows() {
    let stack = Stack::from_env();
    let (a, a_signal, b, b_signal) = two_traders_with_signals(&stack).await;

    let (status, signals) = rows(&stack, "signals?select=id,user_id", As::User(&a)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(signals, json!([{ "id": a_signal, "user_id": a.id }]));

    let (_, other) = rows(&stack, &format!("signals?id=eq.{b_signal}"), As::User(&a)).await;
    assert_eq!(other, json!([]), "B's signal is invisible to A even by id");

    let (_, configs) = rows(&stack, "user_config?select=user_id", As::User(&a)).await;
    assert_eq!(configs, json!([{ "user_id": a.id }]));

    let (_, deliveries) = rows(
        &stack,
        "webhook_deliveries?select=user_id,outcome",
        As::User(&b),
    )
    .await;
    assert_eq!(
        deliveries,
        json!([{ "user_id": b.id, "outcome": "accepted" }])
    );
}

#[tokio::test]
async fn a_trader_cannot_edit_or_delete_another_traders_rows() {
    let stack = Stack::from_env();
    let (a, _, b, b_signal) = two_traders_with_signals(&stack).await;

    let (status, changed) = patch(
        &stack,
        &format!("signals?id=eq.{b_signal}"),
        As::User(&a),
        json!({ "notes": "mine now" }),
    )
    .await;
    assert_eq!(
        (status, changed),
        (StatusCode::OK, json!([])),
        "the update matches no row of A's"
    );

    let response = stack
        .rest(
            Method::DELETE,
            &format!("signals?id=eq.{b_signal}"),
            As::User(&a),
        )
        .header("Prefer", "return=representation")
        .send()
        .await
        .expect("PostgREST answers");
    assert_eq!(response.json::<Value>().await.expect("json"), json!([]));

    let (_, changed) = patch(
        &stack,
        // Only columns the trader may read: a trader has no SELECT on the sealed session.
        &format!("user_config?user_id=eq.{}&select=user_id", b.id),
        As::User(&a),
        json!({ "webhook_enabled": false }),
    )
    .await;
    assert_eq!(changed, json!([]));

    let (_, still) = rows(
        &stack,
        &format!("signals?id=eq.{b_signal}&select=notes"),
        As::User(&b),
    )
    .await;
    assert_eq!(still, json!([{ "notes": null }]), "B's signal is untouched");
    let (_, config) = rows(&stack, "user_config?select=webhook_enabled", As::User(&b)).await;
    assert_eq!(config, json!([{ "webhook_enabled": true }]));
}

#[tokio::test]
async fn a_trader_edits_only_the_journal_and_their_settings() {
    let stack = Stack::from_env();
    let (a, a_signal, _, _) = two_traders_with_signals(&stack).await;
    let own = format!("signals?id=eq.{a_signal}");

    let (status, journal) = patch(
        &stack,
        &own,
        As::User(&a),
        json!({ "result": "win", "profit_loss": 250.5, "notes": "breakout" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(journal[0]["result"], "win");

    for forbidden in [
        json!({ "price": 1 }),
        json!({ "ticker": "NASDAQ:AAPL" }),
        json!({ "screenshot_status": "completed" }),
        json!({ "screenshot_url": "https://example.invalid/x.png" }),
        json!({ "user_id": a.id }),
    ] {
        let (status, _) = patch(&stack, &own, As::User(&a), forbidden.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{forbidden} must be refused");
    }
    let mine = format!("user_config?user_id=eq.{}", a.id);
    for forbidden in [
        json!({ "webhook_token": "a".repeat(43) }),
        json!({ "plan": "premium" }),
        json!({ "signals_this_period": 0 }),
        json!({ "tradingview_cookies_sealed": "\\x00" }),
        json!({ "cookies_valid": true }),
    ] {
        let (status, _) = patch(
            &stack,
            &format!("{mine}&select=user_id"),
            As::User(&a),
            forbidden.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{forbidden} must be refused");
    }
    let (_, config) = rows(
        &stack,
        &format!("{mine}&select=webhook_token,plan"),
        As::User(&a),
    )
    .await;
    assert_eq!(
        config,
        json!([{ "webhook_token": a.webhook_token, "plan": "pro" }])
    );

    let (status, settings) = patch(
        &stack,
        &format!("{mine}&select=screenshot_resolution"),
        As::User(&a),
        json!({ "default_chart_id": "Xy12AbCd", "screenshot_resolution": "1080p" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings[0]["screenshot_resolution"], "1080p");

    let insert = stack
        .rest(Method::POST, "signals", As::User(&a))
        .json(&json!({ "user_id": a.id, "ticker": "X", "symbol": "X", "raw_message": "x", "timestamp": "now" }))
        .send()
        .await
        .expect("PostgREST answers");
    assert_eq!(
        insert.status(),
        StatusCode::FORBIDDEN,
        "traders insert nothing"
    );

    let delete = stack
        .rest(Method::DELETE, &own, As::User(&a))
        .header("Prefer", "return=representation")
        .send()
        .await
        .expect("PostgREST answers");
    assert_eq!(
        delete.json::<Value>().await.expect("json")[0]["id"],
        a_signal.as_str(),
        "A deletes their own signal"
    );
}

#[tokio::test]
async fn anonymous_callers_get_nothing() {
    let stack = Stack::from_env();
    two_traders_with_signals(&stack).await;
    for table in ["signals", "user_config", "webhook_deliveries", "plans"] {
        let (status, _) = rows(&stack, table, As::Anon).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "anon reading {table}");
    }
    for rpc in [
        "signal_stats",
        "rotate_webhook_token",
        "capture_queue_status",
    ] {
        let response = stack
            .rest(Method::POST, &format!("rpc/{rpc}"), As::Anon)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "anon calling {rpc}"
        );
    }
}

#[tokio::test]
async fn only_the_service_role_calls_ingest_signal() {
    let stack = Stack::from_env();
    let a = stack.trader("free").await;
    let args = stack_harness::ingest_args(&a.webhook_token, "BINANCE:BTCUSDT long");

    let as_user = stack
        .rest(Method::POST, "rpc/ingest_signal", As::User(&a))
        .json(&args)
        .send()
        .await
        .unwrap();
    assert_eq!(as_user.status(), StatusCode::FORBIDDEN);
    let as_anon = stack
        .rest(Method::POST, "rpc/ingest_signal", As::Anon)
        .json(&args)
        .send()
        .await
        .unwrap();
    assert_eq!(as_anon.status(), StatusCode::UNAUTHORIZED);

    let accepted = stack.ingest(&a.webhook_token, "BINANCE:BTCUSDT long").await;
    assert_eq!(accepted["outcome"], "accepted");
    assert_eq!(accepted["http_status"], 200);
}

#[tokio::test]
async fn rotation_kills_the_old_token_at_once() {
    let stack = Stack::from_env();
    let a = stack.trader("free").await;
    let response = stack
        .rest(Method::POST, "rpc/rotate_webhook_token", As::User(&a))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let new_token: String = response.json().await.expect("the new token");
    assert_ne!(new_token, a.webhook_token);
    assert_eq!(new_token.len(), 43);

    assert_eq!(
        stack.ingest(&a.webhook_token, "NYSE:IBM sell").await["outcome"],
        "unknown_token"
    );
    assert_eq!(
        stack.ingest(&new_token, "NYSE:IBM sell").await["outcome"],
        "accepted"
    );
}

#[tokio::test]
async fn statistics_cover_only_the_callers_signals() {
    let stack = Stack::from_env();
    let (a, a_signal, _, _) = two_traders_with_signals(&stack).await;
    patch(
        &stack,
        &format!("signals?id=eq.{a_signal}"),
        As::User(&a),
        json!({ "result": "win", "profit_loss": 100 }),
    )
    .await;
    let response = stack
        .rest(Method::POST, "rpc/signal_stats", As::User(&a))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stats: Value = response.json().await.unwrap();
    assert_eq!(stats["total_signals"], 1);
    assert_eq!(stats["win_rate"], 100.0);
    assert_eq!(stats["total_pnl"], 100);
    assert_eq!(stats["by_ticker"][0]["ticker"], "BINANCE:BTCUSDT");
}

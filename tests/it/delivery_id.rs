//! `ingest_signal`'s delivery id through the real PostgREST: the call the spool's replayer makes.
//! PostgREST resolves the call with and without `p_delivery_id` (no overload is left to confuse
//! it), and replays of one delivery racing each other (or the first call, still in flight) store
//! exactly one signal, whatever their receive times.

use futures::StreamExt;
use serde_json::Value;
use stack_harness::{As, Stack, ingest_args};
use uuid::Uuid;

async fn ingest_with_id(stack: &Stack, token: &str, body: &str, at: &str, id: Uuid) -> Value {
    let mut args = ingest_args(token, body);
    args["p_received_at"] = at.into();
    args["p_delivery_id"] = id.to_string().into();
    let response = stack
        .rest(reqwest::Method::POST, "rpc/ingest_signal", As::ServiceRole)
        .json(&args)
        .send()
        .await
        .expect("PostgREST answers");
    assert!(
        response.status().is_success(),
        "ingest_signal failed: {}",
        response.status()
    );
    response.json().await.expect("ingest_signal returns JSON")
}

#[tokio::test]
async fn concurrent_replays_of_one_delivery_store_one_signal() {
    const CALLS: usize = 20;
    let stack = Stack::from_env();
    let trader = stack.trader("free").await;
    let delivery = Uuid::new_v4();

    // Receive times two minutes apart: neither the 30 s fingerprint window nor the per-minute
    // rate limit can be what keeps the second signal out; only the delivery id can.
    let answers: Vec<Value> = futures::stream::iter(0..CALLS)
        .map(|i| {
            let (stack, token) = (&stack, trader.webhook_token.clone());
            async move {
                let at = format!("2026-05-04T10:{:02}:00Z", i * 2);
                ingest_with_id(
                    stack,
                    &token,
                    "BINANCE:BTCUSDT long replayed",
                    &at,
                    delivery,
                )
                .await
            }
        })
        .buffer_unordered(CALLS)
        .collect()
        .await;

    let outcome = |a: &Value| a["outcome"].as_str().unwrap().to_owned();
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|a| outcome(a) == "accepted")
        .collect();
    assert_eq!(accepted.len(), 1, "answers: {answers:?}");
    let first = accepted[0]["signal_id"].as_str().unwrap();
    for a in &answers {
        assert!(
            outcome(a) == "accepted" || outcome(a) == "duplicate",
            "answer: {a}"
        );
        assert_eq!(a["signal_id"].as_str(), Some(first), "answer: {a}");
        assert_eq!(a["http_status"], 200);
    }

    let db = stack.db().await;
    let signals: i64 = db
        .query_one(
            "select count(*) from public.signals where user_id = $1",
            &[&trader.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(signals, 1);
    let logged: i64 = db
        .query_one(
            "select count(*) from public.webhook_deliveries where user_id = $1 and delivery_id = $2",
            &[&trader.id, &delivery],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        logged,
        i64::try_from(CALLS).unwrap(),
        "every call is in the trader's log"
    );

    // A call without a delivery id (every caller before it existed) still resolves and is decided
    // on its own.
    let plain = stack
        .ingest(&trader.webhook_token, "BINANCE:ETHUSDT short")
        .await;
    assert_eq!(plain["outcome"], "accepted");
}

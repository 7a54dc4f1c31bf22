//! `ingest_signal` under concurrency, through the real PostgREST: the quota admits exactly its limit.

use futures::StreamExt;
use stack_harness::Stack;

#[tokio::test]
async fn a_thousand_concurrent_alerts_at_the_quota_edge_admit_exactly_the_quota() {
    const CALLS: usize = 1000;
    const LEFT: i32 = 50;
    let stack = Stack::from_env();
    // Premium allows 100,000 a month and 120 a minute: start 50 short of the monthly quota, so the
    // quota (not the rate limit, which counts accepted alerts only) decides every call.
    let trader = stack.trader("premium").await;
    stack
        .db()
        .await
        .execute(
            "update public.user_config set signals_this_period = p.monthly_signal_quota - $2 \
             from public.plans p where p.id = plan and user_id = $1",
            &[&trader.id, &LEFT],
        )
        .await
        .unwrap();

    // 1,000 calls, 200 in flight at a time (PostgREST's pool then decides how many run at once in
    // Postgres; more open sockets would only measure the gateway's connection limit).
    let outcomes: Vec<String> = futures::stream::iter(0..CALLS)
        .map(|i| {
            let stack = &stack;
            let token = trader.webhook_token.clone();
            async move {
                stack
                    .ingest(&token, &format!("BINANCE:BTCUSDT long #{i}"))
                    .await["outcome"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;

    let accepted = outcomes.iter().filter(|o| *o == "accepted").count();
    let refused = outcomes.iter().filter(|o| *o == "quota_exceeded").count();
    assert_eq!(
        (accepted, refused),
        (50, CALLS - 50),
        "outcomes: {outcomes:?}"
    );

    let db = stack.db().await;
    let stored: i64 = db
        .query_one(
            "select count(*) from public.signals where user_id = $1",
            &[&trader.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 50, "exactly the quota is stored, never one more");
    let counter: i32 = db
        .query_one(
            "select signals_this_period from public.user_config where user_id = $1",
            &[&trader.id],
        )
        .await
        .unwrap()
        .get(0);
    let quota: i32 = db
        .query_one(
            "select monthly_signal_quota from public.plans where id = 'premium'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(counter, quota);
    let logged: i64 = db
        .query_one(
            "select count(*) from public.webhook_deliveries where user_id = $1",
            &[&trader.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        logged,
        i64::try_from(CALLS).unwrap(),
        "every call is in the delivery log"
    );
}

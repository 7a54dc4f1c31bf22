//! The capture queue under real concurrency, each test in a database of its own (the queue is
//! global by design, so tests sharing one would claim each other's jobs).

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use stack_harness::{Stack, TestDb, trader_in};
use tokio_postgres::{AsyncMessage, Client};
use uuid::Uuid;

async fn queue_signals(db: &Client, token: &str, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let row = db
            .query_one(
                "select (public.ingest_signal($1, now(), $2, null, 'BINANCE:BTCUSDT', 'BINANCE', 'BTCUSDT') ->> 'signal_id')::uuid",
                &[&token, &format!("alert {i}")],
            )
            .await
            .unwrap();
        ids.push(row.get(0));
    }
    ids
}

#[tokio::test]
async fn concurrent_workers_never_hold_the_same_job() {
    let stack = Stack::from_env();
    let test_db = TestDb::create(&stack).await;
    let db = test_db.client().await;
    // A plan without limits so the 200 alerts are all accepted in one go.
    db.batch_execute(
        "insert into public.plans (id, name, monthly_signal_quota, capture_priority, rate_limit_per_minute, screenshot_retention_days) \
         values ('unlimited_test', 'Test', 1000000, 2, 1000000, 1)",
    )
    .await
    .unwrap();
    let trader = trader_in(&db, "unlimited_test").await;
    let queued: HashSet<Uuid> = queue_signals(&db, &trader.webhook_token, 200)
        .await
        .into_iter()
        .collect();

    let workers = (0..4).map(|w| {
        let url = test_db.url.clone();
        tokio::spawn(async move {
            let client = stack_harness::connect(&url).await;
            let mut mine = Vec::new();
            loop {
                let rows = client
                    .query(
                        "select signal_id from private.claim_capture_jobs($1, 3)",
                        &[&format!("worker-{w}")],
                    )
                    .await
                    .unwrap();
                if rows.is_empty() {
                    return mine;
                }
                mine.extend(rows.iter().map(|r| r.get::<_, Uuid>(0)));
            }
        })
    });
    let mut seen = HashSet::new();
    let mut total = 0;
    for worker in futures::future::join_all(workers).await {
        for id in worker.unwrap() {
            total += 1;
            assert!(seen.insert(id), "job {id} was handed to two workers");
        }
    }
    assert_eq!(total, 200);
    assert_eq!(seen, queued, "every job was claimed exactly once");
    drop(db);
    test_db.drop_db().await;
}

#[tokio::test]
async fn an_idle_daemon_is_woken_once_and_busy_daemons_are_not() {
    let stack = Stack::from_env();
    let test_db = TestDb::create(&stack).await;
    let db = test_db.client().await;
    let trader = trader_in(&db, "pro").await;

    let (daemon, mut connection) = postgres_tls::connect(&test_db.url).await.unwrap();
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(stream.for_each(move |message| {
        if let Ok(AsyncMessage::Notification(n)) = message {
            tx.send(n.channel().to_owned()).ok();
        }
        futures::future::ready(())
    }));
    daemon.batch_execute("listen capture_jobs").await.unwrap();

    queue_signals(&db, &trader.webhook_token, 1).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), notifications.recv())
            .await
            .is_err(),
        "no NOTIFY while no daemon is idle"
    );

    daemon
        .execute("select private.capture_daemon_idle()", &[])
        .await
        .unwrap();
    queue_signals(&db, &trader.webhook_token, 3).await;
    let woken = tokio::time::timeout(Duration::from_secs(5), notifications.recv()).await;
    assert_eq!(
        woken.expect("the idle daemon is woken").as_deref(),
        Some("capture_jobs")
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), notifications.recv())
            .await
            .is_err(),
        "one wake-up per idle period, not one per alert"
    );
    drop(daemon);
    drop(db);
    test_db.drop_db().await;
}

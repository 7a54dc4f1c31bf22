//! The spool's replayer against the real `public.ingest_signal`: what issue 5 asks the spool to
//! prove on the database side. A webhook whose first call had committed (its answer lost) and
//! which was then spooled is replayed as `duplicate`, not stored twice; a crash between the
//! database commit and the spool's ack replays it once more, again as `duplicate`; new webhooks
//! keep their original receive time; an unknown token is a definitive rejection.
//!
//! The sink here is test code standing in for the edge's database call (the edge's own sink lands
//! with its integration): it parses the body with the edge's parser and calls `ingest_signal` with
//! the spooled delivery id and receive time.

use std::net::IpAddr;

use bytes::Bytes;
use chrono::{DateTime, Duration, SubsecRound as _, Utc};
use ingest::signal::{Signal, WebhookToken};
use stack_harness::Stack;
use tokio_postgres::Client;
use uuid::Uuid;
use webhook_spool::{
    ReplayCounts, ReplayOutcome, ReplaySink, Replayer, Spool, SpoolConfig, SpooledWebhook,
    Transient,
};

struct DatabaseSink {
    db: Client,
}

impl DatabaseSink {
    async fn call(&self, webhook: &SpooledWebhook) -> Result<String, tokio_postgres::Error> {
        let signal = Signal::parse(&webhook.body).expect("the test sends parsable bodies");
        let ticker = signal.ticker();
        let row = self
            .db
            .query_one(
                "select public.ingest_signal(p_token => $1, p_received_at => $2::text::timestamptz, \
                   p_raw_message => $3, p_chart_id => $4, p_ticker => $5, p_exchange => $6, \
                   p_symbol => $7, p_delivery_id => $8) ->> 'outcome'",
                &[
                    &webhook.token.expose(),
                    &webhook.received_at.to_rfc3339(),
                    &signal.raw_message(),
                    &webhook.chart,
                    &ticker.to_string(),
                    &ticker.exchange(),
                    &ticker.symbol(),
                    &webhook.delivery_id,
                ],
            )
            .await?;
        Ok(row.get(0))
    }
}

impl ReplaySink for DatabaseSink {
    // One webhook per call (the trait's default batch of one).
    async fn ingest(&self, webhooks: &[SpooledWebhook]) -> Vec<Result<ReplayOutcome, Transient>> {
        let mut results = Vec::with_capacity(webhooks.len());
        for webhook in webhooks {
            let result = self
                .call(webhook)
                .await
                .map_err(Transient::new)
                .map(|outcome| match outcome.as_str() {
                    "accepted" => ReplayOutcome::Accepted,
                    "duplicate" => ReplayOutcome::Duplicate,
                    _ => ReplayOutcome::Rejected,
                });
            let stop = result.is_err();
            results.push(result);
            if stop {
                break;
            }
        }
        results
    }
}

fn webhook(token: &str, body: &str, received_at: DateTime<Utc>) -> SpooledWebhook {
    SpooledWebhook {
        delivery_id: Uuid::now_v7(),
        token: WebhookToken::parse(token).unwrap(),
        chart: None,
        body: Bytes::from(body.to_owned()),
        received_at,
        client_ip: Some(IpAddr::from([52, 89, 214, 238])),
    }
}

async fn signals(db: &Client, user: Uuid, body: &str) -> Vec<DateTime<Utc>> {
    db.query(
        "select to_char(\"timestamp\" at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
           from public.signals where user_id = $1 and raw_message = $2",
        &[&user, &body],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<_, String>(0).parse().unwrap())
    .collect()
}

#[tokio::test]
async fn replays_store_each_webhook_once_with_its_original_receive_time() {
    let stack = Stack::from_env();
    let trader = stack.trader("pro").await;
    let db = stack.db().await;
    let sink = DatabaseSink {
        db: stack.db().await,
    };
    let dir = tempfile::TempDir::new().unwrap();
    let config = SpoolConfig::new(dir.path(), 1 << 20);
    let t0 = Utc::now().trunc_subsecs(6) - Duration::minutes(10);

    // 1. The first call commits, but its answer never reaches the edge, which spools the webhook.
    let committed = webhook(&trader.webhook_token, "BINANCE:BTCUSDT long committed", t0);
    assert_eq!(sink.call(&committed).await.unwrap(), "accepted");
    // 2. A webhook that never reached the database, and one for a token nobody has.
    let missed = webhook(
        &trader.webhook_token,
        "BINANCE:ETHUSDT short missed",
        t0 + Duration::seconds(40),
    );
    let stranger = webhook(
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "BINANCE:SOLUSDT long",
        t0 + Duration::seconds(50),
    );
    let (spool, _) = Spool::open(&config).unwrap();
    for w in [&committed, &missed, &stranger] {
        spool.append(w).await.unwrap();
    }
    // 3. Other alerts of the trader reach the database meanwhile, long after the dedup window.
    let later = webhook(
        &trader.webhook_token,
        "BINANCE:ADAUSDT long later",
        t0 + Duration::minutes(5),
    );
    assert_eq!(sink.call(&later).await.unwrap(), "accepted");

    // 4. The database is back: replay.
    let replayer = Replayer::new(spool.clone(), sink);
    replayer.drain().await.unwrap();
    assert_eq!(
        replayer.counters().snapshot(),
        ReplayCounts {
            accepted: 1,
            duplicate: 1,
            rejected: 1,
            transient_failures: 0
        }
    );
    assert_eq!(spool.stats().entries, 0);
    assert_eq!(
        signals(&db, trader.id, "BINANCE:BTCUSDT long committed").await,
        vec![t0],
        "the committed webhook is stored once"
    );
    assert_eq!(
        signals(&db, trader.id, "BINANCE:ETHUSDT short missed").await,
        vec![t0 + Duration::seconds(40)],
        "the missed webhook is stored with the time it was received, not replayed"
    );

    // 5. A crash between the database commit and the spool's ack: the record comes back after the
    //    restart and is replayed again, as a duplicate.
    let crashed = webhook(
        &trader.webhook_token,
        "BINANCE:XRPUSDT short crashed",
        t0 + Duration::minutes(6),
    );
    spool.append(&crashed).await.unwrap();
    let sink = DatabaseSink {
        db: stack.db().await,
    };
    let entries = spool.read(10).await.unwrap();
    assert_eq!(sink.call(&entries[0].webhook).await.unwrap(), "accepted");
    drop((entries, replayer, spool)); // killed before the ack
    let (spool, recovery) = Spool::open(&config).unwrap();
    assert_eq!(recovery.entries, 1);
    let replayer = Replayer::new(spool.clone(), sink);
    replayer.drain().await.unwrap();
    assert_eq!(replayer.counters().snapshot().duplicate, 1);
    assert_eq!(
        signals(&db, trader.id, "BINANCE:XRPUSDT short crashed").await,
        vec![t0 + Duration::minutes(6)],
        "replayed after the crash, still one signal"
    );
}

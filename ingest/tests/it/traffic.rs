//! Production traffic: every trader's alerts from TradingView's four
//! addresses, strangers' bad tokens mixed in, and bursts at bar close.
//!
//! - Strangers cost traders nothing: thousands of bad tokens from the four
//!   addresses, then 100 traders' alerts from the same addresses, all 200;
//!   and after a restart of ingest during a database outage (the known
//!   tokens were saved and loaded) all 202 and stored once it is back.
//! - A burst for one free-plan trader, on both database paths: exactly the
//!   remaining quota is accepted, in batches, and it is the first alerts to
//!   arrive; the rest 429 with `Retry-After`.

use std::sync::Arc;

use futures::future::join_all;
use reqwest::StatusCode;
use stack_harness::Trader;

use crate::helpers::{Options, SpoolLimits, TestApp, Upstream, spawn_app};
use crate::switch::Mode;

/// TradingView's webhook addresses (the `tradingview` preset).
const TRADINGVIEW: [&str; 4] = [
    "52.89.214.238",
    "34.212.75.30",
    "54.218.53.128",
    "52.32.178.7",
];

fn options(upstream: Upstream) -> Options {
    let mut options = Options::on(upstream);
    options.trusted_proxies = vec!["127.0.0.1"];
    options.allowed = Some(TRADINGVIEW.to_vec());
    options.unknown_token_per_minute = 30;
    options.unverified_in_flight = 16;
    options
}

impl TestApp {
    /// Posts an alert to `token` from TradingView's address number `n % 4`.
    async fn post_from_tradingview(&self, token: &str, n: usize, body: String) -> StatusCode {
        self.post_with(
            &format!("/webhook/u/{token}"),
            body,
            &[("x-forwarded-for", TRADINGVIEW[n % 4])],
        )
        .await
        .0
    }

    /// `count` bad tokens posted 50 at a time from the four addresses:
    /// how many got each status.
    async fn strangers(self: &Arc<Self>, count: usize) -> std::collections::BTreeMap<u16, usize> {
        let mut statuses = std::collections::BTreeMap::new();
        for wave in 0..count.div_ceil(50) {
            let answers = join_all((0..50).map(|n| {
                let app = Arc::clone(self);
                async move {
                    let token = format!("stranger{:0>35}", (wave * 50 + n) % 500);
                    app.post_from_tradingview(&token, n, "NYSE:IBM buy".into())
                        .await
                }
            }))
            .await;
            for status in answers {
                *statuses.entry(status.as_u16()).or_default() += 1;
            }
        }
        statuses
    }
}

async fn traders(app: &TestApp, count: usize) -> Vec<Trader> {
    let mut traders = Vec::new();
    for _ in 0..count {
        traders.push(app.trader("premium").await);
    }
    traders
}

/// Each trader's alert, all at once, from the four addresses.
async fn every_trader_posts(
    app: &Arc<TestApp>,
    traders: &[Trader],
    marker: &str,
) -> Vec<StatusCode> {
    join_all(traders.iter().enumerate().map(|(n, trader)| {
        let app = Arc::clone(app);
        let body = format!("NYSE:IBM buy {marker}");
        async move {
            app.post_from_tradingview(&trader.webhook_token, n, body)
                .await
        }
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_from_the_shared_addresses_never_refuse_a_trader() {
    let app = Arc::new(spawn_app(options(Upstream::Rest)).await);
    let traders = traders(&app, 100).await;

    let first = app.strangers(1000).await;
    assert_eq!(
        first.get(&429),
        None,
        "no address budget for TradingView: {first:?}"
    );
    assert!(first.get(&404).copied().unwrap_or(0) >= 500, "{first:?}");
    // The same 500 bad tokens again: answered from memory.
    // Alerts sent to the database so far (the batch sizes' sum).
    let calls = |metrics: &str| -> String {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("ingest_db_batch_size_sum "))
            .unwrap_or("0")
            .to_owned()
    };
    let alerts_before = calls(&app.metrics().await);
    let again = app.strangers(500).await;
    assert_eq!(again.get(&404), Some(&500), "{again:?}");
    assert_eq!(
        calls(&app.metrics().await),
        alerts_before,
        "a bad token the database already refused costs it nothing"
    );

    let statuses = every_trader_posts(&app, &traders, "one").await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    for trader in &traders {
        assert_eq!(app.signals_of(trader).await, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_tokens_survive_a_restart_during_an_outage() {
    let dir = tempfile::tempdir().expect("a spool directory");
    let limits = || SpoolLimits {
        max_bytes: 1 << 22,
        unverified_per_minute: 20,
        dir: Some(dir.path().to_owned()),
        ..SpoolLimits::default()
    };
    let mut first = options(Upstream::Switched);
    first.spool = Some(limits());
    let app = Arc::new(spawn_app(first).await);
    let traders = traders(&app, 100).await;
    // One after the other: these tokens are new (unverified), and a burst
    // of new tokens may be spooled or refused.
    for (n, trader) in traders.iter().enumerate() {
        let status = app
            .post_from_tradingview(&trader.webhook_token, n, "NYSE:IBM buy before".into())
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let drain = Arc::into_inner(app)
        .expect("no other handle")
        .shut_down(std::time::Duration::from_secs(5))
        .await;
    assert_eq!(drain, service_runtime::http::Drain::Complete);

    let mut second = options(Upstream::Switched);
    second.spool = Some(limits());
    let app = Arc::new(spawn_app(second).await);
    app.switch().set(Mode::Down);
    assert_eq!(app.tokens.known_len(), 100, "the known tokens were loaded");
    let strangers = app.strangers(500).await;
    assert_eq!(strangers.get(&429), None, "{strangers:?}");
    let spooled = strangers.get(&202).copied().unwrap_or(0);
    assert!(
        spooled <= 20,
        "at most the unverified limit is spooled: {strangers:?}"
    );

    let statuses = every_trader_posts(&app, &traders, "during").await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::ACCEPTED),
        "every trader is still known: {statuses:?}"
    );
    app.switch().set(Mode::Up);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, health) = app.get_json("/health").await;
        if health["spool"]["entries"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "replayed: {health}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for trader in &traders {
        assert_eq!(app.signals_of(trader).await, 2, "stored once each");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_for_a_free_trader_gets_exactly_the_remaining_quota_through_postgrest() {
    a_burst_for_a_free_trader_gets_exactly_the_remaining_quota(Upstream::Rest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_for_a_free_trader_gets_exactly_the_remaining_quota_through_the_pool() {
    a_burst_for_a_free_trader_gets_exactly_the_remaining_quota(Upstream::Pool).await;
}

/// 500 alerts at once for a free trader with 4 signals left: exactly 4
/// accepted, and they are the first 4 to arrive (by the receive time and
/// the time-ordered delivery id the edge gave each); the other 496 are 429
/// `quota_exceeded` with `Retry-After`, and all 500 are in the log.
async fn a_burst_for_a_free_trader_gets_exactly_the_remaining_quota(upstream: Upstream) {
    const ALERTS: usize = 500;
    let app = Arc::new(spawn_app(options(upstream)).await);
    let trader = app.trader("free").await;
    app.stack()
        .db()
        .await
        .execute(
            "update public.user_config set signals_this_period = 96, \
                    quota_period_start = date_trunc('month', now()) where user_id = $1",
            &[&trader.id],
        )
        .await
        .expect("four signals left");
    let answers = join_all((0..ALERTS).map(|n| {
        let app = Arc::clone(&app);
        let url = format!("/webhook/u/{}", trader.webhook_token);
        async move {
            app.post_with(
                &url,
                format!("NYSE:IBM buy {n}"),
                &[("x-forwarded-for", TRADINGVIEW[n % 4])],
            )
            .await
        }
    }))
    .await;
    let mut answered_ids = Vec::new();
    for (status, headers, body) in &answers {
        if *status == StatusCode::OK {
            answered_ids.push(body["signal_id"].as_str().expect("an id").to_owned());
            continue;
        }
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
        let retry: u64 = headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=31 * 24 * 3600).contains(&retry), "{retry}");
    }
    assert_eq!(answered_ids.len(), 4, "exactly the remaining quota");
    assert_eq!(app.signals_of(&trader).await, 4);

    // Arrival order: the log sorted by receive time (then by delivery id,
    // made from the clock too) starts with the 4 accepted alerts, which are
    // the 4 answered 200.
    let log = app
        .stack()
        .db()
        .await
        .query(
            "select outcome, reason, signal_id::text from public.webhook_deliveries \
              where user_id = $1 order by received_at, delivery_id",
            &[&trader.id],
        )
        .await
        .expect("the delivery log");
    assert_eq!(log.len(), ALERTS, "every alert logged");
    let outcomes: Vec<(String, Option<String>)> =
        log.iter().map(|r| (r.get(0), r.get(1))).collect();
    let first: Vec<_> = outcomes.iter().take(4).collect();
    assert!(
        first.iter().all(|(o, _)| o == "accepted"),
        "the first four to arrive were accepted: {:?}",
        &outcomes[..8]
    );
    assert!(
        outcomes[4..]
            .iter()
            .all(|(o, r)| o == "rejected" && r.as_deref() == Some("quota_exceeded")),
        "the rest were refused: {outcomes:?}"
    );
    let mut logged_ids: Vec<String> = log.iter().take(4).map(|r| r.get(2)).collect();
    logged_ids.sort();
    answered_ids.sort();
    assert_eq!(logged_ids, answered_ids);

    let metrics = app.metrics().await;
    let calls: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ingest_db_batch_size_count "))
        .and_then(|v| v.parse().ok())
        .expect("batch count");
    assert!(
        calls < 500,
        "alerts that arrived together went in batches: {calls} calls"
    );
}

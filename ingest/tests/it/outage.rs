//! The edge while the database path is down: webhooks are spooled and
//! answered 202, replayed in arrival order with their original receive time
//! once it is back, never stored twice, never lost to a `kill -9` of ingest,
//! and refused with 503 when the spool is full or a stranger tries to fill it.
//!
//! The database path goes through a [`Switch`] the test turns off or mutes,
//! with the real PostgREST and `ingest_signal` on the other side.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use stack_harness::{Stack, Trader};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::helpers::{Options, SpoolLimits, TestApp, Upstream, gateway, spawn_app};
use crate::switch::{Mode, Switch};

/// An ingest with a spool, behind a switched PostgREST; 127.0.0.1 is a
/// trusted proxy, so tests say which client posts with `X-Forwarded-For`.
async fn spawn(limits: SpoolLimits) -> TestApp {
    spawn_with_deadline(limits, Duration::from_secs(2)).await
}

async fn spawn_with_deadline(limits: SpoolLimits, db_timeout: Duration) -> TestApp {
    let mut options = Options::on(Upstream::Switched);
    options.db_timeout = db_timeout;
    options.trusted_proxies = vec!["127.0.0.1"];
    options.spool = Some(limits);
    spawn_app(options).await
}

fn alert(marker: &str) -> String {
    format!(
        r#"{{"ticker":"BINANCE:BTCUSDT","action":"buy","price":"67890.5","marker":"{marker}"}}"#
    )
}

/// Posts `body` to `token`'s webhook from `client` (an address the edge
/// believes through `X-Forwarded-For`, since 127.0.0.1 is a trusted proxy).
async fn post_from(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    body: String,
    client: &str,
) -> (StatusCode, Value) {
    let response = http
        .post(format!("{base}/webhook/u/{token}"))
        .header("x-forwarded-for", client)
        .body(body)
        .send()
        .await
        .expect("an answer");
    let status = response.status();
    (status, response.json().await.expect("JSON"))
}

impl TestApp {
    async fn post_alert(&self, trader: &Trader, body: String) -> (StatusCode, Value) {
        self.post_as(&trader.webhook_token, body, "198.51.100.7")
            .await
    }

    async fn post_as(&self, token: &str, body: String, client: &str) -> (StatusCode, Value) {
        post_from(&self.http, &self.url(""), token, body, client).await
    }

    /// Waits (at most 20 s) until the spool is empty.
    async fn replayed(&self) {
        wait_until("the spool to empty", || async move {
            let (_, health) = self.get_json("/health").await;
            health["spool"]["entries"] == 0
        })
        .await;
    }
}

async fn wait_until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The trader's signals as (marker in the raw body, signal time, created
/// at), in the order they were stored.
async fn signals(stack: &Stack, trader: &Trader) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    stack
        .db()
        .await
        .query(
            "select raw_message::jsonb ->> 'marker', \"timestamp\" from public.signals \
              where user_id = $1 order by created_at, id",
            &[&trader.id],
        )
        .await
        .expect("signals")
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test]
async fn an_outage_is_spooled_and_replayed_in_order_with_the_original_times() {
    let app = spawn(SpoolLimits::default()).await;
    let trader = app.trader("pro").await;
    let (status, body) = app.post_alert(&trader, alert("a")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    app.switch().set(Mode::Down);
    let before_outage_ends = chrono::Utc::now();
    let (status, body) = app.post_alert(&trader, alert("b")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["spooled"], true);
    assert_eq!(body["screenshot_status"], "pending");
    assert!(
        body["delivery_id"]
            .as_str()
            .is_some_and(|id| id.parse::<Uuid>().is_ok())
    );
    // Not an alert: refused at once with the edge's own answer, and logged
    // for the trader when the database is back.
    let (status, body) = app.post_alert(&trader, "hello there".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = app.post_alert(&trader, alert("c")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Only b tried the database: behind a waiting webhook, the others went
    // straight to the spool (arrival order, and no deadline to wait out).
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"ingest_upstream_errors_total{kind="unreachable",path="rest"} 1"#),
        "{metrics}"
    );

    let (status, health) = app.get_json("/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "spooling");
    assert_eq!(health["spool"]["entries"], 3, "{health}");
    assert!(health["spool"]["oldest_age_seconds"].is_u64(), "{health}");
    let (status, ready) = app.get_json("/health/ready").await;
    assert_eq!(
        (status, &ready["status"]),
        (StatusCode::OK, &Value::from("spooling"))
    );
    let metrics = app.metrics().await;
    assert!(metrics.contains("ingest_spool_entries 3"), "{metrics}");
    assert!(
        syncs(&metrics, "append") >= 1,
        "each spooled webhook waited for a timed fsync: {metrics}"
    );
    assert_eq!(syncs(&metrics, "ack"), 0, "nothing replayed yet: {metrics}");
    assert!(
        metrics.contains(r#"ingest_requests_total{outcome="spooled",route="webhook"} 2"#),
        "{metrics}"
    );

    app.switch().set(Mode::Up);
    // Spooled behind b and c if they still wait, else stored at once: after
    // them either way.
    let (status, _) = app.post_alert(&trader, alert("d")).await;
    assert!(
        matches!(status, StatusCode::ACCEPTED | StatusCode::OK),
        "{status}"
    );
    app.replayed().await;

    let stored = signals(app.stack(), &trader).await;
    let markers: Vec<&str> = stored.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        markers,
        ["a", "b", "c", "d"],
        "every alert once, in arrival order"
    );
    assert!(
        stored[1].1 < before_outage_ends + chrono::Duration::seconds(1),
        "b keeps the time it was received, not the replay's"
    );
    assert!(
        app.deliveries(&trader)
            .await
            .contains(&("rejected".into(), Some("no_ticker".into()), 422)),
        "the refused body is in the trader's delivery log"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"ingest_spool_replays_total{outcome="accepted"} 2"#)
            || metrics.contains(r#"ingest_spool_replays_total{outcome="accepted"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains("ingest_spool_entries 0"), "{metrics}");
    assert!(
        syncs(&metrics, "ack") >= 1,
        "the replay's cursor: {metrics}"
    );
    // Back to normal: stored at once.
    let (status, _) = app.post_alert(&trader, alert("e")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_call_that_committed_but_lost_its_answer_is_replayed_as_a_duplicate() {
    let app = spawn_with_deadline(SpoolLimits::default(), Duration::from_millis(500)).await;
    let trader = app.trader("pro").await;
    app.switch().set(Mode::Mute);
    let started = Instant::now();
    let (status, body) = app.post_alert(&trader, alert("lost-answer")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    app.switch().set(Mode::Up);
    app.replayed().await;
    assert_eq!(signals(app.stack(), &trader).await.len(), 1, "stored once");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"ingest_spool_replays_total{outcome="duplicate"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_full_spool_answers_503_so_tradingview_retries() {
    let app = spawn(SpoolLimits {
        max_bytes: 1500,
        ..SpoolLimits::default()
    })
    .await;
    let trader = app.trader("pro").await;
    assert_eq!(
        app.post_alert(&trader, alert("known")).await.0,
        StatusCode::OK
    );
    app.switch().set(Mode::Down);
    let mut answers = Vec::new();
    for n in 0..20 {
        answers.push(app.post_alert(&trader, alert(&format!("n{n}"))).await);
    }
    let spooled = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .count();
    assert!(spooled >= 3, "{answers:?}");
    let (status, body) = answers.last().expect("answers");
    assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        answers[..spooled]
            .iter()
            .all(|(s, _)| *s == StatusCode::ACCEPTED),
        "nothing is refused before the spool is full"
    );
    assert!(
        app.metrics()
            .await
            .contains(r#"ingest_spool_refusals_total{reason="spool_full"}"#)
    );

    app.switch().set(Mode::Up);
    app.replayed().await;
    assert_eq!(signals(app.stack(), &trader).await.len(), 1 + spooled);
}

#[tokio::test]
async fn strangers_cannot_fill_the_spool_while_tokens_cannot_be_checked() {
    let app = spawn(SpoolLimits {
        max_bytes: 4000,
        unverified_per_minute: 2,
        // The replay waits long enough after the outage for the last check.
        replay_backoff: Duration::from_secs(4),
        dir: None,
    })
    .await;
    let known = app.trader("pro").await;
    assert_eq!(
        app.post_alert(&known, alert("known")).await.0,
        StatusCode::OK
    );
    app.switch().set(Mode::Down);

    // Tokens the database never confirmed: a few per address and minute.
    let guessed = "GuessedTokenGuessedTokenGuessedToken";
    let stranger = "203.0.113.9";
    assert_eq!(
        app.post_as(guessed, alert("g1"), stranger).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.post_as(guessed, alert("g2"), stranger).await.0,
        StatusCode::ACCEPTED
    );
    let (status, body) = app.post_as(guessed, alert("g3"), stranger).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // A known trader from the same address is not held back.
    assert_eq!(
        app.post_as(&known.webhook_token, alert("k1"), stranger)
            .await
            .0,
        StatusCode::ACCEPTED
    );

    // Once the spool is half full, only known tokens may add to it.
    let mut n = 0;
    while app.get_json("/health").await.1["spool"]["bytes"]
        .as_u64()
        .expect("bytes")
        < 2000
    {
        n += 1;
        let (status, _) = app.post_alert(&known, alert(&format!("fill{n}"))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, _) = app.post_as(guessed, alert("g4"), "203.0.113.10").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a fresh address, but the spool is half full"
    );
    assert_eq!(
        app.post_alert(&known, alert("k2")).await.0,
        StatusCode::ACCEPTED
    );
    assert!(
        app.metrics()
            .await
            .contains(r#"ingest_spool_refusals_total{reason="spool_limited"} 2"#),
        "each refusal counted once, also when the database then fails too"
    );

    // The database is back while the spool still waits for its replay: an
    // alert the spool refuses goes to the database instead of getting 503.
    app.switch().set(Mode::Up);
    let (status, body) = app.post_as(guessed, alert("g5"), stranger).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        app.get_json("/health").await.1["spool"]["replayed"]["accepted"],
        0,
        "still before the replay"
    );
    app.replayed().await;
    assert_eq!(signals(app.stack(), &known).await.len(), 1 + 1 + n + 1);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"ingest_spool_replays_total{outcome="rejected"} 2"#),
        "the guessed tokens are refused at replay: {metrics}"
    );
}

/// The real binary, killed with SIGKILL between its 202s and their replay.
struct Binary {
    child: std::process::Child,
    base: String,
}

impl Binary {
    async fn start(stack: &Stack, database: &str, spool_dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
            .env_clear()
            .env("INGEST_LISTEN", format!("127.0.0.1:{port}"))
            .env("SUPABASE_URL", database)
            .env("SUPABASE_SERVICE_ROLE_KEY", &stack.service_role_key)
            .env("INGEST_SPOOL_DIR", spool_dir)
            .env("INGEST_DB_TIMEOUT", "1s")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start ingest");
        let base = format!("http://127.0.0.1:{port}");
        let (http, url) = (&reqwest::Client::new(), &format!("{base}/health/live"));
        wait_until("ingest to listen", || async move {
            http.get(url).send().await.is_ok()
        })
        .await;
        Self { child, base }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_kill_9_between_the_202_and_the_replay_loses_nothing() {
    let stack = Stack::from_env();
    let switch = Switch::start(gateway(&stack)).await;
    let spool_dir = tempfile::tempdir().expect("spool dir");
    let trader = stack.trader("pro").await;
    let http = reqwest::Client::new();

    switch.set(Mode::Down);
    let mut first = Binary::start(&stack, &switch.url(), spool_dir.path()).await;
    for n in 0..5 {
        let (status, body) = post_from(
            &http,
            &first.base,
            &trader.webhook_token,
            alert(&format!("k{n}")),
            "198.51.100.7",
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reaped");
    assert!(signals(&stack, &trader).await.is_empty());

    switch.set(Mode::Up);
    let second = Binary::start(&stack, &switch.url(), spool_dir.path()).await;
    let (stack, trader) = (&stack, &trader);
    wait_until("the replay after the restart", || async move {
        signals(stack, trader).await.len() == 5
    })
    .await;
    let markers: Vec<String> = signals(stack, trader)
        .await
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(markers, ["k0", "k1", "k2", "k3", "k4"]);
    let health: Value = http
        .get(format!("{}/health", second.base))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("JSON");
    assert_eq!(health["spool"]["replayed"]["accepted"], 5, "{health}");
}

/// How many spool fsyncs of `op` (`append`, `ack`) `/metrics` counted.
fn syncs(metrics: &str, op: &str) -> u64 {
    let series = format!("ingest_spool_sync_duration_seconds_count{{op=\"{op}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |n| n.parse().expect("a count"))
}

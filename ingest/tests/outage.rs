//! The edge while the database path is down: webhooks are spooled and
//! answered 202, replayed in arrival order with their original receive time
//! once it is back, never stored twice, never lost to a `kill -9` of ingest,
//! and refused with 503 when the spool is full or a stranger tries to fill it.
//!
//! The database path goes through [`Switch`], a TCP forwarder in front of the
//! stack's gateway that the test turns off (connections are dropped) or
//! mutes (requests reach PostgREST and commit, the answers are thrown away):
//! the real PostgREST and `ingest_signal` on the other side.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingest::db::{Database, RestPath};
use ingest::guard::Guard;
use ingest::metrics::Metrics;
use ingest::server::{App, Settings};
use ingest::spool_admission::{DatabaseSink, KnownTokens, SpoolAdmission};
use reqwest::StatusCode;
use serde_json::Value;
use service_runtime::SecretString;
use stack_harness::{Stack, Trader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use uuid::Uuid;
use webhook_spool::{Backoff, Replayer, Spool, SpoolConfig};

/// What the forwarder does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Forwards both ways.
    Up,
    /// Closes every connection at once: PostgREST unreachable.
    Down,
    /// Forwards requests, discards answers: the call commits, the edge never
    /// hears back.
    Mute,
}

/// A TCP forwarder to the stack's gateway that the test switches.
struct Switch {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    open: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Switch {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mode = Arc::new(Mutex::new(Mode::Up));
        let open: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (accept_mode, accept_open) = (Arc::clone(&mode), Arc::clone(&open));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = *accept_mode.lock().expect("mode");
                if mode == Mode::Down {
                    continue; // dropped: closed
                }
                let forward = tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    if mode == Mode::Up {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    } else {
                        let (mut client_read, _client_write) = client.split();
                        let (mut server_read, mut server_write) = server.split();
                        let mut discard = tokio::io::sink();
                        let _ = tokio::join!(
                            tokio::io::copy(&mut client_read, &mut server_write),
                            tokio::io::copy(&mut server_read, &mut discard),
                        );
                    }
                });
                accept_open.lock().expect("open").push(forward);
            }
        });
        Self { addr, mode, open }
    }

    /// Switches, cutting the connections opened in the old mode.
    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
        for forward in self.open.lock().expect("open").drain(..) {
            forward.abort();
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// An ingest with a spool, in this process.
struct TestApp {
    addr: SocketAddr,
    http: reqwest::Client,
    stack: Stack,
    switch: Switch,
    _spool_dir: tempfile::TempDir,
}

struct Limits {
    spool_bytes: u64,
    unverified_per_minute: u32,
    db_deadline: Duration,
    /// The replayer's retry delay after a failure.
    replay_backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            spool_bytes: 1 << 20,
            unverified_per_minute: 1000,
            db_deadline: Duration::from_secs(2),
            replay_backoff: Duration::from_millis(100),
        }
    }
}

fn gateway(stack: &Stack) -> SocketAddr {
    let url: url::Url = stack.supabase_url.parse().expect("SUPABASE_URL");
    url.socket_addrs(|| None).expect("gateway address")[0]
}

async fn spawn(limits: Limits) -> TestApp {
    let stack = Stack::from_env();
    let switch = Switch::start(gateway(&stack)).await;
    let spool_dir = tempfile::tempdir().expect("spool dir");
    let db = Arc::new(Database::rest(
        RestPath::new(
            &switch.url().parse().expect("url"),
            &SecretString::from(stack.service_role_key.clone()),
        ),
        limits.db_deadline,
    ));
    let (spool, _) = Spool::open(&SpoolConfig::new(spool_dir.path(), limits.spool_bytes))
        .expect("open the spool");
    let known = Arc::new(KnownTokens::default());
    let replayer = Replayer::new(
        spool.clone(),
        DatabaseSink::new(Arc::clone(&db), Arc::clone(&known)),
    )
    .with_backoff(Backoff {
        initial: limits.replay_backoff,
        max: limits.replay_backoff * 4,
    });
    let fallback = SpoolAdmission::new(
        spool,
        known,
        NonZeroU32::new(limits.unverified_per_minute).expect("non-zero"),
        replayer.counters(),
    );
    let app = App::new(
        db,
        Guard::new(None, vec!["127.0.0.1".parse().expect("net")], 1_000_000),
        Metrics::new(),
        Settings {
            max_body_bytes: 64 * 1024,
            read_timeout: Duration::from_secs(5),
            max_connections: 1024,
            grace: Duration::from_secs(1),
        },
    )
    .with_fallback(fallback);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(ingest::run(listener, Arc::new(app), std::future::pending()));
    tokio::spawn(async move { replayer.run(std::future::pending()).await });
    TestApp {
        addr,
        http: reqwest::Client::new(),
        stack,
        switch,
        _spool_dir: spool_dir,
    }
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
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn post(&self, trader: &Trader, body: String) -> (StatusCode, Value) {
        self.post_as(&trader.webhook_token, body, "198.51.100.7")
            .await
    }

    async fn post_as(&self, token: &str, body: String, client: &str) -> (StatusCode, Value) {
        post_from(&self.http, &self.base(), token, body, client).await
    }

    async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base()))
            .send()
            .await
            .expect("an answer");
        let status = response.status();
        (status, response.json().await.expect("JSON"))
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base()))
            .send()
            .await
            .expect("an answer")
            .text()
            .await
            .expect("text")
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

async fn deliveries(stack: &Stack, trader: &Trader) -> Vec<(String, Option<String>)> {
    stack
        .db()
        .await
        .query(
            "select outcome, reason from public.webhook_deliveries where user_id = $1 order by id",
            &[&trader.id],
        )
        .await
        .expect("deliveries")
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test]
async fn an_outage_is_spooled_and_replayed_in_order_with_the_original_times() {
    let app = spawn(Limits::default()).await;
    let trader = app.stack.trader("pro").await;
    let (status, body) = app.post(&trader, alert("a")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    app.switch.set(Mode::Down);
    let before_outage_ends = chrono::Utc::now();
    let (status, body) = app.post(&trader, alert("b")).await;
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
    let (status, body) = app.post(&trader, "hello there".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = app.post(&trader, alert("c")).await;
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
        metrics.contains(r#"ingest_requests_total{outcome="spooled",route="webhook"} 2"#),
        "{metrics}"
    );

    app.switch.set(Mode::Up);
    // Spooled behind b and c if they still wait, else stored at once: after
    // them either way.
    let (status, _) = app.post(&trader, alert("d")).await;
    assert!(
        matches!(status, StatusCode::ACCEPTED | StatusCode::OK),
        "{status}"
    );
    app.replayed().await;

    let stored = signals(&app.stack, &trader).await;
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
        deliveries(&app.stack, &trader)
            .await
            .contains(&("rejected".into(), Some("no_ticker".into()))),
        "the refused body is in the trader's delivery log"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"ingest_spool_replays_total{outcome="accepted"} 2"#)
            || metrics.contains(r#"ingest_spool_replays_total{outcome="accepted"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains("ingest_spool_entries 0"), "{metrics}");
    // Back to normal: stored at once.
    let (status, _) = app.post(&trader, alert("e")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_call_that_committed_but_lost_its_answer_is_replayed_as_a_duplicate() {
    let app = spawn(Limits {
        db_deadline: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let trader = app.stack.trader("pro").await;
    app.switch.set(Mode::Mute);
    let started = Instant::now();
    let (status, body) = app.post(&trader, alert("lost-answer")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    app.switch.set(Mode::Up);
    app.replayed().await;
    assert_eq!(signals(&app.stack, &trader).await.len(), 1, "stored once");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"ingest_spool_replays_total{outcome="duplicate"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_full_spool_answers_503_so_tradingview_retries() {
    let app = spawn(Limits {
        spool_bytes: 1500,
        ..Limits::default()
    })
    .await;
    let trader = app.stack.trader("pro").await;
    assert_eq!(app.post(&trader, alert("known")).await.0, StatusCode::OK);
    app.switch.set(Mode::Down);
    let mut answers = Vec::new();
    for n in 0..20 {
        answers.push(app.post(&trader, alert(&format!("n{n}"))).await);
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

    app.switch.set(Mode::Up);
    app.replayed().await;
    assert_eq!(signals(&app.stack, &trader).await.len(), 1 + spooled);
}

#[tokio::test]
async fn strangers_cannot_fill_the_spool_while_tokens_cannot_be_checked() {
    let app = spawn(Limits {
        spool_bytes: 4000,
        unverified_per_minute: 2,
        // The replay waits long enough after the outage for the last check.
        replay_backoff: Duration::from_secs(4),
        ..Limits::default()
    })
    .await;
    let known = app.stack.trader("pro").await;
    assert_eq!(app.post(&known, alert("known")).await.0, StatusCode::OK);
    app.switch.set(Mode::Down);

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
        let (status, _) = app.post(&known, alert(&format!("fill{n}"))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, _) = app.post_as(guessed, alert("g4"), "203.0.113.10").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a fresh address, but the spool is half full"
    );
    assert_eq!(app.post(&known, alert("k2")).await.0, StatusCode::ACCEPTED);
    assert!(
        app.metrics()
            .await
            .contains(r#"ingest_spool_refusals_total{reason="spool_limited"} 2"#),
        "each refusal counted once, also when the database then fails too"
    );

    // The database is back while the spool still waits for its replay: an
    // alert the spool refuses goes to the database instead of getting 503.
    app.switch.set(Mode::Up);
    let (status, body) = app.post_as(guessed, alert("g5"), stranger).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        app.get_json("/health").await.1["spool"]["replayed"]["accepted"],
        0,
        "still before the replay"
    );
    app.replayed().await;
    assert_eq!(signals(&app.stack, &known).await.len(), 1 + 1 + n + 1);
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

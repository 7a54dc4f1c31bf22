//! [`spawn_app`]: an ingest served from this process on `127.0.0.1:0`, wired
//! the way `main` wires it, and typed helpers to talk to it and to read what
//! it stored.
//!
//! The database path is the stack's real PostgREST (through its gateway) or
//! a direct pool to its Postgres, PostgREST behind a [`Switch`] the test
//! turns off and on, or a path the test built (a dead or hanging address).
//! Tests that never reach a database need no stack: the stack's settings
//! are read from the environment only when first used.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use cookie_seal::Keyring;
use ingest::auth::{JWKS_MIN_REFETCH, JWKS_TTL, Verifier, VerifierConfig};
use ingest::batcher::BatchSettings;
use ingest::db::{DEFAULT_MAX_BATCH_BYTES, Database, RestPath};
use ingest::guard::Guard;
use ingest::metrics::Metrics;
use ingest::server::{App, SessionEndpoint, Settings};
use ingest::spool_admission::{DatabaseSink, SpoolAdmission};
use ingest::tokens::TokenMemory;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use service_runtime::SecretString;
use service_runtime::http::Drain;
use service_runtime::postgres::{PoolSettings, pool};
use stack_harness::{Stack, Trader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use webhook_spool::{Backoff, Replayer, Spool, SpoolConfig};

use crate::switch::Switch;

/// Where the app's database calls go.
pub(crate) enum Upstream {
    /// PostgREST through the stack's gateway, with the service-role key.
    Rest,
    /// A direct pool to the stack's Postgres.
    Pool,
    /// PostgREST through a [`Switch`] (`TestApp::switch`).
    Switched,
    /// A database path the test built.
    Given(Database),
}

/// How to build the app; [`Options::on`] gives the defaults.
pub(crate) struct Options {
    pub(crate) upstream: Upstream,
    pub(crate) db_timeout: Duration,
    pub(crate) max_body_bytes: u32,
    pub(crate) read_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) grace: Duration,
    pub(crate) trusted_proxies: Vec<&'static str>,
    pub(crate) allowed: Option<Vec<&'static str>>,
    pub(crate) unknown_token_per_minute: u32,
    /// Database calls for unverified tokens in flight at once.
    pub(crate) unverified_in_flight: usize,
    pub(crate) keep_alive: Duration,
    pub(crate) batch: BatchSettings,
    /// On the PostgREST paths, the most bytes of one call's body.
    pub(crate) rest_max_batch_bytes: usize,
    /// With a spool: how long an alert may wait for its call.
    pub(crate) queue_budget: Duration,
    /// How long a repeated WARN/ERROR line is held back.
    pub(crate) log_repeat_window: Duration,
    /// Serve `/health*` and `/metrics` on a listener of their own
    /// (`TestApp::admin_addr`).
    pub(crate) admin_listener: bool,
    /// A spool in a fresh directory, with its replayer running.
    pub(crate) spool: Option<SpoolLimits>,
    /// The session endpoint, sealing with [`keyring`] and verifying the
    /// stack's HS256 tokens.
    pub(crate) session: Option<SessionOptions>,
}

impl Options {
    pub(crate) fn on(upstream: Upstream) -> Self {
        Self {
            upstream,
            db_timeout: Duration::from_secs(2),
            max_body_bytes: 64 * 1024,
            read_timeout: Duration::from_secs(5),
            max_connections: 1024,
            grace: Duration::from_secs(1),
            trusted_proxies: vec![],
            allowed: None,
            unknown_token_per_minute: 1_000_000,
            unverified_in_flight: 64,
            keep_alive: Duration::from_secs(5),
            batch: BatchSettings {
                max_batch: 32,
                concurrency: 8,
            },
            rest_max_batch_bytes: DEFAULT_MAX_BATCH_BYTES as usize,
            queue_budget: Duration::from_millis(100),
            log_repeat_window: ingest::log_throttle::DEFAULT_WINDOW,
            admin_listener: false,
            spool: None,
            session: None,
        }
    }
}

pub(crate) struct SpoolLimits {
    pub(crate) max_bytes: u64,
    pub(crate) unverified_per_minute: u32,
    /// The replayer's retry delay after a failure.
    pub(crate) replay_backoff: Duration,
    /// The spool's directory (and the known tokens' file); a fresh one when
    /// `None`. A given one outlives the app, so a second app can restart on
    /// it.
    pub(crate) dir: Option<std::path::PathBuf>,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            unverified_per_minute: 1000,
            replay_backoff: Duration::from_millis(100),
            dir: None,
        }
    }
}

#[derive(Default)]
pub(crate) struct SessionOptions {
    /// `DASHBOARD_ORIGIN`.
    pub(crate) cors_origin: Option<&'static str>,
}

/// A running ingest, a client for it, and the stack behind it.
pub(crate) struct TestApp {
    pub(crate) addr: SocketAddr,
    /// With `Options::admin_listener`.
    pub(crate) admin_addr: Option<SocketAddr>,
    /// What the app knows about tokens.
    pub(crate) tokens: Arc<TokenMemory>,
    /// Where the known tokens are saved at shutdown (the spool directory).
    tokens_dir: Option<std::path::PathBuf>,
    pub(crate) http: reqwest::Client,
    /// Set with [`Upstream::Switched`].
    pub(crate) switch: Option<Switch>,
    stack: OnceLock<Stack>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Drain>>,
    _spool_dir: Option<tempfile::TempDir>,
}

/// The keys the session endpoint seals with.
pub(crate) fn keyring() -> Keyring {
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    Keyring::parse(&SecretString::from(format!("it1:{key}"))).expect("a valid key")
}

/// PostgREST at `url` with the stack's service-role key.
pub(crate) fn rest_at(stack: &Stack, url: &str, deadline: Duration) -> Database {
    Database::rest(rest_path(stack, url), deadline)
}

fn rest_path(stack: &Stack, url: &str) -> RestPath {
    RestPath::new(
        &url.parse().expect("a URL"),
        &SecretString::from(stack.service_role_key.clone()),
    )
    .expect("a client")
}

/// A pool to `url`, built the way `main` builds it.
pub(crate) fn pool_at(url: &str, deadline: Duration) -> Database {
    let pool = pool(
        &url.parse().expect("a Postgres URL"),
        PoolSettings {
            max_size: 12,
            timeout: Some(deadline),
        },
    )
    .expect("a pool");
    Database::pool(pool, deadline)
}

/// The database path `upstream` names (and its switch), warmed for
/// `batch.concurrency` calls.
async fn database(
    upstream: Upstream,
    deadline: Duration,
    batch: BatchSettings,
    rest_max_batch_bytes: usize,
    stack: &OnceLock<Stack>,
) -> (Database, Option<Switch>) {
    let rest =
        |stack: &Stack, url: &str| rest_path(stack, url).with_max_batch_bytes(rest_max_batch_bytes);
    let (db, switch) = match upstream {
        Upstream::Rest => {
            let stack = stack.get_or_init(Stack::from_env);
            let db = Database::rest(rest(stack, &stack.supabase_url), deadline);
            (db, None)
        }
        Upstream::Pool => (
            pool_at(&stack.get_or_init(Stack::from_env).database_url, deadline),
            None,
        ),
        Upstream::Switched => {
            let stack = stack.get_or_init(Stack::from_env);
            let started = Switch::start(gateway(stack)).await;
            let db = Database::rest(rest(stack, &started.url()), deadline);
            (db, Some(started))
        }
        Upstream::Given(db) => (db, None),
    };
    // Warmed as `main` warms it (nothing to do for PostgREST).
    let _ = db.warm(batch.concurrency).await;
    (db, switch)
}

fn networks(nets: &[&str]) -> Vec<ingest::config::IpNet> {
    nets.iter().map(|n| n.parse().expect("a network")).collect()
}

/// The spool's directory: the one `limits` names, or a fresh one (kept
/// alive by the second value).
fn spool_directory(
    limits: Option<&SpoolLimits>,
) -> (Option<std::path::PathBuf>, Option<tempfile::TempDir>) {
    let Some(limits) = limits else {
        return (None, None);
    };
    if let Some(dir) = &limits.dir {
        return (Some(dir.clone()), None);
    }
    let fresh = tempfile::tempdir().expect("a spool directory");
    (Some(fresh.path().to_owned()), Some(fresh))
}

pub(crate) async fn spawn_app(options: Options) -> TestApp {
    let stack = OnceLock::new();
    let (db, switch) = database(
        options.upstream,
        options.db_timeout,
        options.batch,
        options.rest_max_batch_bytes,
        &stack,
    )
    .await;
    let db = Arc::new(db);
    let metrics = Metrics::new();
    let (dir, spool_dir) = spool_directory(options.spool.as_ref());
    // Loaded the way `main` loads them: from the spool's directory.
    let tokens = Arc::new(match &dir {
        Some(dir) => TokenMemory::load(dir).unwrap_or_default(),
        None => TokenMemory::default(),
    });
    let mut app = App::new(
        Arc::clone(&db),
        Guard::new(
            options.allowed.as_deref().map(networks),
            networks(&options.trusted_proxies),
            options.unknown_token_per_minute,
            options.unverified_in_flight,
        ),
        Arc::clone(&tokens),
        metrics.clone(),
        Settings {
            max_body_bytes: options.max_body_bytes,
            read_timeout: options.read_timeout,
            keep_alive: options.keep_alive,
            max_connections: options.max_connections,
            grace: options.grace,
            batch: options.batch,
            queue_budget: options.queue_budget,
            log_repeat_window: options.log_repeat_window,
        },
    );
    if let Some(session) = options.session {
        app = app.with_session(session_endpoint(
            stack.get_or_init(Stack::from_env),
            &session,
        ));
    }
    let (stop_replay, replay_stopped) = oneshot::channel::<()>();
    let mut replaying = None;
    if let (Some(limits), Some(dir)) = (&options.spool, &dir) {
        let (fallback, replayer) =
            spool(&db, dir, limits, &tokens, options.batch.max_batch, &metrics);
        app = app.with_fallback(fallback);
        replaying = Some(tokio::spawn(async move {
            replayer
                .run(async {
                    let _ = replay_stopped.await;
                })
                .await
                .expect("the spool works");
        }));
    }
    if options.admin_listener {
        app = app.with_admin_listener();
    }
    let app = Arc::new(app);

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let admin = if options.admin_listener {
        Some(spawn_admin(&app).await)
    } else {
        None
    };
    let admin_addr = admin.as_ref().map(|(addr, _)| *addr);
    let server = tokio::spawn(async move {
        let drain = ingest::run(listener, app, async {
            let _ = stopped.await;
        })
        .await;
        // As `main` stops: the admin listener and the replayer after the
        // drain.
        if let Some((_, stop_admin)) = admin {
            let _ = stop_admin.send(());
        }
        let _ = stop_replay.send(());
        if let Some(replaying) = replaying {
            let _ = replaying.await;
        }
        drain
    });
    TestApp {
        admin_addr,
        tokens_dir: options.spool.as_ref().and(dir.clone()),
        tokens,
        addr,
        http: reqwest::Client::new(),
        switch,
        stack,
        stop: Some(stop),
        server: Some(server),
        _spool_dir: spool_dir,
    }
}

/// The admin listener of `app`, and what stops it.
async fn spawn_admin(app: &Arc<App>) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin_addr = listener.local_addr().expect("local addr");
    let (stop_admin, admin_stopped) = oneshot::channel::<()>();
    tokio::spawn(ingest::server::run_admin(
        listener,
        Arc::clone(app),
        async {
            let _ = admin_stopped.await;
        },
    ));
    (admin_addr, stop_admin)
}

fn session_endpoint(stack: &Stack, options: &SessionOptions) -> SessionEndpoint {
    let verifier = Verifier::new(VerifierConfig {
        jwks_url: None,
        jwt_secret: Some(SecretString::from(stack.jwt_secret.clone())),
        audience: "authenticated".into(),
        issuer: format!("{}/auth/v1", stack.supabase_url),
        jwks_ttl: JWKS_TTL,
        jwks_min_refetch: JWKS_MIN_REFETCH,
    })
    .expect("a verifier");
    SessionEndpoint::new(
        verifier,
        Arc::new(keyring()),
        options
            .cors_origin
            .map(|origin| http::HeaderValue::from_str(origin).expect("an origin")),
    )
}

/// The spool and its replayer, wired as `main` wires them.
fn spool(
    db: &Arc<Database>,
    dir: &std::path::Path,
    limits: &SpoolLimits,
    tokens: &Arc<TokenMemory>,
    max_batch: usize,
    metrics: &Metrics,
) -> (SpoolAdmission, Replayer<DatabaseSink>) {
    let config = SpoolConfig {
        on_sync: Some(metrics.spool_sync_observer()),
        ..SpoolConfig::new(dir, limits.max_bytes)
    };
    let (spool, _) = Spool::open(&config).expect("open the spool");
    let replayer = Replayer::new(
        spool.clone(),
        DatabaseSink::new(Arc::clone(db), Arc::clone(tokens), max_batch),
    )
    .with_backoff(Backoff {
        initial: limits.replay_backoff,
        max: limits.replay_backoff * 4,
    });
    let fallback = SpoolAdmission::new(
        spool,
        NonZeroU32::new(limits.unverified_per_minute).expect("non-zero"),
        replayer.counters(),
    );
    (fallback, replayer)
}

/// The stack gateway's address (what [`Switch`] forwards to).
pub(crate) fn gateway(stack: &Stack) -> SocketAddr {
    let url: url::Url = stack.supabase_url.parse().expect("SUPABASE_URL");
    url.socket_addrs(|| None).expect("gateway address")[0]
}

impl TestApp {
    pub(crate) fn stack(&self) -> &Stack {
        self.stack.get_or_init(Stack::from_env)
    }

    /// The switch in front of PostgREST ([`Upstream::Switched`]).
    pub(crate) fn switch(&self) -> &Switch {
        self.switch
            .as_ref()
            .expect("spawned with Upstream::Switched")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Triggers shutdown and returns how the drain ended, failing the test
    /// if the server does not return within `limit`.
    pub(crate) async fn shut_down(mut self, limit: Duration) -> Drain {
        self.stop
            .take()
            .expect("not stopped yet")
            .send(())
            .expect("server still running");
        let server = self.server.take().expect("not stopped yet");
        let drain = tokio::time::timeout(limit, server)
            .await
            .expect("server returned within the limit")
            .expect("server task did not panic");
        // As `main` does when it stops.
        if let Some(dir) = &self.tokens_dir {
            self.tokens.save(dir).expect("the known tokens saved");
        }
        drain
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, HeaderMap, Value) {
        self.post_with(path, body, &[]).await
    }

    pub(crate) async fn post_with(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = self.http.post(self.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.json().await.expect("JSON answer");
        (status, headers, body)
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("response");
        (response.status(), response.text().await.expect("body"))
    }

    pub(crate) async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let (status, body) = self.get(path).await;
        (status, serde_json::from_str(&body).expect("JSON"))
    }

    pub(crate) async fn metrics(&self) -> String {
        self.get("/metrics").await.1
    }

    pub(crate) async fn trader(&self, plan: &str) -> Trader {
        self.stack().trader(plan).await
    }

    /// `sql`'s `count(*)`, with `$1` the given id.
    pub(crate) async fn count(&self, sql: &str, id: uuid::Uuid) -> i64 {
        self.stack()
            .db()
            .await
            .query_one(sql, &[&id])
            .await
            .expect("count")
            .get(0)
    }

    pub(crate) async fn signals_of(&self, trader: &Trader) -> i64 {
        self.count(
            "select count(*) from public.signals where user_id = $1",
            trader.id,
        )
        .await
    }

    /// The trader's delivery log, oldest first: (outcome, reason, status).
    pub(crate) async fn deliveries(&self, trader: &Trader) -> Vec<(String, Option<String>, i16)> {
        self.stack()
            .db()
            .await
            .query(
                "select outcome, reason, http_status from public.webhook_deliveries \
                  where user_id = $1 order by id",
                &[&trader.id],
            )
            .await
            .expect("deliveries")
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
}

/// An error answer: the status, the envelope, the code, and a message.
pub(crate) fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

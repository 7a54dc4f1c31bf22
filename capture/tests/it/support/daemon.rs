//! The two ways tests run the daemon: its parts in process
//! ([`worker`], then [`drain`]), so a test reaches into the worker, its
//! Chromium and its metrics; or the `capture` binary as operators run it
//! ([`spawn_daemon`]), for signals, `kill -9` and subcommands.

use std::fs::File;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use capture::daemon::{self, Stopped, Upkeep};
use capture::metrics::Metrics;
use capture::page::PageRules;
use capture::queue::Queue;
use capture::render::{Chrome, RenderSettings};
use capture::storage::Storage;
use capture::telegram::Telegram;
use capture::telegram_link::PollSettings;
use capture::worker::{Mode, Settings, Worker};
use stack_harness::TestDb;
use tokio::net::TcpListener;
use uuid::Uuid;

use super::{ChartServer, keyring, seal_keys_spec};

/// How a test's in-process worker differs from the default.
#[derive(Debug)]
pub(crate) struct Knobs {
    pub(crate) concurrency: u16,
    pub(crate) job_timeout: Duration,
    pub(crate) storage: Storage,
    /// Appended to the chart URL template (`&never=1`: the page never gets
    /// ready).
    pub(crate) chart_query: &'static str,
    pub(crate) telegram: Option<Arc<Telegram>>,
    /// How the chart page is read (the daemon's defaults unless a test
    /// says otherwise).
    pub(crate) page: PageRules,
    /// How the bot's chat linking polls (serve mode with a bot only).
    pub(crate) telegram_poll: PollSettings,
}

impl Knobs {
    /// Three slots, a 10 s job timeout, no Telegram.
    pub(crate) fn new(storage: Storage) -> Self {
        Self {
            concurrency: 3,
            job_timeout: Duration::from_secs(10),
            storage,
            chart_query: "",
            telegram: None,
            page: PageRules::default(),
            telegram_poll: PollSettings::default(),
        }
    }
}

/// Chromium settings with the daemon's defaults for the page (the chart
/// server's page is shaped like TradingView's); `allow` is the
/// `CAPTURE_EGRESS_ALLOW` entry of the loopback server Chromium may reach
/// ([`ChartServer::egress_entry`]). As `CAPTURE_CHROMIUM_USER` when the
/// tests run as root.
pub(crate) fn render_settings(job_timeout: Duration, allow: &str) -> RenderSettings {
    render_settings_with(job_timeout, allow, PageRules::default())
}

/// Chromium settings that read the page with `page`.
pub(crate) fn render_settings_with(
    job_timeout: Duration,
    allow: &str,
    page: PageRules,
) -> RenderSettings {
    RenderSettings {
        chromium: std::env::var("CHROMIUM_PATH")
            .unwrap_or_else(|_| "/usr/bin/chromium".into())
            .into(),
        recycle_after: 100,
        prewarm: 1,
        page,
        extra_cookies: vec![(
            "cookiePrivacyPreferenceBannerProduction".into(),
            "accepted".into(),
        )],
        page_timeout: job_timeout.mul_f64(0.8),
        chromium_user: chromium_user(),
        egress_allow: allow.parse().unwrap(),
    }
}

/// How the daemon reaches `test_db` (its URL carries the stack's TLS
/// settings).
pub(crate) fn database(test_db: &TestDb) -> service_runtime::postgres::ConnectConfig {
    service_runtime::postgres::ConnectConfig::from_url(&test_db.url).expect("the test database URL")
}

/// `CAPTURE_CHROMIUM_USER` from the test's environment (the stack's
/// `stack.env` sets it when the stack runs as root).
pub(crate) fn chromium_user() -> Option<String> {
    std::env::var("CAPTURE_CHROMIUM_USER")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A worker over `test_db`, rendering `charts`' pages in its own Chromium.
pub(crate) fn worker(test_db: &TestDb, charts: &ChartServer, knobs: Knobs) -> Arc<Worker> {
    let pool = service_runtime::postgres::pool_from(
        &database(test_db),
        service_runtime::postgres::PoolSettings {
            max_size: 8,
            timeout: None,
        },
    )
    .unwrap();
    let chrome = Chrome::new(render_settings_with(
        knobs.job_timeout,
        &charts.egress_entry(),
        knobs.page,
    ))
    .expect("the Chromium launcher");
    let metrics = Metrics::new();
    metrics.register(chrome.egress_refusals());
    Arc::new(Worker {
        queue: Queue::new(pool),
        chrome,
        storage: knobs.storage,
        keys: Some(Arc::new(keyring())),
        metrics,
        settings: Settings {
            worker_id: format!("test-{}", Uuid::new_v4().simple()),
            concurrency: knobs.concurrency,
            lease: knobs.job_timeout + Duration::from_secs(10),
            job_timeout: knobs.job_timeout,
            poll_interval: Duration::from_millis(500),
            chart_url_template: format!(
                "{}/chart/{{chart_id}}/?symbol={{symbol}}&interval={{interval}}{}",
                charts.base, knobs.chart_query
            ),
            telegram_poll: knobs.telegram_poll,
        },
        telegram: knobs.telegram,
    })
}

/// Runs `worker` in drain mode until the queue is empty (at most 90 s).
pub(crate) async fn drain(test_db: &TestDb, worker: Arc<Worker>) {
    drain_with(test_db, worker, Upkeep::default()).await;
}

/// [`drain`] with the daemon's periodic work besides the queue.
pub(crate) async fn drain_with(test_db: &TestDb, worker: Arc<Worker>, upkeep: Upkeep) {
    let health = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(90),
        daemon::run(
            health,
            worker,
            database(test_db),
            upkeep,
            Mode::Drain,
            std::future::pending(),
            Duration::from_secs(5),
        ),
    )
    .await
    .expect("drain mode finished within 90 s");
    assert_eq!(outcome.stopped, Stopped::Drained);
}

/// A worker running in serve mode in process, until [`Serving::stop`].
pub(crate) struct Serving {
    stop: tokio::sync::oneshot::Sender<()>,
    run: tokio::task::JoinHandle<daemon::Outcome>,
}

/// Runs `worker` in serve mode (as the daemon runs without `--drain`).
pub(crate) async fn serve(test_db: &TestDb, worker: Arc<Worker>) -> Serving {
    let health = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(daemon::run(
        health,
        worker,
        database(test_db),
        Upkeep::default(),
        Mode::Serve,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));
    Serving { stop, run }
}

impl Serving {
    /// Stops it as SIGTERM would, and waits (at most 30 s) until it is done.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let outcome = tokio::time::timeout(Duration::from_secs(30), self.run)
            .await
            .expect("stopped within 30 s")
            .expect("the daemon did not panic");
        assert_eq!(outcome.stopped, Stopped::Shutdown);
    }
}

/// How a test's `capture` process differs from the default.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Spawn<'a> {
    /// Whose pages it renders; without one, the default chart URL (for
    /// subcommands that render nothing).
    pub(crate) charts: Option<&'a ChartServer>,
    /// Environment variables set after the defaults (so they override them).
    pub(crate) env: &'a [(&'a str, &'a str)],
    pub(crate) args: &'a [&'a str],
    /// Where its log (stderr) goes; the test's own stderr without one.
    pub(crate) log: Option<&'a Path>,
    /// Whether the test writes its stdin ([`Daemon::stdin`]).
    pub(crate) stdin: bool,
}

/// A running `capture` process; killed when dropped, also when the test
/// fails half-way (else it would outlive the test, with its Chromium).
#[derive(Debug)]
pub(crate) struct Daemon {
    child: Child,
    /// Where its `/health` and `/metrics` answer.
    pub(crate) health_port: u16,
}

/// Starts the `capture` binary against `test_db`, storing screenshots under
/// `screenshots`, with only the environment given here (and
/// `CAPTURE_CHROMIUM_USER` when the tests have one).
pub(crate) fn spawn_daemon(test_db: &TestDb, screenshots: &Path, spawn: Spawn<'_>) -> Daemon {
    let health_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_capture"));
    command
        .args(spawn.args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &test_db.url)
        .env("STORAGE", format!("fs:{}", screenshots.display()))
        .env("COOKIE_SEAL_KEYS", seal_keys_spec())
        // Nothing beyond 127.0.0.1: the session checks go to a closed port.
        .env("CAPTURE_TRADINGVIEW_URL", "http://127.0.0.1:9/")
        .env("CAPTURE_HEALTH_LISTEN", format!("127.0.0.1:{health_port}"))
        .env("CAPTURE_POLL_INTERVAL", "500ms")
        .env("RUST_LOG", "capture=debug,info")
        .stdin(if spawn.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null());
    if let Some(user) = chromium_user() {
        command.env("CAPTURE_CHROMIUM_USER", user);
    }
    if let Some(charts) = spawn.charts {
        command
            .env(
                "CAPTURE_CHART_URL_TEMPLATE",
                format!("{}/chart/{{chart_id}}/?symbol={{symbol}}", charts.base),
            )
            .env("CAPTURE_EGRESS_ALLOW", charts.egress_entry());
    }
    for (name, value) in spawn.env {
        command.env(name, value);
    }
    match spawn.log {
        Some(log) => command.stderr(File::create(log).unwrap()),
        None => command.stderr(Stdio::inherit()),
    };
    Daemon {
        child: command.spawn().expect("the capture binary starts"),
        health_port,
    }
}

impl Daemon {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`-TERM`, say) with `kill`.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGKILL, and waits for the process to be gone.
    pub(crate) fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Its stdin, once (spawned with [`Spawn::stdin`]).
    pub(crate) fn stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("spawned with stdin")
    }

    /// Waits for it to exit, off the runtime's threads (the test's stub
    /// servers keep serving meanwhile).
    pub(crate) async fn exit_status(mut self) -> ExitStatus {
        tokio::task::spawn_blocking(move || self.child.wait().unwrap())
            .await
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().is_ok_and(|status| status.is_none()) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

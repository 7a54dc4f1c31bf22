//! `capture` (no subcommand): the daemon. Builds the worker and its
//! Chromium, starts Chromium before the first job so its launch is not on
//! any job's clock, and runs [`crate::daemon::run`] until SIGINT/SIGTERM
//! or, with `--drain`, until there is no work left.

use std::sync::Arc;

use anyhow::Context as _;
use cookie_seal::Keyring;
use deadpool_postgres::Pool;
use service_runtime::postgres::ConnectConfig;
use service_runtime::shutdown;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::daemon::{self, Upkeep};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::render::{Chrome, RenderSettings};
use crate::worker::{Mode, Settings, Worker};

/// Runs the daemon until it is told to stop (or has drained the queue).
pub async fn run(
    config: &Config,
    database: ConnectConfig,
    pool: Pool,
    keys: Option<Arc<Keyring>>,
) -> anyhow::Result<()> {
    let stop = shutdown::signal().context("Failed to install signal handlers")?;
    let (worker, chrome) = build_worker(config, Queue::new(pool.clone()), keys.clone())?;
    let upkeep = Upkeep {
        sessions: Some(super::session_checks(
            config,
            pool,
            keys.clone(),
            worker.telegram.clone(),
            worker.metrics.clone(),
        )?),
        check_sessions: config.session_checks.check_interval.0.is_some() && keys.is_some(),
    };
    let health = TcpListener::bind(config.health_listen)
        .await
        .with_context(|| format!("Failed to listen on {}", config.health_listen))?;
    let health_addr = health
        .local_addr()
        .context("Failed to read the health listening address")?;
    {
        let chrome = Arc::clone(&chrome);
        tokio::task::spawn_blocking(move || chrome.warm_up())
            .await
            .context("Chromium start-up panicked")?
            .context("Failed to start Chromium")?;
    }
    tracing::info!(
        %health_addr,
        worker_id = %worker.settings.worker_id,
        database = config.database_url.redacted(),
        sslmode = %database.ssl_mode(),
        certificate_check = %database.verification(),
        concurrency = config.concurrency,
        drain = config.drain,
        chromium_pid = chrome.pid(),
        "Capture daemon started"
    );
    let mode = if config.drain {
        Mode::Drain
    } else {
        Mode::Serve
    };
    let shutdown = async {
        let signal = stop.await;
        tracing::info!(signal = signal.name(), "Shutting down");
    };
    let outcome = daemon::run(
        health,
        worker,
        database,
        upkeep,
        mode,
        shutdown,
        config.shutdown_grace,
    )
    .await;
    // Chromium and its profile go now: a capture given up on at shutdown
    // may still hold them, and the process is about to exit.
    tokio::task::spawn_blocking(move || chrome.stop())
        .await
        .context("Stopping Chromium panicked")?;
    tracing::info!(stopped = ?outcome.stopped, health_drain = ?outcome.health, "Capture daemon stopped");
    Ok(())
}

/// The queue loop with everything it works with.
fn build_worker(
    config: &Config,
    queue: Queue,
    keys: Option<Arc<Keyring>>,
) -> anyhow::Result<(Arc<Worker>, Arc<Chrome>)> {
    let storage = super::storage(config)?;
    let chrome = Chrome::new(RenderSettings {
        chromium: config.chromium.clone(),
        recycle_after: config.browser_recycle_after,
        prewarm: usize::from(config.prewarm),
        page: config.page.clone(),
        extra_cookies: config.extra_cookies.0.clone(),
        // Leave room for the upload within the job timeout.
        page_timeout: config.job_timeout.mul_f64(0.8),
        chromium_user: config.chromium_user.clone(),
        egress_allow: config.egress_allow.clone(),
    })
    .context("Failed to start the Chromium launcher")?;
    let metrics = Metrics::new();
    metrics.register(chrome.egress_refusals());
    let worker = Arc::new(Worker {
        queue,
        chrome: Arc::clone(&chrome),
        storage,
        keys,
        metrics,
        settings: Settings {
            worker_id: worker_id(config),
            concurrency: config.concurrency,
            lease: config.lease,
            job_timeout: config.job_timeout,
            poll_interval: config.poll_interval,
            chart_url_template: config.chart_url_template.clone(),
            telegram_poll: crate::telegram_link::PollSettings::default(),
        },
        telegram: super::telegram(config),
    });
    Ok((worker, chrome))
}

/// `CAPTURE_WORKER_ID`, else the host name and process id: unique among
/// daemons sharing a database, and readable in `locked_by`.
fn worker_id(config: &Config) -> String {
    config.worker_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

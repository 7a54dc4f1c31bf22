//! `capture` (no subcommand): the daemon. Builds the worker and its
//! Chromium, starts Chromium before the first job so its launch is not on
//! any job's clock, and runs [`crate::daemon::run`] until SIGINT/SIGTERM
//! or, with `--drain`, until there is no work left.

use std::sync::Arc;

use anyhow::Context as _;
use cookie_seal::Keyring;
use deadpool_postgres::Pool;
use service_runtime::shutdown;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::daemon;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::render::{Chrome, RenderSettings};
use crate::telegram::{RetryPolicy, Telegram};
use crate::worker::{Mode, Settings, Worker};

/// Runs the daemon until it is told to stop (or has drained the queue).
pub async fn run(config: &Config, pool: Pool, keys: Option<Arc<Keyring>>) -> anyhow::Result<()> {
    let stop = shutdown::signal().context("Failed to install signal handlers")?;
    let (worker, chrome) = build_worker(config, Queue::new(pool), keys)?;
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
        config.database_url.expose().to_owned(),
        mode,
        shutdown,
        config.shutdown_grace,
    )
    .await;
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
        ready_check: config.ready_check.clone(),
        login_check: config.login_check.clone(),
        hide_css: config.hide_css.clone(),
        extra_cookies: config.extra_cookies.0.clone(),
        // Leave room for the upload within the job timeout.
        page_timeout: config.job_timeout.mul_f64(0.8),
    })
    .context("Failed to start the Chromium launcher")?;
    let worker = Arc::new(Worker {
        queue,
        chrome: Arc::clone(&chrome),
        storage,
        keys,
        metrics: Metrics::new(),
        settings: Settings {
            worker_id: worker_id(config),
            concurrency: config.concurrency,
            lease: config.lease,
            job_timeout: config.job_timeout,
            poll_interval: config.poll_interval,
            chart_url_template: config.chart_url_template.clone(),
            telegram_poll: crate::telegram_link::PollSettings::default(),
        },
        telegram: config.telegram_bot_token.clone().map(|token| {
            Arc::new(Telegram::new(
                config.telegram_api_url.clone(),
                token,
                RetryPolicy::default(),
            ))
        }),
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

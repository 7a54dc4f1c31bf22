//! `capture`: parse the config, start logging, build the parts, run until
//! SIGINT/SIGTERM (or, with `--drain`, until there is no work left).
//! `capture reseal-cookies` re-seals stored sessions under the current key.

use std::sync::Arc;

use anyhow::Context as _;
use capture::config::{Command, Config};
use capture::daemon;
use capture::metrics::Metrics;
use capture::prune;
use capture::queue::Queue;
use capture::render::{Chrome, RenderSettings};
use capture::storage::{Storage, StorageKind};
use capture::telegram::{RetryPolicy, Telegram};
use capture::worker::{Mode, Settings, Worker};
use cookie_seal::Keyring;
use service_runtime::postgres::{self, PoolSettings};
use service_runtime::{cli, shutdown, telemetry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The log filter default for `headless_chrome` (see `.env.example`).
const QUIET_HEADLESS_CHROME: &str = "headless_chrome=error";

fn pool(config: &Config) -> anyhow::Result<deadpool_postgres::Pool> {
    postgres::pool(
        &config.database_url,
        PoolSettings {
            // Claims, completions and heartbeats of `concurrency` jobs, plus /health.
            max_size: usize::from(config.concurrency) + 2,
            timeout: None,
        },
    )
    .context("Failed to build the database pool")
}

/// The queue loop with everything it works with.
fn build_worker(
    config: &Config,
    queue: Queue,
    keys: Option<Arc<Keyring>>,
) -> anyhow::Result<(Arc<Worker>, Arc<Chrome>)> {
    let storage = storage(config)?;
    let worker_id = config.worker_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
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
            worker_id,
            concurrency: config.concurrency,
            lease: config.lease,
            job_timeout: config.job_timeout,
            poll_interval: config.poll_interval,
            chart_url_template: config.chart_url_template.clone(),
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = cli::parse();
    // headless_chrome attaches to every tab Chromium opens (ours included)
    // and logs at info and warn as it does: only its errors, unless RUST_LOG
    // names it.
    telemetry::init_with_defaults(config.logging.format, &[QUIET_HEADLESS_CHROME])
        .context("Failed to initialise logging")?;
    config
        .validate()
        .map_err(anyhow::Error::msg)
        .context("Invalid configuration")?;
    let keys = config.seal.keyring().cloned();
    let queue = Queue::new(pool(&config)?);

    if let Some(Command::SetSession { user_id }) = config.command {
        let keys = keys.context("set-session needs COOKIE_SEAL_KEYS")?;
        let mut lines = std::io::stdin().lines();
        let mut next = |what: &str| {
            lines
                .next()
                .transpose()
                .context("Failed to read stdin")?
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .with_context(|| format!("expected {what} on stdin"))
        };
        let session = cookie_seal::TradingViewSession {
            sessionid: next("the sessionid line")?,
            sessionid_sign: next("the sessionid_sign line")?,
        };
        let stored = capture::reseal::store_session(&queue, &keys, user_id, &session)
            .await
            .context("Failed to store the session")?;
        anyhow::ensure!(stored, "no user_config row for {user_id}");
        tracing::info!(%user_id, key_id = keys.current_key_id(), "Stored the sealed TradingView session");
        return Ok(());
    }
    if let Some(Command::Prune { batch_size }) = config.command {
        return prune_command(&config, &queue, batch_size).await;
    }
    if let Some(Command::ResealCookies) = config.command {
        let keys = keys.context("reseal-cookies needs COOKIE_SEAL_KEYS")?;
        let report = capture::reseal::reseal_all(&queue, &keys)
            .await
            .context("Failed to re-seal the stored sessions")?;
        tracing::info!(
            key_id = keys.current_key_id(),
            resealed = report.resealed,
            already_current = report.current,
            unreadable = report.unreadable,
            "Re-sealed stored TradingView sessions"
        );
        return Ok(());
    }

    let stop = shutdown::signal().context("Failed to install signal handlers")?;
    let (worker, chrome) = build_worker(&config, queue, keys)?;

    let health = TcpListener::bind(config.health_listen)
        .await
        .with_context(|| format!("Failed to listen on {}", config.health_listen))?;
    let health_addr = health
        .local_addr()
        .context("Failed to read the health listening address")?;
    // Start Chromium before the first job so its launch is not on the clock.
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

/// `capture prune`: until nothing is due, or SIGINT/SIGTERM between batches.
async fn prune_command(config: &Config, queue: &Queue, batch_size: u16) -> anyhow::Result<()> {
    let client = queue
        .client()
        .await
        .context("Failed to connect to Postgres")?;
    let cancel = CancellationToken::new();
    let stop = shutdown::signal().context("Failed to install signal handlers")?;
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        stop.await;
        on_signal.cancel();
    });
    let storage = storage(config)?;
    let report = prune::run(&client, &storage, batch_size, &cancel)
        .await
        .context("Failed to prune screenshots")?;
    tracing::info!(
        deleted = report.deleted,
        forgotten = report.forgotten,
        batches = report.batches,
        cancelled = report.cancelled,
        "Pruned screenshots past their plan's retention"
    );
    Ok(())
}

/// The configured screenshot storage.
fn storage(config: &Config) -> anyhow::Result<Storage> {
    Ok(match &config.storage {
        StorageKind::Fs(dir) => Storage::Fs { dir: dir.clone() },
        StorageKind::Supabase => Storage::supabase(
            config
                .supabase
                .url
                .clone()
                .context("SUPABASE_URL is required")?,
            config.bucket.clone(),
            config
                .storage_key()
                .context("SUPABASE_SECRET_KEY is required")?,
            config.bucket_public,
        )
        .context("Failed to build the Storage client")?,
    })
}

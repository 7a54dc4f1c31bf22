//! `capture`: parse the config, start logging, run until SIGINT/SIGTERM
//! (or, with `--drain`, until there is no work left).

use anyhow::Context as _;
use capture::Config;
use capture::daemon::{self, Mode};
use service_runtime::{cli, shutdown, telemetry};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = cli::parse();
    telemetry::init(config.log_format).context("Failed to initialise logging")?;
    let stop = shutdown::signal().context("Failed to install signal handlers")?;

    let health = TcpListener::bind(config.health_listen)
        .await
        .with_context(|| format!("Failed to listen on {}", config.health_listen))?;
    let health_addr = health
        .local_addr()
        .context("Failed to read the health listening address")?;
    tracing::info!(
        %health_addr,
        database = config.database_url.redacted(),
        concurrency = config.concurrency,
        drain = config.drain,
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
    let outcome = daemon::run(health, mode, shutdown, config.shutdown_grace).await;
    tracing::info!(stopped = ?outcome.stopped, health_drain = ?outcome.health, "Capture daemon stopped");
    Ok(())
}

//! `ingest`: parse the config, start logging, serve until SIGINT/SIGTERM.

use anyhow::Context as _;
use ingest::Config;
use service_runtime::http::Drain;
use service_runtime::{cli, shutdown, telemetry};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = cli::parse();
    telemetry::init(config.log_format).context("Failed to initialise logging")?;
    let stop = shutdown::signal().context("Failed to install signal handlers")?;

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("Failed to listen on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("Failed to read the listening address")?;
    tracing::info!(%addr, grace = ?config.shutdown_grace, "Ingest listening");

    let shutdown = async {
        let signal = stop.await;
        tracing::info!(signal = signal.name(), "Shutting down; draining requests");
    };
    match ingest::run(listener, shutdown, config.shutdown_grace).await {
        Drain::Complete => tracing::info!("Drained; exiting"),
        Drain::DeadlineExceeded => {
            tracing::warn!(grace = ?config.shutdown_grace, "Grace period over; dropping open connections");
        }
    }
    Ok(())
}

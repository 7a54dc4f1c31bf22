//! `capture prune`: deletes screenshots past their owner's plan retention,
//! until nothing is due, or SIGINT/SIGTERM between batches (see
//! [`crate::prune`]).

use anyhow::Context as _;
use deadpool_postgres::Pool;
use service_runtime::shutdown;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Prunes in batches of `batch_size` and logs what it did.
pub async fn run(config: &Config, pool: &Pool, batch_size: u16) -> anyhow::Result<()> {
    let db = pool.get().await.context("Failed to connect to Postgres")?;
    let cancel = CancellationToken::new();
    let stop = shutdown::signal().context("Failed to install signal handlers")?;
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        stop.await;
        on_signal.cancel();
    });
    let storage = super::storage(config)?;
    let report = crate::prune::run(&db, &storage, batch_size, &cancel)
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

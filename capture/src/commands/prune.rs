//! `capture prune`: deletes screenshots past their owner's plan retention
//! (see [`crate::prune`]) and the screenshots of deleted signals still
//! queued (see [`crate::deletions`]), until nothing is due, or SIGINT/SIGTERM
//! between batches.

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
    let removed = crate::deletions::remove_due(&db, &storage, batch_size, None, &cancel)
        .await
        .context("Failed to remove the screenshots of deleted signals")?;
    tracing::info!(
        deleted = removed.deleted,
        failed = removed.failed,
        "Removed the screenshots of deleted signals"
    );
    if removed.failed > 0 {
        anyhow::bail!(
            "{} screenshots of deleted signals could not be deleted; they stay queued and are retried",
            removed.failed
        );
    }
    Ok(())
}

//! `capture check-sessions`: checks every stored TradingView session that is
//! due (not checked within `CAPTURE_SESSION_CHECK_INTERVAL`) now, over HTTP
//! and without a browser, until none is left or SIGINT/SIGTERM (see
//! [`crate::session_check`]). It claims through the same schedule as the
//! daemon's periodic check, so the two never check a session twice within
//! an interval.

use anyhow::Context as _;
use cookie_seal::Keyring;
use deadpool_postgres::Pool;
use service_runtime::shutdown;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;

/// Checks the due sessions and logs what it found.
pub async fn run(config: &Config, pool: Pool, keys: Option<Arc<Keyring>>) -> anyhow::Result<()> {
    let keys = keys.context("check-sessions needs COOKIE_SEAL_KEYS to open the stored sessions")?;
    let cancel = CancellationToken::new();
    let stop = shutdown::signal().context("Failed to install signal handlers")?;
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        stop.await;
        on_signal.cancel();
    });
    let checks = super::session_checks(
        config,
        pool,
        Some(keys),
        super::telegram(config),
        Metrics::new(),
    )?;
    let report = checks
        .check_due(&cancel)
        .await
        .context("Failed to check the stored TradingView sessions")?;
    tracing::info!(
        checked = report.checked,
        valid = report.valid,
        expired = report.expired,
        unknown = report.unknown,
        stale = report.stale,
        cancelled = cancel.is_cancelled(),
        "Checked the TradingView sessions that were due"
    );
    Ok(())
}

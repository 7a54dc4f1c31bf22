//! `capture reseal-cookies`: re-seals every stored TradingView session
//! under the first key of `COOKIE_SEAL_KEYS` (the last step of a key
//! rotation; see [`crate::session`]).

use anyhow::Context as _;
use cookie_seal::Keyring;
use deadpool_postgres::Pool;

use crate::session;

/// Re-seals every stored session and logs what it did.
pub async fn run(pool: &Pool, keys: Option<&Keyring>) -> anyhow::Result<()> {
    let keys = keys.context("reseal-cookies needs COOKIE_SEAL_KEYS")?;
    let db = pool.get().await.context("Failed to connect to Postgres")?;
    let report = session::reseal_all(&db, keys)
        .await
        .context("Failed to re-seal the stored sessions")?;
    tracing::info!(
        key_id = keys.current_key_id(),
        resealed = report.resealed,
        already_current = report.current,
        unreadable = report.unreadable,
        "Re-sealed stored TradingView sessions"
    );
    Ok(())
}

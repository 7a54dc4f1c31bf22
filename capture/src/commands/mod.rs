//! What each `capture` subcommand does, one module each; `main` picks one
//! with a single `match` and only wires.
//!
//! - [`serve`]: the daemon (no subcommand), until SIGINT/SIGTERM or, with
//!   `--drain`, until there is no work left.
//! - [`set_session`]: stores a trader's session read from stdin.
//! - [`reseal_cookies`]: moves every stored session to the current key.
//! - [`check_sessions`]: checks the stored TradingView sessions that are
//!   due, now.
//! - [`prune`]: deletes screenshots past their plan's retention and those
//!   of deleted signals.
//!
//! They are jobs, not library code: each returns `anyhow` errors with the
//! context an operator needs, and the parts they share are built here from
//! the [`Config`], once.

pub mod check_sessions;
pub mod prune;
pub mod reseal_cookies;
pub mod serve;
pub mod set_session;

use std::sync::Arc;

use anyhow::Context as _;
use cookie_seal::Keyring;

use service_runtime::postgres::{self, ConnectConfig, PoolSettings};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::session_check::{self, SessionChecker, SessionChecks};
use crate::storage::{Storage, StorageKind};
use crate::telegram::{RetryPolicy, Telegram};

/// How to reach the database: `DATABASE_URL` with its TLS settings, read
/// once for the pool and the daemon's LISTEN session.
pub fn database(config: &Config) -> anyhow::Result<ConnectConfig> {
    postgres::connect_config(&config.database_url).context("DATABASE_URL cannot be used")
}

/// The database pool every subcommand works over.
pub fn pool(config: &Config, database: &ConnectConfig) -> anyhow::Result<deadpool_postgres::Pool> {
    postgres::pool_from(
        database,
        PoolSettings {
            // Claims, completions and heartbeats of `concurrency` jobs, plus /health.
            max_size: usize::from(config.concurrency) + 2,
            timeout: None,
        },
    )
    .context("Failed to build the database pool")
}

/// The keys from `COOKIE_SEAL_KEYS`, when configured (clap has parsed them).
pub fn seal_keys(config: &Config) -> Option<Arc<Keyring>> {
    config.seal.keyring().cloned()
}

/// The configured screenshot storage.
pub fn storage(config: &Config) -> anyhow::Result<Storage> {
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

/// The Telegram client, when `TELEGRAM_BOT_TOKEN` is set.
pub fn telegram(config: &Config) -> Option<Arc<Telegram>> {
    config.telegram_bot_token.clone().map(|token| {
        Arc::new(Telegram::new(
            config.telegram_api_url.clone(),
            token,
            RetryPolicy::default(),
        ))
    })
}

/// The TradingView session checks as configured (`check-sessions` uses
/// [`session_check::DEFAULT_INTERVAL`] when the daemon's interval is `off`).
pub fn session_checks(
    config: &Config,
    pool: deadpool_postgres::Pool,
    keys: Option<Arc<Keyring>>,
    telegram: Option<Arc<Telegram>>,
    metrics: Metrics,
) -> anyhow::Result<Arc<SessionChecks>> {
    let settings = &config.session_checks;
    let client = SessionChecker::client_builder()
        .build()
        .context("Failed to build the session check's HTTP client")?;
    Ok(Arc::new(SessionChecks {
        pool,
        keys,
        checker: SessionChecker::new(
            settings.tradingview_url.clone(),
            settings.signed_in_marker.clone(),
            client,
        ),
        telegram,
        interval: settings
            .check_interval
            .0
            .unwrap_or(session_check::DEFAULT_INTERVAL),
        concurrency: usize::from(settings.check_concurrency),
        metrics,
    }))
}

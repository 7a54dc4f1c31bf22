//! What each `capture` subcommand does, one module each; `main` picks one
//! with a single `match` and only wires.
//!
//! - [`serve`]: the daemon (no subcommand), until SIGINT/SIGTERM or, with
//!   `--drain`, until there is no work left.
//! - [`set_session`]: stores a trader's session read from stdin.
//! - [`reseal_cookies`]: moves every stored session to the current key.
//! - [`prune`]: deletes screenshots past their plan's retention.
//!
//! They are jobs, not library code: each returns `anyhow` errors with the
//! context an operator needs, and the parts they share are built here from
//! the [`Config`], once.

pub mod prune;
pub mod reseal_cookies;
pub mod serve;
pub mod set_session;

use std::sync::Arc;

use anyhow::Context as _;
use cookie_seal::Keyring;

use service_runtime::postgres::{self, ConnectConfig, PoolSettings};

use crate::config::Config;
use crate::storage::{Storage, StorageKind};

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

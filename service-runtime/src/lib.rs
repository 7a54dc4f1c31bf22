//! What the `ingest` and `capture` binaries truly share, and nothing else.
//!
//! Both binaries are long-running services started the same way: read a typed
//! config once, install logging, serve a little HTTP, and stop cleanly on
//! SIGINT/SIGTERM within a deadline. They also read the same Supabase
//! project, the same Postgres and the same seal keys. Writing that twice
//! would mean two shutdown paths, two log formats and two readings of one
//! setting to keep in step, so it lives here.
//!
//! # Layout
//!
//! - [`cli`]: [`cli::parse`] reads a binary's clap config from flags and
//!   environment variables, treating `FOO=` (set but empty) as unset.
//! - [`supabase`]: [`SupabaseSettings`], `SUPABASE_URL` and the service key
//!   (`SUPABASE_SECRET_KEY`, else the legacy `SUPABASE_SERVICE_ROLE_KEY`),
//!   flattened into each binary's config.
//! - [`secret`]: [`secret::DatabaseUrl`], a Postgres connection URL checked
//!   at start-up whose `Debug` never prints the password;
//!   [`secret::SealKeys`], `COOKIE_SEAL_KEYS` parsed into a keyring; the
//!   value parser that reports a bad secret without printing it; and the
//!   headers that authenticate a service to Supabase. Other secrets use
//!   [`secrecy::SecretString`] directly (re-exported here).
//! - [`postgres`]: [`postgres::pool`], the one Postgres pool builder, and
//!   [`postgres::connect_config`], the URL read once with its TLS settings
//!   (`postgres-tls`), for a pool and for capture's LISTEN session alike.
//! - [`telemetry`]: one `init()` for `tracing`. The filter comes from
//!   `RUST_LOG` (default `info`); [`LogFormat::Json`] (`LOG_FORMAT`, the
//!   flattened [`telemetry::Logging`]) switches to JSON lines for log
//!   shippers.
//! - [`shutdown`]: [`shutdown::signal`] registers SIGINT and SIGTERM handlers
//!   up front and hands back one future that resolves on whichever comes
//!   first. Every binary has exactly one shutdown trigger, this one.
//! - [`http`]: [`http::serve`] accepts connections from a listener the caller
//!   bound, serves each one with a hyper service until the shutdown future
//!   resolves, then drains in-flight requests for at most a grace period.
//!   Libraries take parts (a bound listener), not settings (a port), so tests
//!   can bind `127.0.0.1:0`. [`http::respond`] writes a JSON answer.

pub mod cli;
pub mod http;
pub mod postgres;
pub mod secret;
pub mod shutdown;
pub mod supabase;
pub mod telemetry;

pub use secrecy::{ExposeSecret, SecretString};
pub use supabase::SupabaseSettings;
pub use telemetry::{LogFormat, Logging};

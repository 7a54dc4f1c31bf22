//! The webhook edge: TradingView posts an alert, ingest answers.
//!
//! # Layout
//!
//! - [`config`]: the binary's settings, parsed once from flags and
//!   environment variables into typed values (addresses, URLs, durations,
//!   networks, secrets that never print).
//! - [`server`]: [`server::run`] takes a bound listener, an [`server::App`]
//!   (database path, guard, metrics) and a shutdown future, and serves HTTP
//!   until the future resolves, then drains within a grace period. Routing,
//!   body limits and the answer to each outcome live there.
//! - [`signal`]: the pure parser. [`signal::Signal::parse`] turns a webhook
//!   body (JSON, labelled lines, TradingView's default messages, free text)
//!   into a typed [`signal::Signal`] or a [`signal::ParseError`] that tells
//!   the trader what to send. No I/O; fuzzed and property-tested.
//! - [`db`]: the one call per webhook, `public.ingest_signal`, through
//!   PostgREST or a direct Postgres pool, bounded by a deadline.
//! - [`guard`]: the client's address (trusted proxies only), the source
//!   allowlist and the per-address unknown-token throttle.
//! - [`metrics`]: the Prometheus registry behind `/metrics`.
//! - [`delivery`]: one webhook as `ingest_signal` takes it, built the same
//!   way when answered live and when replayed from the spool.
//! - [`spool_admission`]: the outage admission policy: when a webhook is
//!   spooled instead of stored, who may fill the spool while tokens cannot
//!   be checked, and the replay sink that calls the database.
//! - [`api`]: the JSON answers and [`api::ApiError`], the single place where
//!   an error becomes an HTTP status and body.
//!
//! The data flow: request → `server` (route, guard, body limits) → `signal`
//! turns the body into a `Signal` or a rejection → `db` makes the one call
//! → `api` renders the outcome. The accept loop and graceful drain are
//! shared with the capture daemon and live in [`service_runtime::http`].
//!
//! The spool itself is a crate of its own, [`webhook_spool`]: a durable
//! local spool for webhooks that arrive while the database path is down
//! (append-only segment files, fsync'd before the edge answers, bounded,
//! crash-safe) and the [`webhook_spool::Replayer`] that feeds them to the
//! database in arrival order once it is back. It is pure of HTTP and
//! database code; the edge wires it in.

pub mod api;
pub mod config;
pub mod db;
pub mod delivery;
pub mod guard;
pub mod metrics;
pub mod server;
pub mod session;
pub mod signal;
pub mod spool_admission;

pub use config::Config;
pub use server::run;

//! The webhook edge: TradingView posts an alert, ingest answers.
//!
//! # Layout
//!
//! - [`config`]: the binary's settings, parsed once from flags and
//!   environment variables into typed values (addresses, URLs, durations,
//!   networks, secrets that never print); the Supabase, logging and seal-key
//!   settings are `service-runtime`'s, flattened in.
//! - [`server`]: [`server::run`] takes a bound listener, an [`server::App`]
//!   (database path, batcher, guard, token memory, metrics) and a shutdown
//!   future, and serves HTTP until the future resolves, then drains within a
//!   grace period; [`server::run_admin`] serves only the health routes and
//!   `/metrics` on the admin listener. Its `mod.rs` holds the route table;
//!   each route is a module of its own: `server::webhook` (the alert),
//!   [`server::session`] (the trader's TradingView session) and
//!   `server::health` (health and metrics, the cached database status).
//! - [`signal`]: the pure parser. [`signal::Signal::parse`] turns a webhook
//!   body (JSON, labelled lines, TradingView's default messages, free text)
//!   into a typed [`signal::Signal`] or a [`signal::ParseError`] that tells
//!   the trader what to send. No I/O; fuzzed and property-tested.
//! - [`db`]: every database call, each bounded by a deadline, through
//!   PostgREST (`db/rest.rs`, the workspace's reqwest) or a direct Postgres
//!   pool with the same arguments and answers: `public.ingest_signals` (a
//!   batch of webhooks), `capture_queue_status` (`/health`),
//!   `set_tradingview_session` (the session endpoint).
//! - [`batcher`]: webhooks that arrive together go to the database in one
//!   `ingest_signals` call; a bounded number of calls in flight, one
//!   token's alerts never in two at once, and "saturated" when an alert
//!   would wait past its budget (then the edge spools it).
//! - [`auth`]: the trader's Supabase access token verified (HS256 with the
//!   JWT secret, or the project's JWKS, cached), for the session endpoint.
//! - [`guard`]: the client's address (trusted proxies only), the source
//!   allowlist, the per-address budget for unverified tokens (never for
//!   TradingView's addresses) and the global one.
//! - [`tokens`]: the tokens the database accepted (hashed, kept across
//!   restarts beside the spool) and the negative cache of unknown ones.
//! - [`metrics`]: the Prometheus registry behind `/metrics`.
//! - [`log_throttle`]: the WARN and ERROR lines every request of a flood
//!   would repeat (a database outage during a bar-close burst) written once
//!   per window, with a count of those held back.
//! - [`open_files`]: the open-file limit raised to what
//!   `INGEST_MAX_CONNECTIONS` needs (up to the hard limit), at start.
//! - [`delivery`]: one webhook as `ingest_signal` takes it, built the same
//!   way when answered live and when replayed from the spool.
//! - [`spool_admission`]: the outage admission policy: when a webhook is
//!   spooled instead of stored, who may fill the spool while tokens cannot
//!   be checked, and the replay sink that calls the database.
//! - [`api`]: the JSON answers and [`api::ApiError`], the single place where
//!   an error becomes an HTTP status and body, for every route.
//!
//! The data flow: request → `server` (route table, then the route: guard,
//! body limits) → `signal` turns the body into a `Signal` or a rejection →
//! `batcher` gets it decided by one `db` call with whatever arrived
//! together → `api` renders the outcome. The accept loop,
//! graceful drain and JSON answers are shared with the capture daemon and
//! live in [`service_runtime::http`].
//!
//! The spool itself is a crate of its own, [`webhook_spool`]: a durable
//! local spool for webhooks that arrive while the database path is down
//! (append-only segment files, fsync'd before the edge answers, bounded,
//! crash-safe) and the [`webhook_spool::Replayer`] that feeds them to the
//! database in arrival order once it is back. It is pure of HTTP and
//! database code; the edge wires it in.

pub mod api;
pub mod auth;
pub mod batcher;
pub mod config;
pub mod db;
pub mod delivery;
pub mod guard;
pub mod log_throttle;
pub mod metrics;
pub mod open_files;
pub mod server;
pub mod signal;
pub mod spool_admission;
pub mod tokens;

pub use config::Config;
pub use server::run;

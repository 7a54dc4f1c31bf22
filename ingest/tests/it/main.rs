//! ingest's integration tests, one binary: the parser over real alert
//! shapes and random input, and the server over real sockets against the
//! local stack (PostgREST, Postgres, `ingest_signal`), each test with an
//! app of its own from [`helpers::spawn_app`].
//!
//! - [`signal_parse`], [`signal_props`]: `Signal::parse`, table-driven and
//!   property-based; no I/O.
//! - [`server`]: the HTTP server itself (routing, the admin listener,
//!   keep-alive, the drain).
//! - [`connections`]: silent, idle and flooding connections.
//! - [`webhook`]: every answer of the webhook contract, on both database
//!   paths where the path matters.
//! - [`batch`]: one alert that raises inside the database, in a batch with
//!   others, on both paths and in the spool's replay.
//! - [`session`]: the TradingView session endpoint, on both paths.
//! - [`outage`]: the database path down: the spool, its replay, `kill -9`.
//! - [`traffic`]: TradingView's shared addresses, strangers' bad tokens,
//!   bursts, the known tokens across a restart.
//! - [`database_tls`]: the direct pool refuses a certificate for another
//!   name under `verify-full`.
//! - [`log_flood`]: a burst of webhooks failing alike (database down, spool
//!   refusing, unverified budget in use) writes one WARN or
//!   ERROR line per kind and window; `/metrics` counts every one.
//! - [`log_secrets`]: the binary at `RUST_LOG=trace` logs none of the
//!   secrets a session request handles.
//!
//! The stack's settings come from the environment (`scripts/test` exports
//! them; by hand, `set -a; . .dev/stack.env` after `scripts/dev up`).

mod batch;
mod connections;
mod database_tls;
mod helpers;
mod log_flood;
mod log_secrets;
mod outage;
mod server;
mod session;
mod signal_parse;
mod signal_props;
mod switch;
mod traffic;
mod webhook;

//! The webhook edge: TradingView posts an alert, ingest answers.
//!
//! # Layout
//!
//! What exists today:
//!
//! - [`config`]: the binary's settings, parsed once from flags and
//!   environment variables into typed values (addresses, URLs, durations,
//!   secrets that never print).
//! - [`server`]: [`server::run`] takes a bound listener and a shutdown
//!   future and serves HTTP until the future resolves, then drains within a
//!   grace period. Routing happens there; today it answers
//!   `GET /health/live` and a JSON 404/405 for everything else.
//! - [`signal`]: the pure parser. [`signal::Signal::parse`] turns a webhook
//!   body (JSON, labelled lines, TradingView's default messages, free text)
//!   into a typed [`signal::Signal`] or a [`signal::ParseError`] that tells
//!   the trader what to send. No I/O; fuzzed and property-tested.
//! - [`api`]: the JSON answers and [`api::ApiError`], the single place where
//!   an error becomes an HTTP status and body.
//!
//! The data flow the next pieces complete: request → `server` (route, body
//! limits) → `signal` turns the body into a `Signal` → one call of
//! `public.ingest_signal` → `api` renders the outcome. The webhook route and
//! the database call do not exist yet. The accept loop and
//! graceful drain are shared with the capture daemon and live in
//! [`service_runtime::http`].

pub mod api;
pub mod config;
pub mod server;
pub mod session;
pub mod signal;

pub use config::Config;
pub use server::run;

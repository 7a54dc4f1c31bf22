//! The capture daemon: screenshots each new signal's chart and stores it.
//!
//! # Layout
//!
//! What exists today:
//!
//! - [`config`]: the binary's settings, parsed once from flags and
//!   environment variables.
//! - [`health`]: the daemon's own small HTTP endpoint (`GET /health/live`),
//!   so an orchestrator can tell the process is up.
//! - [`daemon`]: [`daemon::run`] ties the parts together: it serves the
//!   health endpoint and runs the main loop until the shutdown future
//!   resolves (or, in [`daemon::Mode::Drain`], until there is no work left),
//!   then drains the health server within the grace period.
//! - [`prune`]: `capture prune`, which deletes screenshots past their
//!   owner's plan retention through the Storage API, then clears the rows;
//!   safe to interrupt and to re-run.
//! - [`telegram`]: the Bot API client that sends a trader their signal and
//!   its screenshot (or why there is none) when they asked for it; retried
//!   on flood limits and 5xx, never part of the signal's own fate.
//!
//! What does not exist yet: the main loop has no queue work. Claiming jobs
//! from Postgres (LISTEN/NOTIFY with a polling fallback), rendering charts in
//! headless Chrome and uploading them to Supabase Storage arrive with the
//! capture issue; until then the loop only waits for the shutdown signal,
//! and drain mode returns at once because there is nothing to drain. The
//! accept loop and graceful drain are shared with ingest and live in
//! [`service_runtime::http`].

pub mod config;
pub mod daemon;
pub mod health;
pub mod prune;
pub mod telegram;

pub use config::Config;

//! The capture daemon: screenshots each new signal's chart and stores it.
//!
//! # Layout
//!
//! - [`config`]: the binary's settings, parsed once from flags and
//!   environment variables.
//! - [`listener`]: a dedicated Postgres session that LISTENs for
//!   `capture_jobs` wake-ups, reconnecting with backoff.
//! - [`queue`]: typed calls on the queue's SQL functions (claim under a
//!   lease, complete, fail with the SQL retry schedule, release, reclaim).
//! - [`worker`]: the queue loop (claim while slots are free, sleep until a
//!   wake-up, a finished job or the poll interval) and the life of one job.
//! - [`render`]: one Chromium per daemon, one fresh browser context per
//!   capture (pre-warmed spares, so a job starts on a ready tab); the
//!   trader's chart with their session, or
//! - [`history_chart`]: the built-in chart of the trader's signal history
//!   ([`history_chart::axis`]: its price axis, fitted to the prices shown).
//! - [`chromium`]: Chromium started so that it dies with the daemon.
//! - [`cdp`]: the daemon's own `DevTools` client (one websocket, flattened
//!   page sessions, a deadline per command) that [`render`] drives it with.
//! - [`storage`]: Supabase Storage over REST, or a directory.
//! - [`metrics`] and [`health`]: `GET /health`, `/health/live`, `/metrics`.
//! - [`daemon`]: [`daemon::run`] ties them together and stops them in order.
//! - [`prune`]: deletes screenshots past their owner's plan retention
//!   through the Storage API, then clears the rows; safe to interrupt and
//!   to re-run.
//! - [`session`]: the trader's stored TradingView session as operators
//!   administer it (store one, re-seal all under the current key).
//! - [`commands`]: one module per subcommand of the `capture` binary (the
//!   daemon, `set-session`, `reseal-cookies`, `prune`), built from
//!   [`config`]; `main` only picks one.
//! - [`telegram`]: the Bot API client that sends a trader their signal and
//!   its screenshot (or why there is none) when they asked for it; retried
//!   on flood limits and 5xx, never part of the signal's own fate.
//! - [`telegram_link`]: the bot's side of linking a trader's chat by proof
//!   (`/start <code>`, `/stop`): one daemon long-polls the bot's updates
//!   under a lease in the database, which links the chat and keeps the
//!   offset.
//!
//! Data flow: NOTIFY (or the poll) wakes [`worker`], which claims jobs from
//! [`queue`], opens the trader's sealed session (`cookie-seal`), renders in
//! [`render`], uploads through [`storage`] and completes the job in
//! [`queue`]; the signal row's status change reaches the dashboard through
//! Supabase Realtime.

pub mod cdp;
pub mod chromium;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod health;
pub mod history_chart;
pub mod listener;
pub mod metrics;
pub mod prune;
pub mod queue;
pub mod render;
pub mod session;
pub mod storage;
pub mod telegram;
pub mod telegram_link;
pub mod worker;

pub use config::Config;

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
//!   trader's chart with their session, read as [`page`] says (drawn, signed
//!   out, the chart area, the overlays, the symbol), or
//! - [`history_chart`]: the built-in chart of the trader's signal history
//!   ([`history_chart::axis`]: its price axis, fitted to the prices shown).
//! - [`chromium`]: Chromium started isolated (never as root, sandboxed, an
//!   empty environment, a fresh profile per launch) and so that it dies
//!   with the daemon.
//! - [`egress`]: where Chromium may connect: a SOCKS5 proxy in the daemon
//!   that refuses loopback, private and metadata addresses, except the
//!   exact `CAPTURE_EGRESS_ALLOW` entries.
//! - [`cdp`]: the daemon's own `DevTools` client (over Chromium's
//!   `--remote-debugging-pipe`, flattened page sessions, a deadline per
//!   command) that [`render`] drives it with.
//! - [`storage`]: Supabase Storage over REST, or a directory; its answers
//!   read as Storage means them (retry what a retry can fix).
//! - [`deletions`]: removes the screenshots of deleted signals, which the
//!   database queues, through the Storage API.
//! - [`metrics`] and [`health`]: `GET /health`, `/health/live`, `/metrics`.
//! - [`daemon`]: [`daemon::run`] ties them together and stops them in order.
//! - [`prune`]: deletes screenshots past their owner's plan retention
//!   through the Storage API, then clears the rows; safe to interrupt and
//!   to re-run.
//! - [`session`]: the trader's stored TradingView session as operators
//!   administer it (store one, re-seal all under the current key).
//! - [`session_check`]: each stored session checked over HTTP before it
//!   fails (at most once per interval, spread over it), the trader told
//!   when it expired, and the sessions gauge.
//! - [`commands`]: one module per subcommand of the `capture` binary (the
//!   daemon, `set-session`, `reseal-cookies`, `check-sessions`, `prune`), built from
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
pub mod deletions;
pub mod egress;
pub mod health;
pub mod history_chart;
pub mod listener;
pub mod metrics;
pub mod page;
pub mod prune;
pub mod queue;
pub mod render;
pub mod session;
pub mod session_check;
pub mod storage;
pub mod telegram;
pub mod telegram_link;
pub mod worker;

pub use config::Config;

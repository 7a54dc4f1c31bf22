//! capture's integration tests, one binary: real Postgres (a throwaway
//! database per test, cloned from the migrated template), real Chromium,
//! and stub servers only for what cannot run here (TradingView's chart
//! page, Supabase Storage, Telegram's Bot API), each checking the exact
//! requests.
//!
//! - `drain`: the daemon in process, in drain mode (so tests never sleep
//!   and guess): both kinds of chart, cookies kept apart, expired sessions,
//!   pages that never get ready, a killed Chromium, Storage's contract,
//!   Telegram after a capture.
//! - `process`: the `capture` binary as operators run it: woken by NOTIFY,
//!   stopped by SIGTERM, killed with `kill -9`.
//! - `session`: `capture set-session` and re-sealing under a new key.
//! - `spares`: pre-warmed pages serve one capture each.
//! - `cdp`: the `DevTools` client's failure modes.
//! - `prune`: `capture prune` and Storage's delete call.
//! - `telegram`: the Bot API contract.
//! - `telegram_link`: linking a trader's chat through the bot (`/start`
//!   with a code, `/stop`), one poller per bot, each update acted on once.
//! - `support`: the stubs, test data, and the two ways to run the daemon
//!   (in process: [`support::daemon::worker`]; the binary:
//!   [`support::daemon::spawn_daemon`]).

mod cdp;
mod drain;
mod process;
mod prune;
mod session;
mod spares;
mod support;
mod telegram;
mod telegram_link;

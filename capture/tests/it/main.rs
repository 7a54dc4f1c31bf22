//! capture's integration tests, one binary: real Postgres (a throwaway
//! database per test, cloned from the migrated template), real Chromium,
//! and stub servers only for what cannot run here (TradingView's chart
//! page and home page, Supabase Storage, Telegram's Bot API), each checking
//! the exact requests.
//!
//! - `drain`: the daemon in process, in drain mode (so tests never sleep
//!   and guess): both kinds of chart, cookies kept apart, expired sessions,
//!   pages that never get ready, a killed Chromium, Storage's contract and
//!   errors, Telegram after a capture.
//! - `page`: each state of the TradingView-shaped test page, with the
//!   daemon's default page rules.
//! - `session_check`: the TradingView session checks against a stand-in of
//!   TradingView's home page, and their rate for 1,000 sessions.
//! - `deletions`: deleted signals' screenshots removed by the daemon and by
//!   `capture prune`, from both storage backends.
//! - `process`: the `capture` binary as operators run it: woken by NOTIFY,
//!   stopped by SIGTERM, killed with `kill -9`.
//! - `session`: `capture set-session` and re-sealing under a new key.
//! - `database_tls`: the binary refuses a Postgres certificate for another
//!   name under `verify-full`.
//! - `spares`: pre-warmed pages serve one capture each.
//! - `cdp`: the `DevTools` client's failure modes over its pipe.
//! - `isolation`: Chromium's processes: not root, sandboxed, no secrets in
//!   their environment, no `DevTools` port; a root daemon without
//!   `CAPTURE_CHROMIUM_USER` refuses to start.
//! - `egress`: pages reach no loopback, private or metadata address, by any
//!   kind of request, but do reach a `CAPTURE_EGRESS_ALLOW` entry; the
//!   egress proxy serves Chromium's user only.
//! - `log_secrets`: the binary at `RUST_LOG=trace` logs neither the
//!   cookies of the session it captures with, the seal key nor the database
//!   password.
//! - `prune`: `capture prune` and Storage's delete call.
//! - `telegram`: the Bot API contract.
//! - `telegram_link`: linking a trader's chat through the bot (`/start`
//!   with a code, `/stop`), one poller per bot, each update acted on once.
//! - `support`: the stubs, test data, and the two ways to run the daemon
//!   (in process: [`support::daemon::worker`]; the binary:
//!   [`support::daemon::spawn_daemon`]).

mod cdp;
mod database_tls;
mod deletions;
mod drain;
mod egress;
mod isolation;
mod log_secrets;
mod page;
mod process;
mod prune;
mod session;
mod session_check;
mod spares;
mod support;
mod telegram;
mod telegram_link;

//! `webhook-load`: the load `scripts/chaos` (its scale-out scenario too) and `scripts/bench soak`
//! send, and the checks of what it left behind. The scripts start and stop processes and break
//! things; what was sent, what was stored and whether that keeps the product's promises is decided
//! here, where it can be tested.
//!
//! Layout, in the order a run uses it:
//! - [`send`]: a bounded, open-loop load of webhooks from several traders, at a steady rate or
//!   in bar-close bursts, retried like TradingView, one line per webhook in a file.
//! - [`outcome`]: that line (one webhook's answers), and the marker that finds the webhook again
//!   in `public.signals`.
//! - [`burst`]: a bar close instead: every trader's alerts at once, each on a new connection, and
//!   the time until the last one is answered and stored.
//! - [`settle`]: waits for ingest's spool to drain and for the run's captures to end.
//! - [`reconcile`]: the file against the database: figures, violations (lost, stored twice, stuck,
//!   failed without a reason, a fault that hit nothing in flight) and notes.
//! - [`workers`]: with several capture daemons on the queue (`scripts/chaos scale-out`), which
//!   daemon captured what, and whether each capture was done and stored exactly once.
//!
//! Database URLs come from `DATABASE_URL` only, so passwords stay out of process lists.

mod burst;
mod outcome;
mod reconcile;
mod send;
mod settle;
mod workers;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    about = "Bounded webhook load with TradingView's retries, and the checks of what it left",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send the load; one line per webhook in --out.
    Send(send::Args),
    /// Every trader's alerts at once; one line of figures.
    Burst(burst::Args),
    /// Wait until ingest's /health reports an empty spool (or none).
    WaitSpool(settle::SpoolArgs),
    /// Wait until the run's captures have ended (or stopped moving).
    WaitCaptures(settle::CapturesArgs),
    /// Reconcile the run's file with the database: figures, violations, notes.
    Reconcile(reconcile::Args),
    /// Per-daemon captures of the run, each done and stored exactly once, nothing left open.
    Workers(workers::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Send(args) => send::run(args).await,
        Command::Burst(args) => burst::run(args).await,
        Command::WaitSpool(args) => settle::wait_spool(args).await,
        Command::WaitCaptures(args) => settle::wait_captures(args).await,
        Command::Reconcile(args) => reconcile::run(args).await,
        Command::Workers(args) => workers::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}

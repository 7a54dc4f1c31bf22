//! Waiting for the system to finish what a run started, before `reconcile` looks at it: ingest's
//! spool drained (`wait-spool`) and every capture of the run ended (`wait-captures`). Both wait a
//! bounded time and then let the reconciliation report what is left, rather than failing here.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use tokio::time::Instant;

use crate::outcome::run_pattern;

/// Settings of `wait-spool`.
#[derive(Debug, clap::Args)]
pub(crate) struct SpoolArgs {
    /// ingest's base URL; its `/health` reports the spool.
    #[arg(long)]
    ingest_url: String,
    /// How long to wait at most.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Settings of `wait-captures`.
#[derive(Debug, clap::Args)]
pub(crate) struct CapturesArgs {
    /// The run's label (`send --label`).
    #[arg(long)]
    label: String,
    /// Give up once the number of open captures has not moved for this long (longer than a lease
    /// plus the whole retry schedule, so a job whose daemon died has had its chance).
    #[arg(long, value_parser = humantime::parse_duration)]
    idle_limit: Duration,
    /// Give up after this long in all.
    #[arg(long, value_parser = humantime::parse_duration)]
    total_limit: Duration,
    /// A connection that may read `public.signals`; from the environment only.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

/// The spool's entry count from ingest's `/health` body: `Some(0)` and up when ingest reports a
/// spool, `None` when it runs without one.
fn spool_entries(health: &Value) -> Option<u64> {
    health.get("spool").map(|spool| {
        spool
            .get("entries")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX)
    })
}

/// Waits until ingest reports an empty spool, or no spool at all. An ingest that does not answer
/// yet (it may be restarting) is asked again; after the timeout a warning says what was left.
pub(crate) async fn wait_spool(args: SpoolArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("Failed to build the HTTP client")?;
    let url = format!("{}/health", args.ingest_url.trim_end_matches('/'));
    let deadline = Instant::now() + args.timeout;
    let mut last = None;
    loop {
        let health = match client.get(&url).send().await {
            Ok(response) => response.json::<Value>().await.ok(),
            Err(_) => None,
        };
        if let Some(health) = health {
            match spool_entries(&health) {
                None | Some(0) => return Ok(()),
                entries => last = entries,
            }
        }
        if Instant::now() >= deadline {
            let left = last.map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string());
            eprintln!(
                "warning: ingest still reports {left} spooled webhooks after {}",
                humantime::format_duration(args.timeout)
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until every signal of the run has a final screenshot status, or nothing moved for the
/// idle limit, or the total limit is reached; what is still open then is stuck, and `reconcile`
/// says so.
pub(crate) async fn wait_captures(args: CapturesArgs) -> anyhow::Result<()> {
    let (db, connection) = postgres_tls::connect(&args.database_url)
        .await
        .context("Failed to connect to the database")?;
    tokio::spawn(connection);
    let pattern = run_pattern(&args.label);
    let started = Instant::now();
    let (mut last, mut since) = (None, started);
    loop {
        let open: i64 = db
            .query_one(
                "select count(*) from public.signals \
                  where raw_message like $1 and screenshot_status in ('pending', 'processing')",
                &[&pattern],
            )
            .await
            .context("Failed to count the run's open captures")?
            .get(0);
        if open == 0 {
            return Ok(());
        }
        if last != Some(open) {
            (last, since) = (Some(open), Instant::now());
        }
        if since.elapsed() >= args.idle_limit || started.elapsed() >= args.total_limit {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_spool_is_read_from_health_and_its_absence_is_no_spool() {
        assert_eq!(
            spool_entries(&json!({"status": "ok", "queue_length": 3})),
            None
        );
        assert_eq!(
            spool_entries(&json!({"status": "spooling", "spool": {"entries": 12, "bytes": 4096}})),
            Some(12)
        );
        assert_eq!(spool_entries(&json!({"spool": {"entries": 0}})), Some(0));
        // A spool whose count cannot be read is not taken for an empty one.
        assert_eq!(spool_entries(&json!({"spool": {}})), Some(u64::MAX));
    }
}

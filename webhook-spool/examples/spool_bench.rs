//! How many durable appends per second the spool takes, with and without
//! group commit, at several numbers of concurrent request tasks.
//!
//! `scripts/bench spool` runs it; by hand:
//! `cargo run --release -p webhook-spool --example spool_bench -- [seconds] [dir]`.
//! The directory defaults to a fresh one under `target/`, which must be on
//! the disk ingest would spool to: a tmpfs makes fsync free and the figures
//! meaningless.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use chrono::Utc;
use uuid::Uuid;
use webhook_spool::{DEFAULT_MAX_BATCH, Spool, SpoolConfig, SpooledWebhook};
use webhook_token::WebhookToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()
        .context("Failed to parse the seconds per run")?
        .unwrap_or(3);
    let parent: PathBuf = args
        .next()
        .map_or_else(|| PathBuf::from("target"), PathBuf::from);
    std::fs::create_dir_all(&parent).context("Failed to create the bench directory")?;

    println!(
        "== spool appends (fdatasync per batch), {seconds} s per run, in {}",
        parent.display()
    );
    println!(
        "  {:>5}  {:>26}  {:>26}",
        "tasks", "group commit off (batch 1)", "group commit on"
    );
    for tasks in [1, 8, 64] {
        let off = run(&parent, tasks, 1, seconds).await?;
        let on = run(&parent, tasks, DEFAULT_MAX_BATCH, seconds).await?;
        println!(
            "  {tasks:>5}  {:>9.0}/s  p99 {:>7.2} ms  {:>9.0}/s  p99 {:>7.2} ms",
            off.0, off.1, on.0, on.1
        );
    }
    Ok(())
}

/// Appends/s and p99 append latency (ms) for one configuration.
async fn run(
    parent: &std::path::Path,
    tasks: usize,
    max_batch: usize,
    seconds: u64,
) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::Builder::new()
        .prefix("spool-bench-")
        .tempdir_in(parent)
        .context("Failed to create a spool directory")?;
    let config = SpoolConfig {
        max_batch,
        ..SpoolConfig::new(dir.path(), 4 << 30)
    };
    let (spool, _) = Spool::open(&config).context("Failed to open the spool")?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (spool, stop) = (spool.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let webhook = sample(task, n);
                    let t = Instant::now();
                    spool.append(&webhook).await?;
                    latencies.push(t.elapsed());
                    n += 1;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.context("bench task panicked")??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    #[expect(
        clippy::cast_precision_loss,
        reason = "a count of appends in a few seconds"
    )]
    let rate = latencies.len() as f64 / elapsed;
    Ok((rate, p99.as_secs_f64() * 1000.0))
}

/// A TradingView-sized alert.
fn sample(task: usize, n: u64) -> SpooledWebhook {
    SpooledWebhook {
        delivery_id: Uuid::now_v7(),
        token: WebhookToken::parse("q3vG7Xk1_Zp0-LmN2bC4dE5fG6hI7jK8lM9nO0pQ1rS").expect("token"),
        chart: Some("AbCd1234".into()),
        body: Bytes::from(format!(
            "{{\"ticker\":\"BINANCE:BTCUSDT\",\"price\":67890.5,\"action\":\"buy\",\"task\":{task},\"n\":{n}}}"
        )),
        received_at: Utc::now(),
        client_ip: Some(IpAddr::from([52, 89, 214, 238])),
    }
}

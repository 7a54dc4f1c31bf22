//! The spool against a real filesystem, through its public API only: crash
//! recovery, acknowledgement across restarts, the size cap, ordering under
//! concurrency, a model-based property test, a real `kill -9` of a process
//! in the middle of appends, the replayer, and the on-disk format pinned by
//! a spool written before the spool left ingest.
//!
//! One binary, a module per concern of the crate; the helpers every module
//! uses are here.

mod ack;
mod append;
mod crash;
mod format;
mod model;
mod recovery;
mod replay;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::DateTime;
use uuid::Uuid;
use webhook_spool::{Spool, SpoolConfig, SpoolEntry, SpooledWebhook};
use webhook_token::WebhookToken;

/// Bytes before a frame's payload: length and CRC (the documented format).
const HEADER_LEN: usize = 8;
/// The payload version the spool writes (the documented format).
const VERSION: u8 = 1;

const TOKEN: &str = "q3vG7Xk1_Zp0-LmN2bC4dE5fG6hI7jK8lM9nO0pQ1rS";

/// A webhook whose body names `n`, received `n` milliseconds after a fixed
/// instant.
fn webhook(n: u64) -> SpooledWebhook {
    SpooledWebhook {
        delivery_id: Uuid::now_v7(),
        token: WebhookToken::parse(TOKEN).unwrap(),
        chart: n.is_multiple_of(2).then(|| format!("chart{n}")),
        body: Bytes::from(format!("BINANCE:BTCUSDT long #{n}\n")),
        received_at: DateTime::from_timestamp_millis(1_790_000_000_000 + i64::try_from(n).unwrap())
            .unwrap(),
        client_ip: Some(IpAddr::from([203, 0, 113, (n % 250) as u8])),
    }
}

/// `webhook`'s frame as the format in the crate's `record.rs` describes it,
/// encoded here independently: `format::the_writer_writes_the_documented_frames`
/// checks the spool writes exactly these bytes, and the other tests use them
/// to tear, corrupt and measure records on disk.
fn frame(webhook: &SpooledWebhook) -> Vec<u8> {
    fn with_u16_len(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&u16::try_from(bytes.len()).unwrap().to_le_bytes());
        out.extend_from_slice(bytes);
    }
    let mut payload = vec![VERSION];
    payload.extend_from_slice(webhook.delivery_id.as_bytes());
    payload.extend_from_slice(&webhook.received_at.timestamp().to_le_bytes());
    payload.extend_from_slice(&webhook.received_at.timestamp_subsec_nanos().to_le_bytes());
    match webhook.client_ip {
        None => payload.push(0),
        Some(IpAddr::V4(ip)) => {
            payload.push(4);
            payload.extend_from_slice(&ip.octets());
        }
        Some(IpAddr::V6(ip)) => {
            payload.push(6);
            payload.extend_from_slice(&ip.octets());
        }
    }
    match &webhook.chart {
        None => payload.push(0),
        Some(chart) => {
            payload.push(1);
            with_u16_len(&mut payload, chart.as_bytes());
        }
    }
    with_u16_len(&mut payload, webhook.token.expose().as_bytes());
    payload.extend_from_slice(&u32::try_from(webhook.body.len()).unwrap().to_le_bytes());
    payload.extend_from_slice(&webhook.body);

    let mut frame = u32::try_from(payload.len()).unwrap().to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// How many bytes `webhook` takes in a segment file.
fn frame_len(webhook: &SpooledWebhook) -> u64 {
    frame(webhook).len() as u64
}

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        segment_bytes: 1024,
        ..SpoolConfig::new(dir, 1 << 20)
    }
}

fn open(config: &SpoolConfig) -> Spool {
    Spool::open(config).expect("open the spool").0
}

async fn read_all(spool: &Spool) -> Vec<SpoolEntry> {
    spool.read(usize::MAX).await.expect("read the spool")
}

/// The `#n` each record's body names, in the order the spool returns them.
async fn numbers(spool: &Spool) -> Vec<u64> {
    read_all(spool).await.iter().map(number).collect()
}

fn number(entry: &SpoolEntry) -> u64 {
    body_number(&entry.webhook)
}

/// The `#n` a webhook's body names.
fn body_number(webhook: &SpooledWebhook) -> u64 {
    let body = std::str::from_utf8(&webhook.body).unwrap();
    body.trim_end().rsplit('#').next().unwrap().parse().unwrap()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "spool"))
        .collect();
    files.sort();
    files
}

async fn append_range(spool: &Spool, range: std::ops::Range<u64>) {
    for n in range {
        spool.append(&webhook(n)).await.expect("append");
    }
}

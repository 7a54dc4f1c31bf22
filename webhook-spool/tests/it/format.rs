//! The on-disk format, pinned: `tests/fixtures/spool-v1` is a spool written
//! by ingest's own spool module (commit b197725) before the spool became
//! this crate (twelve webhooks in 512-byte segments, acknowledged through
//! the seventh in two acks, so two segments were deleted and both cursor
//! slots are in use). A
//! spool left by that ingest must replay unchanged after an upgrade, and one
//! written by this crate must be readable by that ingest after a rollback:
//! the same operations must leave the same bytes.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::Path;

use bytes::Bytes;
use chrono::DateTime;
use tempfile::TempDir;
use uuid::Uuid;
use webhook_spool::{Recovery, Spool, SpoolConfig, SpooledWebhook};
use webhook_token::WebhookToken;

use crate::{TOKEN, frame, frame_len, open, read_all, segment_files};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/spool-v1");

/// The webhooks of the fixture, exactly as its writer built them: every
/// shape of address and chart, and one body that is not UTF-8.
fn fixture_webhook(n: u8) -> SpooledWebhook {
    let mut body = format!("BINANCE:BTCUSDT long #{n}\n").into_bytes();
    if n == 5 {
        body.extend_from_slice(&[0xff, 0x00, 0xfe]);
    }
    SpooledWebhook {
        delivery_id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0000 | u128::from(n)),
        token: WebhookToken::parse(TOKEN).unwrap(),
        chart: (!n.is_multiple_of(3)).then(|| format!("chart{n}")),
        body: Bytes::from(body),
        received_at: DateTime::from_timestamp(
            1_790_000_000 + i64::from(n),
            u32::from(n) * 1_000_001,
        )
        .unwrap(),
        client_ip: match n % 3 {
            0 => None,
            1 => Some(IpAddr::from([203, 0, 113, n])),
            _ => Some(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n)])),
        },
    }
}

fn fixture_config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        segment_bytes: 512,
        ..SpoolConfig::new(dir, 1 << 20)
    }
}

/// The spool's own files in `dir` (segments and cursor, not the lock) by
/// name, with their bytes.
fn spool_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .map(|entry| entry.file_name().into_string().unwrap())
        .filter(|name| name != "lock")
        .map(|name| {
            let bytes = fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

#[tokio::test]
async fn a_spool_written_before_the_split_replays_unchanged() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new().unwrap();
    // As private as a spool directory is (a wider one is made private, and
    // reported, which is not what this test is about).
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let fixture = spool_files(Path::new(FIXTURE));
    assert_eq!(fixture.len(), 3, "two segments and the cursor");
    for (name, bytes) in &fixture {
        fs::write(dir.path().join(name), bytes).unwrap();
    }

    let (spool, recovery) = Spool::open(&fixture_config(dir.path())).unwrap();
    assert_eq!(
        recovery,
        Recovery {
            entries: 5,
            truncated_bytes: 0,
            deleted_segments: 0,
            tightened_from: None,
        }
    );
    let expected: Vec<SpooledWebhook> = (7..12).map(fixture_webhook).collect();
    let entries = read_all(&spool).await;
    let read: Vec<SpooledWebhook> = entries.iter().map(|e| e.webhook.clone()).collect();
    assert_eq!(read, expected);
    let stats = spool.stats();
    assert_eq!(stats.entries, 5);
    assert_eq!(stats.bytes, expected.iter().map(frame_len).sum::<u64>());
    assert_eq!(stats.oldest_received_at, Some(expected[0].received_at));

    spool.ack(entries.last().unwrap()).await.unwrap();
    assert!(segment_files(dir.path()).is_empty());
    drop(spool);
    assert!(
        read_all(&open(&fixture_config(dir.path())))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn the_same_operations_leave_the_same_bytes_as_before_the_split() {
    let dir = TempDir::new().unwrap();
    let spool = open(&fixture_config(dir.path()));
    for n in 0..12 {
        spool.append(&fixture_webhook(n)).await.unwrap();
    }
    let entries = read_all(&spool).await;
    spool.ack(&entries[4]).await.unwrap();
    spool.ack(&entries[6]).await.unwrap();
    drop(entries);
    drop(spool);

    let written = spool_files(dir.path());
    let fixture = spool_files(Path::new(FIXTURE));
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        fixture.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &fixture {
        assert!(written[name] == *bytes, "{name} differs from the fixture");
    }
}

#[tokio::test]
async fn the_writer_writes_the_documented_frames() {
    let dir = TempDir::new().unwrap();
    let spool = open(&SpoolConfig::new(dir.path(), 1 << 20));
    let webhooks: Vec<SpooledWebhook> = (0..6).map(fixture_webhook).collect();
    for w in &webhooks {
        spool.append(w).await.unwrap();
    }
    drop(spool);
    let segments = segment_files(dir.path());
    assert_eq!(segments.len(), 1);
    let expected: Vec<u8> = webhooks.iter().flat_map(frame).collect();
    assert!(fs::read(&segments[0]).unwrap() == expected);
}

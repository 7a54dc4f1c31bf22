//! Acknowledgement: acknowledged records are gone, also after a restart;
//! their segments are deleted; a torn cursor write falls back to the
//! previous cursor.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt as _;

use tempfile::TempDir;
use webhook_spool::Spool;

use crate::{
    append_range, config, frame_len, number, numbers, open, read_all, segment_files, webhook,
};

#[tokio::test]
async fn a_restart_replays_only_what_was_not_acknowledged() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    append_range(&spool, 0..30).await;
    let entries = read_all(&spool).await;
    spool.ack(&entries[11]).await.unwrap();
    assert_eq!(spool.stats().entries, 18);
    assert_eq!(
        spool.stats().oldest_received_at,
        Some(webhook(12).received_at)
    );
    // Reading again without acknowledging returns the same records.
    assert_eq!(numbers(&spool).await, (12..30).collect::<Vec<_>>());
    drop(spool);

    let (spool, recovery) = Spool::open(&config(dir.path())).unwrap();
    assert_eq!(recovery.entries, 18);
    assert_eq!(numbers(&spool).await, (12..30).collect::<Vec<_>>());
    let stats = spool.stats();
    assert_eq!(stats.entries, 18);
    assert_eq!(stats.oldest_received_at, Some(webhook(12).received_at));
    // Bytes of the 18 records, frames included.
    let expected: u64 = (12..30).map(|n| frame_len(&webhook(n))).sum();
    assert_eq!(stats.bytes, expected);
}

#[tokio::test]
async fn replayed_segments_are_deleted_and_an_empty_spool_leaves_no_segment() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    append_range(&spool, 0..50).await;
    let before = segment_files(dir.path()).len();
    assert!(before >= 3, "{before} segments");
    let entries = read_all(&spool).await;
    spool.ack(&entries[30]).await.unwrap();
    let after = segment_files(dir.path()).len();
    assert!(after < before, "{before} -> {after}");
    spool.ack(&entries[49]).await.unwrap();
    assert!(segment_files(dir.path()).is_empty());
    let stats = spool.stats();
    assert_eq!(
        (stats.entries, stats.bytes, stats.oldest_received_at),
        (0, 0, None)
    );

    // Appending again starts a fresh segment; a restart sees only the new record.
    spool.append(&webhook(50)).await.unwrap();
    assert_eq!(numbers(&spool).await, vec![50]);
    drop(spool);
    let spool = open(&config(dir.path()));
    assert_eq!(numbers(&spool).await, vec![50]);
}

#[tokio::test]
async fn reading_and_acknowledging_in_small_batches_sees_every_record_once() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    append_range(&spool, 0..100).await;
    let mut seen = Vec::new();
    loop {
        let batch = spool.read(7).await.unwrap();
        let Some(last) = batch.last() else { break };
        assert!(batch.len() <= 7);
        seen.extend(batch.iter().map(number));
        spool.ack(last).await.unwrap();
    }
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
    assert!(segment_files(dir.path()).is_empty());
}

#[tokio::test]
async fn acknowledging_an_old_entry_again_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    append_range(&spool, 0..5).await;
    let entries = read_all(&spool).await;
    spool.ack(&entries[2]).await.unwrap();
    spool.ack(&entries[0]).await.unwrap();
    assert_eq!(numbers(&spool).await, vec![3, 4]);
}

#[tokio::test]
async fn a_torn_cursor_write_falls_back_to_the_previous_cursor() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    append_range(&spool, 0..6).await;
    let entries = read_all(&spool).await;
    spool.ack(&entries[1]).await.unwrap(); // generation 1 -> slot 1
    spool.ack(&entries[3]).await.unwrap(); // generation 2 -> slot 0
    drop(spool);
    // Spoil the newest slot, as a torn write of it would.
    let cursor = OpenOptions::new()
        .write(true)
        .open(dir.path().join("cursor"))
        .unwrap();
    cursor.write_all_at(&[0xAA; 8], 8).unwrap();
    drop(cursor);
    // Records 2 and 3 come back (replayed twice, never lost).
    assert_eq!(numbers(&open(&config(dir.path()))).await, vec![2, 3, 4, 5]);
}

#[tokio::test]
async fn each_write_and_fsync_is_timed_for_the_observer() {
    use std::sync::{Arc, Mutex};
    use webhook_spool::{SpoolConfig, SyncKind, SyncObserver};

    let dir = TempDir::new().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let spool = open(&SpoolConfig {
        on_sync: Some(SyncObserver::new({
            let seen = Arc::clone(&seen);
            move |kind, took| seen.lock().unwrap().push((kind, took))
        })),
        ..config(dir.path())
    });
    // One at a time: each append is its own write and fsync.
    append_range(&spool, 0..3).await;
    let entries = read_all(&spool).await;
    spool.ack(&entries[2]).await.unwrap();
    // An ordinal already acknowledged moves nothing and syncs nothing.
    spool.ack(&entries[1]).await.unwrap();
    let kinds: Vec<SyncKind> = seen.lock().unwrap().iter().map(|&(kind, _)| kind).collect();
    assert_eq!(
        kinds,
        [
            SyncKind::Append,
            SyncKind::Append,
            SyncKind::Append,
            SyncKind::Ack
        ]
    );
}

//! Appending: the size cap holds exactly, also under concurrency; a record
//! that can never fit is refused; concurrent appends all land and keep each
//! sender's order.

use std::collections::HashMap;

use bytes::Bytes;
use tempfile::TempDir;
use webhook_spool::{SpoolConfig, SpoolError};

use crate::{append_range, config, frame_len, numbers, open, read_all, webhook};

#[tokio::test]
async fn a_full_spool_refuses_until_records_are_acknowledged() {
    let dir = TempDir::new().unwrap();
    let frame_len = frame_len(&webhook(0));
    let spool = open(&SpoolConfig::new(dir.path(), frame_len * 3 + frame_len / 2));
    append_range(&spool, 0..3).await;
    assert!(matches!(
        spool.append(&webhook(3)).await,
        Err(SpoolError::Full { .. })
    ));
    let stats = spool.stats();
    assert_eq!(
        (stats.entries, stats.full_total, stats.appended_total),
        (3, 1, 3)
    );
    let entries = read_all(&spool).await;
    spool.ack(&entries[0]).await.unwrap();
    spool.append(&webhook(4)).await.unwrap();
    assert_eq!(numbers(&spool).await, vec![1, 2, 4]);
    // Still full after a restart: the cap counts what waits on disk.
    drop(spool);
    let spool = open(&SpoolConfig::new(dir.path(), frame_len * 3 + frame_len / 2));
    assert!(matches!(
        spool.append(&webhook(5)).await,
        Err(SpoolError::Full { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_concurrency_a_full_spool_admits_exactly_its_cap() {
    let dir = TempDir::new().unwrap();
    let frame_len = frame_len(&webhook(0));
    // Batches of concurrent appends roll over segments of three records.
    let spool = open(&SpoolConfig {
        segment_bytes: frame_len * 3,
        ..SpoolConfig::new(dir.path(), frame_len * 10)
    });
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let spool = spool.clone();
            tokio::spawn(async move {
                let mut w = webhook(0);
                w.delivery_id = uuid::Uuid::now_v7();
                spool.append(&w).await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(SpoolError::Full { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 10);
    let stats = spool.stats();
    assert_eq!(
        (stats.entries, stats.bytes, stats.full_total),
        (10, frame_len * 10, 30)
    );
}

#[tokio::test]
async fn a_record_larger_than_the_spool_is_too_large() {
    let dir = TempDir::new().unwrap();
    let spool = open(&SpoolConfig::new(dir.path(), 4096));
    let mut big = webhook(0);
    big.body = Bytes::from(vec![b'x'; 5000]);
    assert!(matches!(
        spool.append(&big).await,
        Err(SpoolError::TooLarge { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_all_land_and_keep_each_senders_order() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    let tasks: Vec<_> = (0..50_u64)
        .map(|task| {
            let spool = spool.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    spool.append(&webhook(task * 1000 + i)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(spool.stats().entries, 1000);
    let check = |seen: Vec<u64>| {
        assert_eq!(seen.len(), 1000);
        let mut last: HashMap<u64, u64> = HashMap::new();
        for n in seen {
            let (task, i) = (n / 1000, n % 1000);
            if let Some(&prev) = last.get(&task) {
                assert!(i == prev + 1, "task {task}: {i} after {prev}");
            } else {
                assert_eq!(i, 0);
            }
            last.insert(task, i);
        }
    };
    check(numbers(&spool).await);
    drop(spool);
    check(numbers(&open(&config(dir.path()))).await);
}

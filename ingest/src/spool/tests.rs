//! The spool against a real filesystem: crash recovery, acknowledgement
//! across restarts, the size cap, ordering under concurrency, a model-based
//! property test, a real `kill -9` of a process in the middle of appends, and
//! the replayer.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use tempfile::TempDir;

use super::record::tests::webhook;
use super::record::{HEADER_LEN, VERSION};
use super::{
    Backoff, ReplayCounts, ReplayOutcome, ReplaySink, Replayer, Spool, SpoolConfig, SpoolEntry,
    SpoolError, SpooledWebhook, Transient,
};

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
    let body = std::str::from_utf8(&entry.webhook.body).unwrap();
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

#[tokio::test]
async fn records_come_back_exactly_and_in_order_after_a_restart() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    let written: Vec<SpooledWebhook> = (0..40).map(webhook).collect();
    for w in &written {
        spool.append(w).await.unwrap();
    }
    assert!(segment_files(dir.path()).len() > 1, "spans segments");
    drop(spool);

    let (spool, recovery) = Spool::open(&config(dir.path())).unwrap();
    assert_eq!(recovery.entries, 40);
    assert_eq!(recovery.truncated_bytes, 0);
    let read: Vec<SpooledWebhook> = read_all(&spool)
        .await
        .into_iter()
        .map(|e| e.webhook)
        .collect();
    assert_eq!(read, written);
    let stats = spool.stats();
    assert_eq!(stats.entries, 40);
    assert_eq!(stats.oldest_received_at, Some(written[0].received_at));
}

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
    let expected: u64 = (12..30)
        .map(|n| webhook(n).encode_frame().len() as u64)
        .sum();
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

/// Writes `n` records, closes the spool and returns the last segment's path.
async fn spool_with(dir: &Path, n: u64) -> PathBuf {
    let spool = open(&SpoolConfig::new(dir, 1 << 20));
    append_range(&spool, 0..n).await;
    drop(spool);
    segment_files(dir).pop().unwrap()
}

#[tokio::test]
async fn a_torn_last_record_is_cut_off_at_every_possible_length() {
    let frame = webhook(3).encode_frame();
    for cut in [
        1,
        4,
        HEADER_LEN,
        HEADER_LEN + 1,
        frame.len() / 2,
        frame.len() - 1,
    ] {
        let dir = TempDir::new().unwrap();
        let segment = spool_with(dir.path(), 3).await;
        let good_len = fs::metadata(&segment).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(&frame[..cut]).unwrap();
        drop(file);

        let (spool, recovery) = Spool::open(&config(dir.path())).unwrap();
        assert_eq!(recovery.entries, 3, "cut {cut}");
        assert_eq!(recovery.truncated_bytes, cut as u64, "cut {cut}");
        assert_eq!(fs::metadata(&segment).unwrap().len(), good_len);
        // New appends land after the good records and read back whole.
        spool.append(&webhook(4)).await.unwrap();
        assert_eq!(numbers(&spool).await, vec![0, 1, 2, 4], "cut {cut}");
        drop(spool);
        assert_eq!(numbers(&open(&config(dir.path()))).await, vec![0, 1, 2, 4]);
    }
}

#[tokio::test]
async fn a_record_truncated_in_the_middle_is_dropped_not_misread() {
    let dir = TempDir::new().unwrap();
    let segment = spool_with(dir.path(), 3).await;
    let len = fs::metadata(&segment).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let (spool, recovery) = Spool::open(&config(dir.path())).unwrap();
    assert_eq!(recovery.entries, 2);
    assert_eq!(
        recovery.truncated_bytes,
        webhook(2).encode_frame().len() as u64 - 5
    );
    assert_eq!(numbers(&spool).await, vec![0, 1]);
}

#[tokio::test]
async fn garbage_and_zeros_after_the_last_record_are_cut_off() {
    for tail in [
        vec![0_u8; 4096],
        b"\xff\xff\xff\x7fgarbage that is not a frame".to_vec(),
        // A plausible header (length 60) whose checksum does not match.
        [&60_u32.to_le_bytes()[..], &[1, 2, 3, 4], &[7; 60]].concat(),
    ] {
        let dir = TempDir::new().unwrap();
        let segment = spool_with(dir.path(), 3).await;
        OpenOptions::new()
            .append(true)
            .open(&segment)
            .unwrap()
            .write_all(&tail)
            .unwrap();
        let (spool, recovery) = Spool::open(&config(dir.path())).unwrap();
        assert_eq!(recovery.entries, 3);
        assert_eq!(recovery.truncated_bytes, tail.len() as u64);
        assert_eq!(numbers(&spool).await, vec![0, 1, 2]);
    }
}

#[tokio::test]
async fn a_flipped_bit_in_the_last_record_drops_only_that_record() {
    let dir = TempDir::new().unwrap();
    let segment = spool_with(dir.path(), 3).await;
    let len = fs::metadata(&segment).unwrap().len();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .unwrap();
    let mut byte = [0_u8];
    file.read_exact_at(&mut byte, len - 3).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], len - 3).unwrap();
    drop(file);
    let spool = open(&config(dir.path()));
    assert_eq!(numbers(&spool).await, vec![0, 1]);
}

#[tokio::test]
async fn a_record_from_a_newer_format_stops_open_instead_of_being_guessed_at() {
    let dir = TempDir::new().unwrap();
    let segment = spool_with(dir.path(), 1).await;
    let mut frame = webhook(1).encode_frame();
    frame[HEADER_LEN] = VERSION + 1;
    let crc = crc32fast::hash(&frame[HEADER_LEN..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&frame)
        .unwrap();
    match Spool::open(&config(dir.path())) {
        Err(SpoolError::Undecodable { source, .. }) => {
            assert_eq!(source, super::DecodeError::UnsupportedVersion(VERSION + 1));
        }
        other => panic!("expected Undecodable, got {other:?}"),
    }
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
async fn a_full_spool_refuses_until_records_are_acknowledged() {
    let dir = TempDir::new().unwrap();
    let frame_len = webhook(0).encode_frame().len() as u64;
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
    let frame_len = webhook(0).encode_frame().len() as u64;
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

#[tokio::test]
async fn a_second_process_cannot_open_the_same_directory() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    assert!(matches!(
        Spool::open(&config(dir.path())),
        Err(SpoolError::Locked { .. })
    ));
    drop(spool);
    Spool::open(&config(dir.path())).unwrap();
}

#[tokio::test]
async fn files_are_private_to_the_owner() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new().unwrap();
    let spool_dir = dir.path().join("spool");
    let spool = open(&config(&spool_dir));
    spool.append(&webhook(0)).await.unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&spool_dir), 0o700);
    for file in fs::read_dir(&spool_dir).unwrap() {
        assert_eq!(mode(&file.unwrap().path()), 0o600);
    }
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

#[derive(Clone, Debug)]
enum Op {
    Append(u8),
    /// Acknowledge through the n-th unacknowledged record (modulo depth).
    Ack(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1_u8..5).prop_map(Op::Append),
        3 => any::<u8>().prop_map(Op::Ack),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any sequence of appends, acknowledgements and restarts leaves exactly
    /// the unacknowledged records, in order.
    #[test]
    fn the_spool_keeps_exactly_the_unacknowledged_records_in_order(
        ops in proptest::collection::vec(op(), 1..25),
        segment_bytes in prop_oneof![Just(1_u64), Just(300), Just(1 << 20)],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = TempDir::new().unwrap();
            let cfg = SpoolConfig { segment_bytes, ..SpoolConfig::new(dir.path(), 1 << 20) };
            let mut spool = open(&cfg);
            let mut model: VecDeque<u64> = VecDeque::new();
            let mut next = 0;
            for op in ops {
                match op {
                    Op::Append(k) => {
                        for _ in 0..k {
                            spool.append(&webhook(next)).await.unwrap();
                            model.push_back(next);
                            next += 1;
                        }
                    }
                    Op::Ack(n) => {
                        if !model.is_empty() {
                            let i = usize::from(n) % model.len();
                            let entries = read_all(&spool).await;
                            spool.ack(&entries[i]).await.unwrap();
                            model.drain(..=i);
                        }
                    }
                    Op::Reopen => {
                        drop(spool);
                        spool = open(&cfg);
                    }
                }
                let expected: Vec<u64> = model.iter().copied().collect();
                prop_assert_eq!(numbers(&spool).await, expected);
                let stats = spool.stats();
                prop_assert_eq!(stats.entries, model.len() as u64);
                prop_assert_eq!(
                    stats.oldest_received_at,
                    model.front().map(|&n| webhook(n).received_at)
                );
            }
            Ok(())
        })?;
    }
}

/// Set for the child process of the `kill -9` test: where to spool.
const CHILD_DIR_ENV: &str = "SPOOL_CRASH_CHILD_DIR";

/// Not a test on its own: the child process of
/// `appends_answered_before_a_kill_9_all_survive`, run by it with
/// `--ignored`. Appends from 8 tasks forever and prints `task i` after each
/// append has returned (the moment the edge would answer 202).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of appends_answered_before_a_kill_9_all_survive"]
async fn crash_child() {
    let dir = std::env::var(CHILD_DIR_ENV).expect("run by the kill -9 test");
    let spool = open(&SpoolConfig::new(dir, 64 << 20));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let tasks: Vec<_> = (0..8_u64)
        .map(|task| {
            let (spool, out) = (spool.clone(), Arc::clone(&out));
            tokio::spawn(async move {
                for i in 0.. {
                    spool.append(&webhook(task * 1_000_000 + i)).await.unwrap();
                    let mut out = out.lock().unwrap();
                    writeln!(out, "{task} {i}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn appends_answered_before_a_kill_9_all_survive() {
    let dir = TempDir::new().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "spool::tests::crash_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut confirmed: HashMap<u64, u64> = HashMap::new();
    let mut count = 0;
    while count < 500 {
        let line = lines.next().expect("child output").unwrap();
        let Some((task, i)) = line.split_once(' ') else {
            continue;
        };
        let (Ok(task), Ok(i)) = (task.parse::<u64>(), i.parse::<u64>()) else {
            continue;
        };
        confirmed.insert(task, i);
        count += 1;
    }
    child.kill().unwrap(); // SIGKILL, mid-append
    // Appends answered before the kill whose line was still in the pipe.
    for line in lines {
        let line = line.unwrap();
        if let Some((task, i)) = line.split_once(' ')
            && let (Ok(task), Ok(i)) = (task.parse::<u64>(), i.parse::<u64>())
        {
            confirmed.insert(task, i);
        }
    }
    child.wait().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spool = open(&SpoolConfig::new(dir.path(), 64 << 20));
        let mut seen: HashMap<u64, u64> = HashMap::new();
        for n in numbers(&spool).await {
            let (task, i) = (n / 1_000_000, n % 1_000_000);
            let expected = seen.get(&task).map_or(0, |&prev| prev + 1);
            assert_eq!(i, expected, "task {task}: records in order, none missing");
            seen.insert(task, i);
        }
        for (task, last) in confirmed {
            let kept = seen.get(&task).copied();
            assert!(
                kept >= Some(last),
                "task {task}: append {last} was answered but only {kept:?} survived"
            );
        }
    });
}

/// A sink that records what it was given and answers from a script.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(u64, SpooledWebhook, tokio::time::Instant)>>,
    /// Records with this number fail transiently while `failing` is set.
    fail_number: AtomicU64,
    failing: AtomicBool,
}

impl ReplaySink for Recorder {
    async fn ingest(&self, webhook: &SpooledWebhook) -> Result<ReplayOutcome, Transient> {
        let n: u64 = std::str::from_utf8(&webhook.body)
            .unwrap()
            .trim_end()
            .rsplit('#')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        self.seen
            .lock()
            .unwrap()
            .push((n, webhook.clone(), tokio::time::Instant::now()));
        if self.failing.load(Ordering::SeqCst) && self.fail_number.load(Ordering::SeqCst) == n {
            return Err(Transient::new("database unreachable"));
        }
        Ok(match n % 3 {
            0 => ReplayOutcome::Accepted,
            1 => ReplayOutcome::Duplicate,
            _ => ReplayOutcome::Rejected,
        })
    }
}

impl ReplaySink for Arc<Recorder> {
    async fn ingest(&self, webhook: &SpooledWebhook) -> Result<ReplayOutcome, Transient> {
        self.as_ref().ingest(webhook).await
    }
}

/// Polls `done` until it holds, for up to 10 s of real time (with a paused
/// tokio clock, the sleeps between polls take no real time at all).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_replayer_feeds_records_in_order_with_their_receive_time() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    let written: Vec<SpooledWebhook> = (0..10).map(webhook).collect();
    for w in &written {
        spool.append(w).await.unwrap();
    }
    let sink = Arc::new(Recorder::default());
    let replayer = Replayer::new(spool.clone(), Arc::clone(&sink));
    replayer.drain().await.unwrap();

    // Delivery id, receive time, body, chart and address exactly as spooled.
    let fed: Vec<SpooledWebhook> = sink
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.1.clone())
        .collect();
    assert_eq!(fed, written);
    assert_eq!(
        replayer.counters().snapshot(),
        ReplayCounts {
            accepted: 4,
            duplicate: 3,
            rejected: 3,
            transient_failures: 0
        }
    );
    assert_eq!(spool.stats().entries, 0);
    drop(replayer);
    drop(spool);
    assert!(numbers(&open(&config(dir.path()))).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_holds_the_line_and_retries_with_backoff() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    append_range(&spool, 0..6).await;
    let sink = Arc::new(Recorder::default());
    sink.fail_number.store(2, Ordering::SeqCst);
    sink.failing.store(true, Ordering::SeqCst);
    let replayer = Arc::new(
        Replayer::new(spool.clone(), Arc::clone(&sink)).with_backoff(Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
        }),
    );
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = {
        let (replayer, stop) = (Arc::clone(&replayer), Arc::clone(&stop));
        tokio::spawn(async move { replayer.run(stop.notified()).await })
    };
    eventually("five attempts at record 2", || {
        replayer.counters().snapshot().transient_failures >= 5
    })
    .await;
    // Records 0 and 1 are acknowledged; 2 and everything after it wait.
    assert_eq!(spool.stats().entries, 4);
    assert_eq!(
        spool.stats().oldest_received_at,
        Some(webhook(2).received_at)
    );
    sink.failing.store(false, Ordering::SeqCst);
    eventually("the spool is empty", || spool.stats().entries == 0).await;
    stop.notify_one();
    task.await.unwrap().unwrap();

    let seen = sink.seen.lock().unwrap();
    let order: Vec<u64> = seen.iter().map(|s| s.0).collect();
    let attempts = order.iter().filter(|&&n| n == 2).count();
    assert!(attempts >= 6);
    let mut expected = vec![0, 1];
    expected.extend(std::iter::repeat_n(2, attempts));
    expected.extend([3, 4, 5]);
    assert_eq!(order, expected, "nothing overtakes the failing record");
    // Delays between attempts at record 2: 100, 200, 400, then capped at 400 ms.
    let times: Vec<_> = seen.iter().filter(|s| s.0 == 2).map(|s| s.2).collect();
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert_eq!(&gaps[..4], &[100, 200, 400, 400]);
    assert_eq!(
        replayer.counters().snapshot().transient_failures,
        attempts as u64 - 1
    );
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_replay_replays_only_the_rest() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    append_range(&spool, 0..8).await;
    let sink = Arc::new(Recorder::default());
    sink.fail_number.store(5, Ordering::SeqCst);
    sink.failing.store(true, Ordering::SeqCst);
    let replayer = Replayer::new(spool.clone(), Arc::clone(&sink)).with_backoff(Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(1),
    });
    let counters = replayer.counters();
    // Shut down as soon as record 5 has failed once.
    replayer
        .run(eventually("record 5 failed", || {
            counters.snapshot().transient_failures > 0
        }))
        .await
        .unwrap();
    drop(replayer);
    drop(spool);

    let spool = open(&config(dir.path()));
    let sink = Arc::new(Recorder::default());
    Replayer::new(spool.clone(), Arc::clone(&sink))
        .drain()
        .await
        .unwrap();
    let order: Vec<u64> = sink.seen.lock().unwrap().iter().map(|s| s.0).collect();
    assert_eq!(order, vec![5, 6, 7]);
}

#[tokio::test]
async fn the_replayer_wakes_up_for_new_records() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    let sink = Arc::new(Recorder::default());
    let replayer = Arc::new(Replayer::new(spool.clone(), Arc::clone(&sink)));
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = {
        let (replayer, stop) = (Arc::clone(&replayer), Arc::clone(&stop));
        tokio::spawn(async move { replayer.run(stop.notified()).await })
    };
    for n in 0..3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        spool.append(&webhook(n)).await.unwrap();
        eventually("the record is replayed and acknowledged", || {
            sink.seen.lock().unwrap().len() as u64 == n + 1 && spool.stats().entries == 0
        })
        .await;
    }
    stop.notify_one();
    task.await.unwrap().unwrap();
    assert_eq!(spool.stats().entries, 0);
}

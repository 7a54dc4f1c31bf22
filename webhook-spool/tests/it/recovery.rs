//! Opening a spool after a crash: what was durable comes back whole and in
//! order; a torn, cut or corrupted tail is cut off and never misread; a
//! newer format stops `open`; the directory is locked and private.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use tempfile::TempDir;
use webhook_spool::{DecodeError, Spool, SpoolConfig, SpoolError, SpooledWebhook};

use crate::{
    HEADER_LEN, VERSION, append_range, config, frame, frame_len, numbers, open, read_all,
    segment_files, webhook,
};

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

/// Writes `n` records, closes the spool and returns the last segment's path.
async fn spool_with(dir: &Path, n: u64) -> PathBuf {
    let spool = open(&SpoolConfig::new(dir, 1 << 20));
    append_range(&spool, 0..n).await;
    drop(spool);
    segment_files(dir).pop().unwrap()
}

#[tokio::test]
async fn a_torn_last_record_is_cut_off_at_every_possible_length() {
    let frame = frame(&webhook(3));
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
    assert_eq!(recovery.truncated_bytes, frame_len(&webhook(2)) - 5);
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
    let mut frame = frame(&webhook(1));
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
            assert_eq!(source, DecodeError::UnsupportedVersion(VERSION + 1));
        }
        other => panic!("expected Undecodable, got {other:?}"),
    }
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
async fn an_existing_directory_others_can_reach_is_made_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new().unwrap();
    let spool_dir = dir.path().join("spool");
    fs::create_dir(&spool_dir).unwrap();
    fs::set_permissions(&spool_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let (spool, recovery) = Spool::open(&config(&spool_dir)).unwrap();
    assert_eq!(recovery.tightened_from, Some(0o755));
    let mode = fs::metadata(&spool_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    drop(spool);
    let (_spool, recovery) = Spool::open(&config(&spool_dir)).unwrap();
    assert_eq!(recovery.tightened_from, None, "already private");
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

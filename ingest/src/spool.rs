//! A durable local spool for webhooks that arrive while the database path is
//! down.
//!
//! TradingView does not queue alerts: it retries a 5xx three times within
//! about 20 seconds and then the alert is gone. When `public.ingest_signal`
//! cannot be reached, the edge appends the webhook here instead and answers
//! 202; the [`Replayer`] feeds the spool to the database once it is back.
//!
//! # Guarantees
//!
//! - **Durable before answered.** [`Spool::append`] returns only after the
//!   record's bytes are on disk (`fdatasync` of the segment file, and of the
//!   directory when the append created a segment), so a 202 sent after it
//!   survives a crash, `kill -9` or power loss.
//! - **Torn writes are never misread.** Each record carries its length and a
//!   CRC-32 (the format is described in `spool/record.rs`). [`Spool::open`]
//!   scans what is left to replay; a cut-short or garbage frame ends the
//!   scan and the file is truncated there (no client was answered for it:
//!   its append had not returned). A record written by a newer format
//!   version stops `open` with an error instead of being guessed at. A
//!   record complete on disk whose append had not returned yet when the
//!   process died is kept and replayed; the sender's retry of it then meets
//!   the database's 30 s dedup, since the replay keeps the receive time.
//! - **Arrival order.** Records come back in the order they reached the
//!   writer thread, which serialises all writes: one request task's appends
//!   in the order it made them.
//! - **Acknowledged means gone.** [`Spool::ack`] moves a cursor that is
//!   fsync'd before `ack` returns (two checksummed slots written in turn, so
//!   a torn cursor write falls back to the previous one), then deletes the
//!   segment files the cursor has passed. After a restart only records not
//!   yet acknowledged come back. A crash between the database commit and the
//!   ack replays that one record again; its delivery id makes
//!   `public.ingest_signal` answer `duplicate` rather than store it twice.
//! - **Bounded.** Unreplayed records may take at most
//!   [`SpoolConfig::max_bytes`]; an append past that fails with
//!   [`SpoolError::Full`], and the edge answers 503 so TradingView retries.
//!   On disk the spool takes at most that plus one segment of records already
//!   replayed, which are deleted with their segment.
//! - **One process per directory.** `open` takes an exclusive lock on the
//!   directory; a second ingest pointed at it gets [`SpoolError::Locked`].
//! - **Private.** Records hold webhook tokens (bearer secrets): the directory
//!   is created `0700` and its files `0600`.
//!
//! # Concurrency and group commit
//!
//! Many request tasks append at once. They hand their encoded record to one
//! writer thread, which takes every record waiting at that moment, writes
//! them with one `write` and makes them durable with one `fdatasync`, then
//! answers them all (group commit): under load the cost of an fsync is shared
//! by every request that arrived while the previous one ran, without adding
//! any delay when there is no load. [`SpoolConfig::max_batch`] caps a batch;
//! `1` turns group commit off (the `scripts/bench spool` comparison).
//! After a failed write or fsync the writer stops accepting appends
//! ([`SpoolError::Poisoned`]): after a failed fsync the kernel may have
//! dropped the dirty pages, so what is on disk is only known again after
//! `open` has scanned it.
//!
//! # Reading
//!
//! One consumer (the [`Replayer`]) reads with [`Spool::read`] from the
//! oldest unacknowledged record and acknowledges in order. [`Spool::stats`]
//! gives the depth and the oldest record's receive time for `/health` and
//! `/metrics`, without touching the disk.
//!
//! The module knows nothing about HTTP or the database: the edge decides
//! when to spool (and, since tokens cannot be checked while the database is
//! down, how much one client address may spool: each record keeps
//! `client_ip` for that), and a [`ReplaySink`] decides what a replay means.

mod record;
mod replay;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, oneshot};

pub use record::{DecodeError, MAX_RECORD_BYTES, SpooledWebhook};
pub use replay::{
    Backoff, ReplayCounters, ReplayCounts, ReplayOutcome, ReplaySink, Replayer, Transient,
};

use record::{Frame, next_frame};

/// Default size at which a new segment file is started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 << 20;
/// Default cap on the records one fsync makes durable.
pub const DEFAULT_MAX_BATCH: usize = 256;

const SEGMENT_SUFFIX: &str = ".spool";
const CURSOR_FILE: &str = "cursor";
const LOCK_FILE: &str = "lock";

/// Where the spool lives and how large it may grow.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    /// The spool directory (`INGEST_SPOOL_DIR`); created if missing. It must
    /// be on a local filesystem that honours fsync, and not shared with
    /// another ingest.
    pub dir: PathBuf,
    /// Most bytes of unreplayed records (`INGEST_SPOOL_MAX_BYTES`); appends
    /// beyond it fail with [`SpoolError::Full`].
    pub max_bytes: u64,
    /// A new segment file is started when the current one would grow past
    /// this; replayed segments are deleted whole.
    pub segment_bytes: u64,
    /// Most appends made durable by one fsync; 1 disables group commit.
    pub max_batch: usize,
}

impl SpoolConfig {
    /// A spool in `dir` holding at most `max_bytes` of unreplayed records,
    /// with the default segment size and group commit.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_bytes,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// What can go wrong with the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The unreplayed records already take `max_bytes`: answer 503 so the
    /// sender retries later.
    #[error("the spool is full: {max_bytes} bytes of webhooks wait for replay")]
    Full { max_bytes: u64 },
    /// This one record can never fit (larger than [`MAX_RECORD_BYTES`] or the
    /// whole spool).
    #[error("a webhook of {len} bytes is too large to spool")]
    TooLarge { len: usize },
    /// Another process holds the spool directory.
    #[error("spool directory {} is in use by another process", dir.display())]
    Locked { dir: PathBuf },
    /// A filesystem call failed.
    #[error("spool: failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A record whose checksum matches could not be decoded: written by a
    /// newer ingest, or not by ingest at all. Nothing is guessed; move the
    /// directory aside to start empty.
    #[error("spool record at {}:{offset} cannot be read", path.display())]
    Undecodable {
        path: PathBuf,
        offset: u64,
        #[source]
        source: DecodeError,
    },
    /// An earlier write or fsync failed; nothing more is appended until ingest
    /// restarts and [`Spool::open`] has checked the files again.
    #[error("the spool stopped accepting webhooks after a failed write; restart ingest")]
    Poisoned,
    /// The writer thread is gone (it panicked).
    #[error("the spool's writer thread has stopped")]
    Closed,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolError + use<> {
    let path = path.to_owned();
    move |source| SpoolError::Io {
        action,
        path,
        source,
    }
}

/// A place in the spool: a segment and a byte offset in it. Positions order
/// like the records they point at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    segment: u64,
    offset: u64,
}

/// A record read back for replay, and where it ends (for [`Spool::ack`]).
#[derive(Debug)]
pub struct SpoolEntry {
    /// The webhook as it was appended.
    pub webhook: SpooledWebhook,
    /// Counts records since this process opened the spool; acknowledging an
    /// entry acknowledges every earlier one too.
    ordinal: u64,
    end: Position,
}

/// Depth and age of the spool, for `/health` and `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records appended and not yet acknowledged.
    pub entries: u64,
    /// Their size on disk, frames included.
    pub bytes: u64,
    /// The cap on `bytes`.
    pub max_bytes: u64,
    /// When the oldest of them was received; `None` when the spool is empty.
    pub oldest_received_at: Option<DateTime<Utc>>,
    /// Appends made durable since this process opened the spool.
    pub appended_total: u64,
    /// Appends refused because the spool was full, since open.
    pub full_total: u64,
}

impl SpoolStats {
    /// How long the oldest unreplayed record has waited, at `now`.
    pub fn oldest_age(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        self.oldest_received_at.map(|t| now - t)
    }
}

/// What `open` found and repaired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records waiting for replay.
    pub entries: u64,
    /// Bytes of torn or garbage frames cut off the segment files.
    pub truncated_bytes: u64,
    /// Segment files deleted because everything in them had been replayed.
    pub deleted_segments: u64,
}

/// The spool: a cheap handle, clone it into every request task.
#[derive(Clone, Debug)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None` only while dropping.
    commands: Option<mpsc::Sender<Command>>,
    writer: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Drop for Inner {
    /// Closes the queue and waits for the writer thread, which finishes the
    /// batch in hand (at most one fsync) and releases the directory lock: a
    /// spool reopened after the last handle is dropped finds it free.
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// What the writer thread publishes to readers and `stats`.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    view: Mutex<View>,
    appended: Notify,
    appended_total: AtomicU64,
    full_total: AtomicU64,
}

#[derive(Clone, Debug)]
struct View {
    /// The first unacknowledged record.
    cursor: Position,
    cursor_ordinal: u64,
    /// Just past the last durable record.
    end: Position,
    end_ordinal: u64,
    /// Segment numbers on disk from the cursor's on, oldest first.
    segments: VecDeque<u64>,
    unacked_bytes: u64,
    oldest: Option<DateTime<Utc>>,
}

impl Shared {
    fn view(&self) -> MutexGuard<'_, View> {
        // A panic while holding the lock cannot leave the view half-updated
        // (every update is a plain assignment of computed values).
        self.view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where the writer answers one command.
type Reply = oneshot::Sender<Result<(), SpoolError>>;

enum Command {
    Append {
        frame: Vec<u8>,
        received_at: DateTime<Utc>,
        reply: Reply,
    },
    Ack {
        ordinal: u64,
        end: Position,
        reply: Reply,
    },
}

impl Spool {
    /// Opens (or creates) the spool in `config.dir`, recovers from whatever a
    /// crash left behind, and starts the writer thread. Blocking: call it at
    /// start-up, before serving.
    pub fn open(config: &SpoolConfig) -> Result<(Self, Recovery), SpoolError> {
        let (writer, recovery) = Writer::open(config)?;
        let shared = Arc::clone(&writer.shared);
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("ingest-spool".into())
            .spawn(move || writer.run(&rx))
            .map_err(io_err("start the writer thread for", &config.dir))?;
        Ok((
            Self {
                inner: Arc::new(Inner {
                    commands: Some(tx),
                    writer: Some(writer),
                    shared,
                }),
            },
            recovery,
        ))
    }

    /// Appends `webhook` and returns once it is durable. Fails with
    /// [`SpoolError::Full`] when the spool is at its cap. If the caller's
    /// future is dropped while waiting, the record is still written (and
    /// replayed).
    pub async fn append(&self, webhook: &SpooledWebhook) -> Result<(), SpoolError> {
        let frame = webhook.encode_frame();
        if frame.len() > record::HEADER_LEN + MAX_RECORD_BYTES
            || frame.len() as u64 > self.inner.shared.max_bytes
        {
            return Err(SpoolError::TooLarge { len: frame.len() });
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Append {
            frame,
            received_at: webhook.received_at,
            reply,
        })?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    /// Up to `max` records from the oldest unacknowledged one, in arrival
    /// order. Reading again without acknowledging returns the same records.
    pub async fn read(&self, max: usize) -> Result<Vec<SpoolEntry>, SpoolError> {
        let shared = Arc::clone(&self.inner.shared);
        tokio::task::spawn_blocking(move || read_entries(&shared, max))
            .await
            .map_err(|_| SpoolError::Closed)?
    }

    /// Acknowledges `entry` and every record before it: durable before this
    /// returns; they will not be read again, also after a restart.
    pub async fn ack(&self, entry: &SpoolEntry) -> Result<(), SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Ack {
            ordinal: entry.ordinal,
            end: entry.end,
            reply,
        })?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    /// Depth, size and age of the oldest record; no I/O.
    pub fn stats(&self) -> SpoolStats {
        let shared = &self.inner.shared;
        let view = shared.view();
        SpoolStats {
            entries: view.end_ordinal - view.cursor_ordinal,
            bytes: view.unacked_bytes,
            max_bytes: shared.max_bytes,
            oldest_received_at: view.oldest,
            appended_total: shared.appended_total.load(Ordering::Relaxed),
            full_total: shared.full_total.load(Ordering::Relaxed),
        }
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// Resolves after the next successful append (or at once if one happened
    /// since the last call): how the replayer sleeps while the spool is empty.
    pub(crate) async fn appended(&self) {
        self.inner.shared.appended.notified().await;
    }

    fn send(&self, command: Command) -> Result<(), SpoolError> {
        self.inner
            .commands
            .as_ref()
            .ok_or(SpoolError::Closed)?
            .send(command)
            .map_err(|_| SpoolError::Closed)
    }
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}{SEGMENT_SUFFIX}"))
}

/// Reads up to `max` durable records from the cursor on. Only the consumer
/// calls this; acknowledged segments it could be reading are deleted only by
/// its own later `ack`.
fn read_entries(shared: &Shared, max: usize) -> Result<Vec<SpoolEntry>, SpoolError> {
    let view = shared.view().clone();
    let mut entries = Vec::new();
    let mut ordinal = view.cursor_ordinal;
    let mut at = view.cursor;
    for &segment in view.segments.iter().filter(|&&s| s >= view.cursor.segment) {
        if entries.len() >= max || ordinal >= view.end_ordinal {
            break;
        }
        let path = segment_path(&shared.dir, segment);
        let mut offset = if segment == at.segment { at.offset } else { 0 };
        // Completed segments never change; the last one only up to `end`.
        let limit = if segment == view.end.segment {
            view.end.offset.saturating_sub(offset)
        } else {
            u64::MAX
        };
        let mut file = File::open(&path).map_err(io_err("open", &path))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(io_err("seek in", &path))?;
        // Frame by frame, so a batch costs what it reads, not the segment.
        let mut reader = BufReader::new(file.take(limit));
        let mut frame = Vec::new();
        while entries.len() < max && ordinal < view.end_ordinal {
            let bad = |what: &str| SpoolError::Io {
                action: "read a durable record from",
                path: path.clone(),
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{what} at offset {offset}"),
                ),
            };
            frame.clear();
            frame.resize(record::HEADER_LEN, 0);
            match read_full(&mut reader, &mut frame).map_err(io_err("read", &path))? {
                0 => break,
                n if n < record::HEADER_LEN => return Err(bad("torn frame header")),
                _ => {}
            }
            let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
            if len > MAX_RECORD_BYTES {
                return Err(bad("frame length out of bounds"));
            }
            frame.resize(record::HEADER_LEN + len, 0);
            if read_full(&mut reader, &mut frame[record::HEADER_LEN..])
                .map_err(io_err("read", &path))?
                < len
            {
                return Err(bad("torn frame"));
            }
            let Frame::Complete { payload, len } = next_frame(&frame) else {
                return Err(bad("bad frame"));
            };
            let webhook = SpooledWebhook::decode_payload(payload).map_err(|source| {
                SpoolError::Undecodable {
                    path: path.clone(),
                    offset,
                    source,
                }
            })?;
            offset += len as u64;
            at = Position { segment, offset };
            entries.push(SpoolEntry {
                webhook,
                ordinal,
                end: at,
            });
            ordinal += 1;
        }
    }
    Ok(entries)
}

/// Fills `buf` from `reader` as far as it goes; returns how many bytes it
/// read (less than `buf.len()` only at the end of the input).
fn read_full(reader: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The segment being appended to.
struct Active {
    segment: u64,
    file: File,
    len: u64,
}

/// Owns every file handle and every change to the directory; runs on its own
/// thread.
struct Writer {
    dir: PathBuf,
    dir_handle: File,
    segment_bytes: u64,
    max_batch: usize,
    active: Option<Active>,
    cursor_file: CursorFile,
    next_segment: u64,
    poisoned: bool,
    /// The writer's copy of the view; published to `shared` after each batch.
    view: View,
    shared: Arc<Shared>,
    _lock: File,
}

impl Writer {
    #[expect(
        clippy::too_many_lines,
        reason = "recovery reads best as one sequence of steps"
    )]
    fn open(config: &SpoolConfig) -> Result<(Self, Recovery), SpoolError> {
        let dir = config.dir.clone();
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io_err("create", &dir))?;
            // The new directory's own name must survive a power loss too, or
            // every record in it could vanish with it.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)
                    .and_then(|p| p.sync_all())
                    .map_err(io_err("fsync", parent))?;
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked { dir }),
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }
        let dir_handle = File::open(&dir).map_err(io_err("open", &dir))?;
        let (cursor_file, stored_cursor) = CursorFile::open(&dir, &dir_handle)?;

        let mut segments = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
                continue;
            };
            if stem.len() == 20
                && stem.bytes().all(|b| b.is_ascii_digit())
                && let Ok(n) = stem.parse::<u64>()
            {
                segments.push(n);
            }
        }
        segments.sort_unstable();

        let mut recovery = Recovery::default();
        let cursor = stored_cursor.unwrap_or(Position {
            segment: segments.first().copied().unwrap_or(0),
            offset: 0,
        });
        let next_segment = segments
            .last()
            .copied()
            .unwrap_or(0)
            .max(cursor.segment)
            .saturating_add(1);

        let mut view = View {
            cursor,
            cursor_ordinal: 0,
            end: cursor,
            end_ordinal: 0,
            segments: VecDeque::new(),
            unacked_bytes: 0,
            oldest: None,
        };
        let mut deleted_any = false;
        let last = segments.last().copied();
        for segment in segments {
            let path = segment_path(&dir, segment);
            if segment < cursor.segment {
                fs::remove_file(&path).map_err(io_err("delete", &path))?;
                recovery.deleted_segments += 1;
                deleted_any = true;
                continue;
            }
            let data = fs::read(&path).map_err(io_err("read", &path))?;
            let start = if segment == cursor.segment {
                usize::try_from(cursor.offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len())
            } else {
                0
            };
            let mut pos = start;
            loop {
                match next_frame(&data[pos..]) {
                    Frame::End => break,
                    Frame::Complete { payload, len } => {
                        let webhook =
                            SpooledWebhook::decode_payload(payload).map_err(|source| {
                                SpoolError::Undecodable {
                                    path: path.clone(),
                                    offset: pos as u64,
                                    source,
                                }
                            })?;
                        view.oldest.get_or_insert(webhook.received_at);
                        view.end_ordinal += 1;
                        view.unacked_bytes += len as u64;
                        pos += len;
                    }
                    Frame::Bad => {
                        // A torn tail (the append that wrote it never
                        // returned) or garbage: cut it off, never read it.
                        let cut = data.len() - pos;
                        if Some(segment) != last {
                            tracing::warn!(
                                segment,
                                offset = pos,
                                bytes = cut,
                                "spool segment damaged before its end; dropping the rest of it"
                            );
                        }
                        let file = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_err("open", &path))?;
                        file.set_len(pos as u64)
                            .map_err(io_err("truncate", &path))?;
                        file.sync_all().map_err(io_err("fsync", &path))?;
                        recovery.truncated_bytes += cut as u64;
                        break;
                    }
                }
            }
            view.segments.push_back(segment);
            view.end = Position {
                segment,
                offset: pos as u64,
            };
        }
        if deleted_any {
            dir_handle.sync_all().map_err(io_err("fsync", &dir))?;
        }
        recovery.entries = view.end_ordinal;

        // Keep appending to the last segment; `end` is its length now.
        let active = match view.segments.back() {
            Some(&segment) => {
                let path = segment_path(&dir, segment);
                let file = OpenOptions::new()
                    .append(true)
                    .read(true)
                    .open(&path)
                    .map_err(io_err("open", &path))?;
                Some(Active {
                    segment,
                    file,
                    len: view.end.offset,
                })
            }
            None => None,
        };

        let shared = Arc::new(Shared {
            dir: dir.clone(),
            max_bytes: config.max_bytes,
            view: Mutex::new(view.clone()),
            appended: Notify::new(),
            appended_total: AtomicU64::new(0),
            full_total: AtomicU64::new(0),
        });
        let mut writer = Self {
            dir,
            dir_handle,
            segment_bytes: config.segment_bytes.max(1),
            max_batch: config.max_batch.max(1),
            active,
            cursor_file,
            next_segment,
            poisoned: false,
            view,
            shared,
            _lock: lock,
        };
        if writer.view.end_ordinal == 0 {
            // Everything was replayed: start from a clean directory.
            recovery.deleted_segments += writer.delete_all_segments()?;
        } else {
            // Wake the replayer: there is work from before the restart.
            writer.shared.appended.notify_one();
        }
        Ok((writer, recovery))
    }

    fn run(mut self, commands: &mpsc::Receiver<Command>) {
        while let Ok(first) = commands.recv() {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.handle(batch);
        }
    }

    fn handle(&mut self, batch: Vec<Command>) {
        let mut appends = Vec::new();
        let mut acks = Vec::new();
        for command in batch {
            match command {
                Command::Append {
                    frame,
                    received_at,
                    reply,
                } => appends.push((frame, received_at, reply)),
                Command::Ack {
                    ordinal,
                    end,
                    reply,
                } => acks.push((ordinal, end, reply)),
            }
        }
        if !appends.is_empty() {
            self.append_batch(appends);
        }
        if !acks.is_empty() {
            let target = acks
                .iter()
                .map(|&(ordinal, end, _)| (ordinal, end))
                .max_by_key(|&(ordinal, _)| ordinal);
            let result = match target {
                Some((ordinal, end)) => self.ack(ordinal, end),
                None => Ok(()),
            };
            // Publish before answering: an acknowledged record is gone from
            // `stats` and `read` once `ack` returns.
            *self.shared.view() = self.view.clone();
            let mut replies = acks.into_iter().map(|(_, _, reply)| reply);
            match result {
                Ok(()) => replies.for_each(|reply| {
                    let _ = reply.send(Ok(()));
                }),
                Err(e) => {
                    // The first waiter gets the cause, the others that the
                    // writer gave up.
                    if let Some(reply) = replies.next() {
                        let _ = reply.send(Err(e));
                    }
                    replies.for_each(|reply| {
                        let _ = reply.send(Err(SpoolError::Poisoned));
                    });
                }
            }
        }
    }

    /// Writes the batch's records in order: each run that fits the current
    /// segment with one write and one fdatasync; then answers every append.
    fn append_batch(&mut self, appends: Vec<(Vec<u8>, DateTime<Utc>, Reply)>) {
        let mut durable = Vec::new();
        let mut pending: Vec<Reply> = Vec::new();
        let mut buf = Vec::new();
        let mut first_error: Option<SpoolError> = None;
        let max_bytes = self.shared.max_bytes;

        for (frame, received_at, reply) in appends {
            if self.poisoned || first_error.is_some() {
                let _ = reply.send(Err(SpoolError::Poisoned));
                continue;
            }
            let len = frame.len() as u64;
            // `buf` holds this batch's records not yet flushed; flushed ones
            // are already counted in `unacked_bytes`.
            if self.view.unacked_bytes + buf.len() as u64 + len > max_bytes {
                self.shared.full_total.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Err(SpoolError::Full { max_bytes }));
                continue;
            }
            let active_len = self.active.as_ref().map(|a| a.len);
            let needs_segment = match active_len {
                None => true,
                Some(l) => {
                    let written = l + buf.len() as u64;
                    written > 0 && written + len > self.segment_bytes
                }
            };
            if needs_segment {
                if let Err(e) = self.flush(&mut buf, &mut pending, &mut durable) {
                    first_error = Some(e);
                    let _ = reply.send(Err(SpoolError::Poisoned));
                    continue;
                }
                if let Err(e) = self.new_segment() {
                    self.poisoned = true;
                    first_error = Some(e);
                    let _ = reply.send(Err(SpoolError::Poisoned));
                    continue;
                }
            }
            if self.view.end_ordinal + pending.len() as u64 == self.view.cursor_ordinal
                && self.view.oldest.is_none()
            {
                self.view.oldest = Some(received_at);
            }
            buf.extend_from_slice(&frame);
            pending.push(reply);
        }
        if first_error.is_none()
            && let Err(e) = self.flush(&mut buf, &mut pending, &mut durable)
        {
            first_error = Some(e);
        }
        let ok = durable.len() as u64;
        if ok > 0 {
            self.shared.appended_total.fetch_add(ok, Ordering::Relaxed);
        }
        // Publish the new end before anyone learns their record is durable,
        // so a reader woken by an answered append sees it.
        *self.shared.view() = self.view.clone();
        for reply in durable {
            let _ = reply.send(Ok(()));
        }
        if let Some(e) = first_error {
            let mut rest = pending.into_iter();
            if let Some(reply) = rest.next() {
                let _ = reply.send(Err(e));
            }
            for reply in rest {
                let _ = reply.send(Err(SpoolError::Poisoned));
            }
        }
        if ok > 0 {
            self.shared.appended.notify_one();
        }
    }

    /// Writes `buf` to the active segment and fdatasyncs it; on success moves
    /// `pending` to `durable` and advances the end.
    fn flush(
        &mut self,
        buf: &mut Vec<u8>,
        pending: &mut Vec<Reply>,
        durable: &mut Vec<Reply>,
    ) -> Result<(), SpoolError> {
        if buf.is_empty() {
            return Ok(());
        }
        let active = self
            .active
            .as_mut()
            .expect("a segment is open whenever records are buffered");
        let path = segment_path(&self.dir, active.segment);
        let result = active
            .file
            .write_all(buf)
            .map_err(io_err("write", &path))
            .and_then(|()| active.file.sync_data().map_err(io_err("fsync", &path)));
        if let Err(e) = result {
            self.poisoned = true;
            // Best effort: take the partial write back so only a complete
            // prefix remains; `open` checks it all again anyway.
            let _ = active.file.set_len(active.len);
            buf.clear();
            return Err(e);
        }
        active.len += buf.len() as u64;
        self.view.unacked_bytes += buf.len() as u64;
        self.view.end_ordinal += pending.len() as u64;
        self.view.end = Position {
            segment: active.segment,
            offset: active.len,
        };
        buf.clear();
        durable.append(pending);
        Ok(())
    }

    /// Starts the next segment file and makes its name durable.
    fn new_segment(&mut self) -> Result<(), SpoolError> {
        let segment = self.next_segment;
        let path = segment_path(&self.dir, segment);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("create", &path))?;
        self.dir_handle
            .sync_all()
            .map_err(io_err("fsync", &self.dir))?;
        self.next_segment += 1;
        self.active = Some(Active {
            segment,
            file,
            len: 0,
        });
        self.view.segments.push_back(segment);
        if self.view.end_ordinal == self.view.cursor_ordinal {
            // Empty spool: the cursor and end move to the new segment's start.
            let start = Position { segment, offset: 0 };
            self.view.cursor = start;
            self.view.end = start;
        }
        Ok(())
    }

    fn ack(&mut self, ordinal: u64, end: Position) -> Result<(), SpoolError> {
        if ordinal < self.view.cursor_ordinal || ordinal >= self.view.end_ordinal {
            return Ok(()); // Already acknowledged (or not from this process).
        }
        let acked_bytes = if end.segment == self.view.cursor.segment {
            end.offset - self.view.cursor.offset
        } else {
            // Bytes left in the cursor's segment, whole segments between,
            // and the start of `end`'s.
            let mut bytes = 0;
            for &segment in &self.view.segments {
                if segment < self.view.cursor.segment || segment > end.segment {
                    continue;
                }
                let from = if segment == self.view.cursor.segment {
                    self.view.cursor.offset
                } else {
                    0
                };
                let to = if segment == end.segment {
                    end.offset
                } else {
                    let path = segment_path(&self.dir, segment);
                    fs::metadata(&path).map_err(io_err("stat", &path))?.len()
                };
                bytes += to - from;
            }
            bytes
        };
        self.cursor_file.write(end)?;
        self.view.cursor = end;
        self.view.cursor_ordinal = ordinal + 1;
        self.view.unacked_bytes = self.view.unacked_bytes.saturating_sub(acked_bytes);

        if self.view.cursor_ordinal == self.view.end_ordinal {
            self.view.oldest = None;
            // Everything replayed: delete every segment, the active one too;
            // the next append starts a fresh one.
            self.delete_all_segments()?;
        } else {
            let mut deleted = false;
            while let Some(&segment) = self.view.segments.front() {
                if segment >= end.segment {
                    break;
                }
                let path = segment_path(&self.dir, segment);
                fs::remove_file(&path).map_err(io_err("delete", &path))?;
                self.view.segments.pop_front();
                deleted = true;
            }
            if deleted {
                self.dir_handle
                    .sync_all()
                    .map_err(io_err("fsync", &self.dir))?;
            }
            self.view.oldest = Some(self.received_at_of_cursor()?);
        }
        Ok(())
    }

    /// Deletes every segment file; the cursor (already durable) stays where
    /// it is, and new segments are numbered after it.
    fn delete_all_segments(&mut self) -> Result<u64, SpoolError> {
        self.active = None;
        let mut deleted = 0;
        while let Some(segment) = self.view.segments.pop_front() {
            let path = segment_path(&self.dir, segment);
            fs::remove_file(&path).map_err(io_err("delete", &path))?;
            deleted += 1;
        }
        if deleted > 0 {
            self.dir_handle
                .sync_all()
                .map_err(io_err("fsync", &self.dir))?;
        }
        Ok(deleted)
    }

    /// The receive time of the record at the cursor (the oldest unreplayed
    /// one), read from disk after an ack.
    fn received_at_of_cursor(&self) -> Result<DateTime<Utc>, SpoolError> {
        let mut at = self.view.cursor;
        let from = at.segment;
        // The cursor may sit at the very end of a completed segment.
        for &segment in self.view.segments.iter().filter(|&&s| s >= from) {
            let path = segment_path(&self.dir, segment);
            let file = File::open(&path).map_err(io_err("open", &path))?;
            let offset = if segment == at.segment { at.offset } else { 0 };
            let mut header = [0_u8; record::HEADER_LEN];
            match file.read_exact_at(&mut header, offset) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    at = Position {
                        segment: segment + 1,
                        offset: 0,
                    };
                    continue;
                }
                Err(e) => return Err(io_err("read", &path)(e)),
            }
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let mut frame = vec![0_u8; record::HEADER_LEN + len.min(MAX_RECORD_BYTES)];
            file.read_exact_at(&mut frame, offset)
                .map_err(io_err("read", &path))?;
            return match next_frame(&frame) {
                Frame::Complete { payload, .. } => SpooledWebhook::decode_payload(payload)
                    .map(|w| w.received_at)
                    .map_err(|source| SpoolError::Undecodable {
                        path,
                        offset,
                        source,
                    }),
                Frame::End | Frame::Bad => Err(io_err("read", &path)(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad frame at offset {offset}"),
                ))),
            };
        }
        Err(io_err("find the oldest record in", &self.dir)(
            io::Error::new(io::ErrorKind::NotFound, "no record after the cursor"),
        ))
    }
}

/// The durable cursor: two 32-byte slots, each `generation:u64 segment:u64
/// offset:u64 crc:u32 magic:u32`, written in turn with one fdatasync. A torn
/// write spoils only the slot being written; `open` takes the valid slot with
/// the highest generation.
struct CursorFile {
    file: File,
    path: PathBuf,
    generation: u64,
}

const CURSOR_SLOT: usize = 32;
const CURSOR_MAGIC: u32 = 0x5350_4331; // "SPC1"

impl CursorFile {
    fn open(dir: &Path, dir_handle: &File) -> Result<(Self, Option<Position>), SpoolError> {
        let path = dir.join(CURSOR_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open", &path))?;
        if !existed {
            file.sync_all().map_err(io_err("fsync", &path))?;
            dir_handle.sync_all().map_err(io_err("fsync", dir))?;
        }
        let mut bytes = Vec::new();
        (&file)
            .read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        let best = bytes
            .chunks_exact(CURSOR_SLOT)
            .take(2)
            .filter_map(Self::parse_slot)
            .max_by_key(|&(generation, _)| generation);
        let (generation, position) = match best {
            Some((generation, position)) => (generation, Some(position)),
            None => (0, None),
        };
        Ok((
            Self {
                file,
                path,
                generation,
            },
            position,
        ))
    }

    fn parse_slot(slot: &[u8]) -> Option<(u64, Position)> {
        let word = |i: usize| u64::from_le_bytes(slot[i..i + 8].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(slot[24..28].try_into().expect("4 bytes"));
        let magic = u32::from_le_bytes(slot[28..32].try_into().expect("4 bytes"));
        (magic == CURSOR_MAGIC && crc32fast::hash(&slot[..24]) == crc).then(|| {
            (
                word(0),
                Position {
                    segment: word(8),
                    offset: word(16),
                },
            )
        })
    }

    fn write(&mut self, position: Position) -> Result<(), SpoolError> {
        let generation = self.generation + 1;
        let mut slot = [0_u8; CURSOR_SLOT];
        slot[0..8].copy_from_slice(&generation.to_le_bytes());
        slot[8..16].copy_from_slice(&position.segment.to_le_bytes());
        slot[16..24].copy_from_slice(&position.offset.to_le_bytes());
        let crc = crc32fast::hash(&slot[..24]);
        slot[24..28].copy_from_slice(&crc.to_le_bytes());
        slot[28..32].copy_from_slice(&CURSOR_MAGIC.to_le_bytes());
        let at = (generation % 2) * CURSOR_SLOT as u64;
        self.file
            .write_all_at(&slot, at)
            .map_err(io_err("write", &self.path))?;
        self.file.sync_data().map_err(io_err("fsync", &self.path))?;
        self.generation = generation;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

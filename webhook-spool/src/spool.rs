//! [`Spool`]: the handle every request task clones.
//!
//! The handle never touches a file it writes: appends and acks go to the
//! writer thread as commands and come back as answers, so one thread decides
//! the order of everything on disk. What the writer has made durable it
//! publishes in a [`View`] behind a mutex; [`Spool::stats`] reads that
//! without I/O, and [`Spool::read`] reads records up to its end.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, oneshot};

use crate::error::{SpoolError, io_err};
use crate::record::{self, MAX_RECORD_BYTES, SpooledWebhook};
use crate::recovery::Recovery;
use crate::segment::{self, Position};
use crate::writer::Writer;

/// Default size at which a new segment file is started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 << 20;
/// Default cap on the records one fsync makes durable.
pub const DEFAULT_MAX_BATCH: usize = 256;

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
    /// Told how long each write and fsync took; none by default.
    pub on_sync: Option<SyncObserver>,
}

/// What one write and fsync of the writer made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// A group of appended records.
    Append,
    /// The replay cursor, after acknowledged records.
    Ack,
}

impl SyncKind {
    /// `append` or `ack`, for a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Ack => "ack",
        }
    }
}

/// Called by the writer thread after each write and fsync with how long it
/// took (failed ones too), for a histogram. Every append waits for one: a
/// disk that stalls (behind a database's checkpoint on the same disk, say)
/// shows here first. It runs on the writer thread, so it must be quick.
#[derive(Clone)]
pub struct SyncObserver(Arc<dyn Fn(SyncKind, Duration) + Send + Sync>);

impl SyncObserver {
    pub fn new(observe: impl Fn(SyncKind, Duration) + Send + Sync + 'static) -> Self {
        Self(Arc::new(observe))
    }

    pub(crate) fn observe(&self, kind: SyncKind, took: Duration) {
        (self.0)(kind, took);
    }
}

impl std::fmt::Debug for SyncObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncObserver")
    }
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
            on_sync: None,
        }
    }
}

/// A record read back for replay, and where it ends (for [`Spool::ack`]).
#[derive(Debug)]
pub struct SpoolEntry {
    /// The webhook as it was appended.
    pub webhook: SpooledWebhook,
    /// Counts records since this process opened the spool; acknowledging an
    /// entry acknowledges every earlier one too.
    pub(crate) ordinal: u64,
    pub(crate) end: Position,
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
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) max_bytes: u64,
    view: Mutex<View>,
    /// Signalled after each batch that made at least one append durable (and
    /// once by `open` when records wait from before a restart).
    pub(crate) appended: Notify,
    pub(crate) appended_total: AtomicU64,
    pub(crate) full_total: AtomicU64,
}

/// The durable state of the spool as the writer last published it.
#[derive(Clone, Debug)]
pub(crate) struct View {
    /// The first unacknowledged record.
    pub(crate) cursor: Position,
    pub(crate) cursor_ordinal: u64,
    /// Just past the last durable record.
    pub(crate) end: Position,
    pub(crate) end_ordinal: u64,
    /// Segment numbers on disk from the cursor's on, oldest first.
    pub(crate) segments: VecDeque<u64>,
    pub(crate) unacked_bytes: u64,
    pub(crate) oldest: Option<DateTime<Utc>>,
}

impl View {
    /// An empty spool whose next record is read from `cursor`.
    pub(crate) fn empty_at(cursor: Position) -> Self {
        Self {
            cursor,
            cursor_ordinal: 0,
            end: cursor,
            end_ordinal: 0,
            segments: VecDeque::new(),
            unacked_bytes: 0,
            oldest: None,
        }
    }
}

impl Shared {
    pub(crate) fn new(dir: PathBuf, max_bytes: u64, view: View) -> Self {
        Self {
            dir,
            max_bytes,
            view: Mutex::new(view),
            appended: Notify::new(),
            appended_total: AtomicU64::new(0),
            full_total: AtomicU64::new(0),
        }
    }

    pub(crate) fn view(&self) -> MutexGuard<'_, View> {
        // A panic while holding the lock cannot leave the view half-updated
        // (every update is a plain assignment of computed values).
        self.view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where the writer answers one command.
pub(crate) type Reply = oneshot::Sender<Result<(), SpoolError>>;

/// What a handle asks of the writer thread.
pub(crate) enum Command {
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
        tokio::task::spawn_blocking(move || {
            let view = shared.view().clone();
            segment::read_entries(&shared.dir, &view, max)
        })
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

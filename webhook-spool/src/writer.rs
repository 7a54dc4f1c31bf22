//! The writer thread: the one owner of every file handle and every change to
//! the spool directory.
//!
//! Request tasks send [`Command`]s; the thread takes every command waiting at
//! that moment (up to [`SpoolConfig::max_batch`](crate::SpoolConfig)) and
//! handles them as one batch: the batch's appends are written with one
//! `write` per segment they land in and made durable with one `fdatasync`
//! (group commit), then its acks move the cursor once, to the furthest
//! entry acknowledged. Nobody waits for a batch to fill: an idle spool
//! writes a lone append at once.
//!
//! Each batch ends by publishing the writer's [`View`] to the handles,
//! *before* anyone is answered, so a record is visible to `read` and `stats`
//! by the time its append returns and gone by the time its ack returns.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::cursor::CursorFile;
use crate::error::{SpoolError, io_err};
use crate::segment::{Position, segment_path};
use crate::spool::{Command, Reply, Shared, SyncKind, SyncObserver, View};

/// The segment being appended to.
pub(crate) struct Active {
    pub(crate) segment: u64,
    pub(crate) file: File,
    pub(crate) len: u64,
}

/// Owns every file handle and every change to the directory; runs on its own
/// thread. Built by [`Writer::open`] (in `recovery.rs`).
pub(crate) struct Writer {
    pub(crate) dir: PathBuf,
    pub(crate) dir_handle: File,
    pub(crate) segment_bytes: u64,
    pub(crate) max_batch: usize,
    pub(crate) on_sync: Option<SyncObserver>,
    pub(crate) active: Option<Active>,
    pub(crate) cursor_file: CursorFile,
    pub(crate) next_segment: u64,
    pub(crate) poisoned: bool,
    /// The writer's copy of the view; published to `shared` after each batch.
    pub(crate) view: View,
    pub(crate) shared: Arc<Shared>,
    /// Held for the writer's lifetime: the directory's exclusive lock.
    pub(crate) _lock: File,
}

/// One append of a batch: its frame, its receive time, who waits for it.
type Append = (Vec<u8>, DateTime<Utc>, Reply);

impl Writer {
    /// Handles commands in batches until every handle is dropped.
    pub(crate) fn run(mut self, commands: &mpsc::Receiver<Command>) {
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
            self.ack_batch(acks);
        }
    }

    /// Moves the cursor once, past the furthest entry any of `acks` names,
    /// then answers them all.
    fn ack_batch(&mut self, acks: Vec<(u64, Position, Reply)>) {
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
        let replies = acks.into_iter().map(|(_, _, reply)| reply);
        match result {
            Ok(()) => replies.for_each(|reply| {
                let _ = reply.send(Ok(()));
            }),
            Err(e) => answer_failed(replies, e),
        }
    }

    /// Writes the batch's records in order: each run that fits the current
    /// segment with one write and one fdatasync; then answers every append.
    fn append_batch(&mut self, appends: Vec<Append>) {
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
            if self.needs_segment(buf.len() as u64, len) {
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
        self.answer_appends(durable, pending, first_error);
    }

    /// Whether a record of `len` bytes must start a new segment: there is
    /// none yet, or the active one already holds something (on disk, or
    /// `buffered` bytes of this batch) and would grow past `segment_bytes`.
    fn needs_segment(&self, buffered: u64, len: u64) -> bool {
        match self.active.as_ref().map(|a| a.len) {
            None => true,
            Some(l) => {
                let written = l + buffered;
                written > 0 && written + len > self.segment_bytes
            }
        }
    }

    /// Publishes the new end, then tells each append how it went: `durable`
    /// ones succeeded; of the `pending` ones (not written when `error`
    /// struck), the first learns the cause and the rest that the writer gave
    /// up.
    fn answer_appends(
        &mut self,
        durable: Vec<Reply>,
        pending: Vec<Reply>,
        error: Option<SpoolError>,
    ) {
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
        if let Some(e) = error {
            answer_failed(pending, e);
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
        let started = Instant::now();
        let result = active
            .file
            .write_all(buf)
            .map_err(io_err("write", &path))
            .and_then(|()| active.file.sync_data().map_err(io_err("fsync", &path)));
        if let Some(on_sync) = &self.on_sync {
            on_sync.observe(SyncKind::Append, started.elapsed());
        }
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

    /// Deletes every segment file; the cursor (already durable) stays where
    /// it is, and new segments are numbered after it.
    pub(crate) fn delete_all_segments(&mut self) -> Result<u64, SpoolError> {
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
}

/// The first waiter gets the cause, the others that the writer gave up.
fn answer_failed(replies: impl IntoIterator<Item = Reply>, error: SpoolError) {
    let mut replies = replies.into_iter();
    if let Some(reply) = replies.next() {
        let _ = reply.send(Err(error));
    }
    for reply in replies {
        let _ = reply.send(Err(SpoolError::Poisoned));
    }
}

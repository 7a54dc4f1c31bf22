//! Opening a spool: what a crash left behind, made consistent again.
//!
//! [`Writer::open`] runs once, before the writer thread starts and before
//! ingest serves: it creates the directory if needed (or makes an existing
//! one private again, see [`Recovery::tightened_from`]), takes its exclusive
//! lock, reads the durable cursor, deletes segments the cursor has passed,
//! and scans every remaining record from the cursor on. The first frame that
//! is cut short or fails its checksum ends the scan of its segment, and the
//! file is truncated there: its append never returned, so no client was
//! answered for it. A frame whose checksum matches but which does not decode
//! (a newer format) stops `open` with [`SpoolError::Undecodable`] rather than
//! being skipped. What the scan found is reported as a [`Recovery`].

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;

use crate::cursor::CursorFile;
use crate::error::{SpoolError, io_err};
use crate::record::{Frame, SpooledWebhook, next_frame};
use crate::segment::{self, Position, segment_path};
use crate::spool::{Shared, SpoolConfig, View};
use crate::writer::{Active, Writer};

const LOCK_FILE: &str = "lock";

/// What `open` found and repaired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records waiting for replay.
    pub entries: u64,
    /// Bytes of torn or garbage frames cut off the segment files.
    pub truncated_bytes: u64,
    /// Segment files deleted because everything in them had been replayed.
    pub deleted_segments: u64,
    /// The mode the directory had when group or others could reach it
    /// (records hold webhook tokens): `open` made it `0700`. A directory
    /// made by a volume mount or a provisioning tool is often `0755`;
    /// refusing to start would leave the operator to do exactly this, and the
    /// caller logs it. One whose mode cannot be changed (not ours) is
    /// refused with [`SpoolError::Exposed`].
    pub tightened_from: Option<u32>,
}

impl Writer {
    /// Opens (or creates) the spool directory and recovers it: the writer,
    /// ready to run, and what recovery found.
    pub(crate) fn open(config: &SpoolConfig) -> Result<(Self, Recovery), SpoolError> {
        let dir = config.dir.clone();
        let tightened_from = prepare_dir(&dir)?;
        let lock = lock_dir(&dir)?;
        let dir_handle = File::open(&dir).map_err(io_err("open", &dir))?;
        let (cursor_file, stored_cursor) = CursorFile::open(&dir, &dir_handle)?;
        let segments = segment::list(&dir)?;

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
        let mut recovery = Recovery {
            tightened_from,
            ..Recovery::default()
        };
        let view = scan(&dir, &dir_handle, &segments, cursor, &mut recovery)?;
        let active = open_active(&dir, &view)?;

        let shared = Arc::new(Shared::new(dir.clone(), config.max_bytes, view.clone()));
        let mut writer = Self {
            dir,
            dir_handle,
            segment_bytes: config.segment_bytes.max(1),
            max_batch: config.max_batch.max(1),
            on_sync: config.on_sync.clone(),
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
}

/// Creates `dir` (`0700`) if it does not exist, durably; makes an existing
/// one that group or others can reach `0700` (returning its old mode), or
/// refuses it when that is not ours to change.
fn prepare_dir(dir: &Path) -> Result<Option<u32>, SpoolError> {
    if dir.is_dir() {
        let mode = fs::metadata(dir)
            .map_err(io_err("inspect", dir))?
            .permissions()
            .mode()
            & 0o7777;
        let group_or_others = mode & 0o077;
        if group_or_others == 0 {
            return Ok(None);
        }
        return match fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
            Ok(()) => Ok(Some(mode)),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(SpoolError::Exposed {
                    dir: dir.to_owned(),
                    mode,
                })
            }
            Err(e) => Err(io_err("change the mode of", dir)(e)),
        };
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create", dir))?;
    // The new directory's own name must survive a power loss too, or every
    // record in it could vanish with it.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)
            .and_then(|p| p.sync_all())
            .map_err(io_err("fsync", parent))?;
    }
    Ok(None)
}

/// Takes the directory's exclusive lock, held for as long as the returned
/// file is open.
fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err("open", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(SpoolError::Locked {
            dir: dir.to_owned(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(io_err("lock", &lock_path)(e)),
    }
}

/// Deletes the segments before `cursor`'s and scans the others from the
/// cursor on: the view of what waits for replay.
fn scan(
    dir: &Path,
    dir_handle: &File,
    segments: &[u64],
    cursor: Position,
    recovery: &mut Recovery,
) -> Result<View, SpoolError> {
    let mut view = View::empty_at(cursor);
    let mut deleted_any = false;
    let last = segments.last().copied();
    for &segment in segments {
        let path = segment_path(dir, segment);
        if segment < cursor.segment {
            fs::remove_file(&path).map_err(io_err("delete", &path))?;
            recovery.deleted_segments += 1;
            deleted_any = true;
            continue;
        }
        let start = if segment == cursor.segment {
            cursor.offset
        } else {
            0
        };
        let end = scan_segment(
            &path,
            segment,
            start,
            Some(segment) == last,
            &mut view,
            recovery,
        )?;
        view.segments.push_back(segment);
        view.end = Position {
            segment,
            offset: end,
        };
    }
    if deleted_any {
        dir_handle.sync_all().map_err(io_err("fsync", dir))?;
    }
    recovery.entries = view.end_ordinal;
    Ok(view)
}

/// Counts the complete records of one segment from `start` into `view` and
/// cuts off whatever follows them; returns the offset where they end.
fn scan_segment(
    path: &Path,
    segment: u64,
    start: u64,
    is_last: bool,
    view: &mut View,
    recovery: &mut Recovery,
) -> Result<u64, SpoolError> {
    let data = fs::read(path).map_err(io_err("read", path))?;
    let mut pos = usize::try_from(start).unwrap_or(usize::MAX).min(data.len());
    loop {
        match next_frame(&data[pos..]) {
            Frame::End => break,
            Frame::Complete { payload, len } => {
                let webhook = SpooledWebhook::decode_payload(payload).map_err(|source| {
                    SpoolError::Undecodable {
                        path: path.to_owned(),
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
                // A torn tail (the append that wrote it never returned) or
                // garbage: cut it off, never read it.
                let cut = data.len() - pos;
                if !is_last {
                    tracing::warn!(
                        segment,
                        offset = pos,
                        bytes = cut,
                        "spool segment damaged before its end; dropping the rest of it"
                    );
                }
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err("open", path))?;
                file.set_len(pos as u64).map_err(io_err("truncate", path))?;
                file.sync_all().map_err(io_err("fsync", path))?;
                recovery.truncated_bytes += cut as u64;
                break;
            }
        }
    }
    Ok(pos as u64)
}

/// The last segment, reopened for appending after the records `view` found.
fn open_active(dir: &Path, view: &View) -> Result<Option<Active>, SpoolError> {
    let Some(&segment) = view.segments.back() else {
        return Ok(None);
    };
    let path = segment_path(dir, segment);
    let file = OpenOptions::new()
        .append(true)
        .read(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    Ok(Some(Active {
        segment,
        file,
        len: view.end.offset,
    }))
}

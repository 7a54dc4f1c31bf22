//! The acknowledgement: the durable cursor and what moving it deletes.
//!
//! The cursor is the position of the first record not yet acknowledged. It
//! lives in its own small file rather than being implied by which segments
//! exist, so an ack costs one 32-byte write and one `fdatasync` however many
//! records it covers, and a record is acknowledged exactly when that write is
//! durable. Segment files wholly before the cursor are deleted after it is
//! written (a crash in between only leaves files that `open` deletes).
//!
//! The file holds two 32-byte slots, each `generation:u64 segment:u64
//! offset:u64 crc:u32 magic:u32` (little-endian, CRC-32 of the first 24
//! bytes, magic `"SPC1"`), written in turn with one fdatasync. A torn write
//! spoils only the slot being written; `open` takes the valid slot with the
//! highest generation, so the cursor falls back to the previous one and a
//! few records are replayed twice, never lost.

use std::fs::{self, File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{SpoolError, io_err};
use crate::segment::{self, Position, segment_path};
use crate::spool::SyncKind;
use crate::writer::Writer;

const CURSOR_FILE: &str = "cursor";
const CURSOR_SLOT: usize = 32;
const CURSOR_MAGIC: u32 = 0x5350_4331; // "SPC1"

/// The open cursor file and the generation of its newest valid slot.
pub(crate) struct CursorFile {
    file: File,
    path: PathBuf,
    generation: u64,
}

impl CursorFile {
    /// Opens (or creates, durably) the cursor file in `dir`; returns it with
    /// the stored cursor, `None` when no slot is valid (a new spool).
    pub(crate) fn open(
        dir: &Path,
        dir_handle: &File,
    ) -> Result<(Self, Option<Position>), SpoolError> {
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

    /// Writes `position` to the slot the next generation goes to, durably.
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

impl Writer {
    /// Acknowledges every record up to the one numbered `ordinal`, which ends
    /// at `end`: the cursor moves there durably, then the segments it passed
    /// are deleted. An ordinal already acknowledged (or not from this
    /// process) changes nothing.
    pub(crate) fn ack(&mut self, ordinal: u64, end: Position) -> Result<(), SpoolError> {
        if ordinal < self.view.cursor_ordinal || ordinal >= self.view.end_ordinal {
            return Ok(());
        }
        let acked_bytes = self.bytes_until(end)?;
        let started = Instant::now();
        let written = self.cursor_file.write(end);
        if let Some(on_sync) = &self.on_sync {
            on_sync.observe(SyncKind::Ack, started.elapsed());
        }
        written?;
        self.view.cursor = end;
        self.view.cursor_ordinal = ordinal + 1;
        self.view.unacked_bytes = self.view.unacked_bytes.saturating_sub(acked_bytes);

        if self.view.cursor_ordinal == self.view.end_ordinal {
            self.view.oldest = None;
            // Everything replayed: delete every segment, the active one too;
            // the next append starts a fresh one.
            self.delete_all_segments()?;
        } else {
            self.delete_segments_before(end.segment)?;
            self.view.oldest = Some(segment::received_at_from(
                &self.dir,
                self.view.segments.iter().copied(),
                self.view.cursor,
            )?);
        }
        Ok(())
    }

    /// Bytes of records from the cursor up to `end`.
    fn bytes_until(&self, end: Position) -> Result<u64, SpoolError> {
        let cursor = self.view.cursor;
        if end.segment == cursor.segment {
            return Ok(end.offset - cursor.offset);
        }
        // Bytes left in the cursor's segment, whole segments between, and
        // the start of `end`'s.
        let mut bytes = 0;
        for &segment in &self.view.segments {
            if segment < cursor.segment || segment > end.segment {
                continue;
            }
            let from = if segment == cursor.segment {
                cursor.offset
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
        Ok(bytes)
    }

    /// Deletes the segment files numbered below `segment` (all acknowledged)
    /// and makes their removal durable.
    fn delete_segments_before(&mut self, segment: u64) -> Result<(), SpoolError> {
        let mut deleted = false;
        while let Some(&oldest) = self.view.segments.front() {
            if oldest >= segment {
                break;
            }
            let path = segment_path(&self.dir, oldest);
            fs::remove_file(&path).map_err(io_err("delete", &path))?;
            self.view.segments.pop_front();
            deleted = true;
        }
        if deleted {
            self.dir_handle
                .sync_all()
                .map_err(io_err("fsync", &self.dir))?;
        }
        Ok(())
    }
}

//! Segment files: where records live, and reading them back.
//!
//! Records are appended to numbered segment files
//! (`00000000000000000007.spool`: twenty digits, so names sort like numbers);
//! a new one is started when the current one would grow past
//! [`SpoolConfig::segment_bytes`](crate::SpoolConfig::segment_bytes), so
//! replayed records are deleted a whole file at a time rather than by
//! rewriting one. A [`Position`] is a segment and a byte offset in it.
//!
//! Reading happens outside the writer thread: only the replayer reads, from
//! the cursor on and never past the published end, and the segments it could
//! be reading are deleted only by its own later ack.

use std::fs::{self, File};
use std::io::{self, BufReader, Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::error::{SpoolError, io_err};
use crate::record::{self, Frame, MAX_RECORD_BYTES, SpooledWebhook, next_frame};
use crate::spool::{SpoolEntry, View};

const SEGMENT_SUFFIX: &str = ".spool";

/// A place in the spool: a segment and a byte offset in it. Positions order
/// like the records they point at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
}

/// The file of segment number `segment` in `dir`.
pub(crate) fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}{SEGMENT_SUFFIX}"))
}

/// The numbers of the segment files in `dir`, oldest first. Other files (the
/// cursor, the lock, anything an operator left there) are ignored.
pub(crate) fn list(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
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
    Ok(segments)
}

/// Reads up to `max` durable records from `view`'s cursor on. Only the
/// consumer calls this; acknowledged segments it could be reading are deleted
/// only by its own later `ack`.
pub(crate) fn read_entries(
    dir: &Path,
    view: &View,
    max: usize,
) -> Result<Vec<SpoolEntry>, SpoolError> {
    let mut entries = Vec::new();
    let mut ordinal = view.cursor_ordinal;
    for &segment in view.segments.iter().filter(|&&s| s >= view.cursor.segment) {
        if entries.len() >= max || ordinal >= view.end_ordinal {
            break;
        }
        let offset = if segment == view.cursor.segment {
            view.cursor.offset
        } else {
            0
        };
        // Completed segments never change; the last one only up to `end`.
        let limit = if segment == view.end.segment {
            view.end.offset.saturating_sub(offset)
        } else {
            u64::MAX
        };
        let wanted = max - entries.len();
        let until = view.end_ordinal - ordinal;
        let read = read_segment(dir, segment, offset, limit, wanted.min(saturate(until)))?;
        for (webhook, end) in read {
            entries.push(SpoolEntry {
                webhook,
                ordinal,
                end,
            });
            ordinal += 1;
        }
    }
    Ok(entries)
}

fn saturate(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Up to `max` records of one segment from `offset`, reading at most `limit`
/// bytes, each with the position just past it.
fn read_segment(
    dir: &Path,
    segment: u64,
    mut offset: u64,
    limit: u64,
    max: usize,
) -> Result<Vec<(SpooledWebhook, Position)>, SpoolError> {
    let path = segment_path(dir, segment);
    let mut file = File::open(&path).map_err(io_err("open", &path))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(io_err("seek in", &path))?;
    // Frame by frame, so a batch costs what it reads, not the segment.
    let mut reader = BufReader::new(file.take(limit));
    let mut frame = Vec::new();
    let mut records = Vec::new();
    while records.len() < max {
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
        let webhook =
            SpooledWebhook::decode_payload(payload).map_err(|source| SpoolError::Undecodable {
                path: path.clone(),
                offset,
                source,
            })?;
        offset += len as u64;
        records.push((webhook, Position { segment, offset }));
    }
    Ok(records)
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

/// The receive time of the first record at or after `at` in `segments`
/// (oldest first). `at` may sit at the very end of a completed segment: the
/// record is then the first of a later one.
pub(crate) fn received_at_from(
    dir: &Path,
    segments: impl IntoIterator<Item = u64>,
    mut at: Position,
) -> Result<DateTime<Utc>, SpoolError> {
    let from = at.segment;
    for segment in segments.into_iter().filter(|&s| s >= from) {
        let path = segment_path(dir, segment);
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
    Err(io_err("find the oldest record in", dir)(io::Error::new(
        io::ErrorKind::NotFound,
        "no record after the cursor",
    )))
}

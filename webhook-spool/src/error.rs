//! [`SpoolError`]: everything the spool can fail with, in one enum, so the
//! edge can tell "full, retry later" (503 with `Retry-After`) from "the
//! spool itself is broken" (503, and an operator's attention).

use std::io;
use std::path::{Path, PathBuf};

use crate::record::DecodeError;

/// What can go wrong with the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The unreplayed records already take `max_bytes`: answer 503 so the
    /// sender retries later.
    #[error("the spool is full: {max_bytes} bytes of webhooks wait for replay")]
    Full { max_bytes: u64 },
    /// This one record can never fit (larger than
    /// [`MAX_RECORD_BYTES`](crate::MAX_RECORD_BYTES) or the whole spool).
    #[error("a webhook of {len} bytes is too large to spool")]
    TooLarge { len: usize },
    /// The spool directory can be read by group or others (`mode`) and is
    /// not ours to make private: its records would show webhook tokens.
    #[error("spool directory {} has mode {mode:o}: group or others can reach the webhook tokens in it, and its mode cannot be changed by this user; make it 0700 and owned by ingest's user", dir.display())]
    Exposed { dir: PathBuf, mode: u32 },
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
    /// restarts and [`Spool::open`](crate::Spool::open) has checked the files
    /// again.
    #[error("the spool stopped accepting webhooks after a failed write; restart ingest")]
    Poisoned,
    /// The writer thread is gone (it panicked).
    #[error("the spool's writer thread has stopped")]
    Closed,
}

/// Turns an I/O error into [`SpoolError::Io`] naming what was being done to
/// which file.
pub(crate) fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> SpoolError + use<> {
    let path = path.to_owned();
    move |source| SpoolError::Io {
        action,
        path,
        source,
    }
}

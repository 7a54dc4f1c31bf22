//! A durable local spool for webhooks that arrive while the database path is
//! down.
//!
//! TradingView does not queue alerts: it retries a 5xx three times within
//! about 20 seconds and then the alert is gone. When `public.ingest_signal`
//! cannot be reached, the edge appends the webhook here instead and answers
//! 202; the [`Replayer`] feeds the spool to the database once it is back.
//!
//! Its own crate because it is a small storage engine (segment files, group
//! commit, crash recovery, a durable cursor) and the edge is meant to be
//! thin: ingest decides *when* to spool and *who* may, this crate only how to
//! keep what it is given. It knows nothing about HTTP or the database: the
//! edge decides when to spool (and, since tokens cannot be checked while the
//! database is down, how much one client address may spool: each record
//! keeps `client_ip` for that), and a [`ReplaySink`] decides what a replay
//! means.
//!
//! # Layout
//!
//! - `record`: one [`SpooledWebhook`] and its on-disk frame (length, CRC-32,
//!   versioned payload); the format is described there. Pure, no I/O.
//! - `segment`: the files records live in: naming, listing, and reading
//!   records back from a position ([`Spool::read`]).
//! - `spool`: [`Spool`], the cheap handle request tasks clone; it sends
//!   appends and acks to the writer thread and reads what the writer
//!   published.
//! - `writer`: the one thread that owns every file handle and every change
//!   to the directory, and makes appends durable in groups.
//! - `recovery`: [`Spool::open`]'s part of the writer: lock the directory,
//!   find where the durable cursor points, scan what is left and cut off a
//!   torn tail ([`Recovery`]).
//! - `cursor`: the acknowledgement: the durable cursor file and what moving
//!   it deletes.
//! - `replay`: the [`Replayer`], which reads in arrival order, hands the
//!   records to a [`ReplaySink`] in batches and acknowledges them.
//! - `error`: [`SpoolError`].
//!
//! Data flow: request task → [`Spool::append`] → writer thread (write,
//! `fdatasync`, answer) → segment file; [`Replayer`] → [`Spool::read`] →
//! [`ReplaySink`] → [`Spool::ack`] → writer thread (cursor, delete passed
//! segments).
//!
//! # Guarantees
//!
//! - **Durable before answered.** [`Spool::append`] returns only after the
//!   record's bytes are on disk (`fdatasync` of the segment file, and of the
//!   directory when the append created a segment), so a 202 sent after it
//!   survives a crash, `kill -9` or power loss.
//! - **Torn writes are never misread.** Each record carries its length and a
//!   CRC-32 (the format is described in `record.rs`). [`Spool::open`]
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
//!   is created `0700` and its files `0600`; an existing directory that
//!   group or others can reach is made `0700` at `open` (reported in
//!   [`Recovery::tightened_from`]), or refused with [`SpoolError::Exposed`]
//!   when its mode is not ours to change.
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

mod cursor;
mod error;
mod record;
mod recovery;
mod replay;
mod segment;
mod spool;
mod writer;

pub use error::SpoolError;
pub use record::{DecodeError, MAX_RECORD_BYTES, SpooledWebhook};
pub use recovery::Recovery;
pub use replay::{
    Backoff, ReplayCounters, ReplayCounts, ReplayOutcome, ReplaySink, Replayer, Transient,
};
pub use spool::{
    DEFAULT_MAX_BATCH, DEFAULT_SEGMENT_BYTES, Spool, SpoolConfig, SpoolEntry, SpoolStats, SyncKind,
    SyncObserver,
};

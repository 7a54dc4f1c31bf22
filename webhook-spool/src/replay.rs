//! The replayer: feeds spooled webhooks to the database once it is back.
//!
//! One [`Replayer`] per spool takes records in arrival order and hands them
//! to a [`ReplaySink`] in batches of up to [`ReplaySink::max_batch`] (in
//! ingest: the same `public.ingest_signals` call the edge makes, with each
//! record's original receive time and delivery id), one batch at a time, so
//! the spool drains at the rate the database takes. A definitive answer
//! (accepted, duplicate or rejected) acknowledges the record; a transient
//! failure (the database is still down) stops the replay at that record and
//! retries from it with exponential backoff, so a later record never
//! overtakes an earlier one. The trader's rules (unknown token, quota, rate
//! limit, dedup) are applied by the sink at replay time.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{Spool, SpoolEntry, SpoolError, SpooledWebhook};

/// How many records one read from the spool returns.
const READ_BATCH: usize = 64;

/// What the database decided about a replayed webhook. Every variant is
/// final: the record is acknowledged and never replayed again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Stored as a new signal.
    Accepted,
    /// Already stored (its first call had committed, or a retry within the
    /// dedup window): no second signal.
    Duplicate,
    /// Refused for good: unknown token, disabled webhook, no ticker, quota or
    /// rate limit. A sink should also answer this for a failure that a retry
    /// cannot fix, or one bad record would block the spool forever.
    Rejected,
}

/// A failure worth retrying later (the database path is still down); the
/// record stays in the spool.
#[derive(Debug, thiserror::Error)]
#[error("replay failed for now")]
pub struct Transient(#[source] pub Box<dyn StdError + Send + Sync>);

impl Transient {
    /// Wraps the cause.
    pub fn new(cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self(cause.into())
    }
}

/// Where replayed webhooks go.
pub trait ReplaySink: Send + Sync {
    /// Most records one [`ReplaySink::ingest`] call takes.
    fn max_batch(&self) -> usize {
        1
    }

    /// Submits `webhooks` (in arrival order, at most
    /// [`ReplaySink::max_batch`], each with its original delivery id and
    /// receive time) and returns one result per webhook, in order.
    ///
    /// The replayer acknowledges the records before the first
    /// [`Transient`] and retries from it: a sink should stop at its first
    /// transient failure when it can. Results after it are ignored, and
    /// those records are submitted again (for ingest, their delivery ids
    /// turn any that did commit into `duplicate`). A result missing from
    /// the end counts as transient.
    fn ingest(
        &self,
        webhooks: &[SpooledWebhook],
    ) -> impl Future<Output = Vec<Result<ReplayOutcome, Transient>>> + Send;
}

/// Retry delays after a transient failure: `initial`, doubling up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// 250 ms doubling to 30 s: quick when the database blipped, gentle when
    /// it is down for minutes.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

/// Replay outcomes since start-up, for `/metrics`.
#[derive(Debug, Default)]
pub struct ReplayCounters {
    accepted: AtomicU64,
    duplicate: AtomicU64,
    rejected: AtomicU64,
    transient_failures: AtomicU64,
}

/// A snapshot of [`ReplayCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayCounts {
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
    /// Attempts that failed transiently (each retry counts).
    pub transient_failures: u64,
}

impl ReplayCounters {
    /// The counts right now.
    pub fn snapshot(&self) -> ReplayCounts {
        ReplayCounts {
            accepted: self.accepted.load(Ordering::Relaxed),
            duplicate: self.duplicate.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            transient_failures: self.transient_failures.load(Ordering::Relaxed),
        }
    }

    fn record(&self, outcome: ReplayOutcome) {
        let counter = match outcome {
            ReplayOutcome::Accepted => &self.accepted,
            ReplayOutcome::Duplicate => &self.duplicate,
            ReplayOutcome::Rejected => &self.rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Feeds a [`Spool`] to a [`ReplaySink`] in arrival order.
pub struct Replayer<S> {
    spool: Spool,
    sink: S,
    backoff: Backoff,
    counters: Arc<ReplayCounters>,
}

impl<S> fmt::Debug for Replayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replayer")
            .field("spool", &self.spool.dir())
            .field("backoff", &self.backoff)
            .field("counters", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl<S: ReplaySink> Replayer<S> {
    /// A replayer with the default [`Backoff`].
    pub fn new(spool: Spool, sink: S) -> Self {
        Self {
            spool,
            sink,
            backoff: Backoff::default(),
            counters: Arc::default(),
        }
    }

    /// Uses `backoff` between retries of a record that failed transiently.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The outcome counters, shared with `/metrics`.
    pub fn counters(&self) -> Arc<ReplayCounters> {
        Arc::clone(&self.counters)
    }

    /// Replays until `shutdown` resolves, sleeping while the spool is empty
    /// and waking on each append. Returns early only if the spool itself
    /// fails. Stopping in the middle of a record is safe: it was not
    /// acknowledged, so it is replayed after the restart (and its delivery id
    /// turns a second commit into `duplicate`).
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), SpoolError> {
        tokio::select! {
            () = shutdown => Ok(()),
            result = async {
                loop {
                    self.drain().await?;
                    self.spool.appended().await;
                }
            } => result,
        }
    }

    /// Replays until the spool is empty (retrying transient failures for as
    /// long as it takes), then returns: what tests and a shutdown with a
    /// reachable database use.
    pub async fn drain(&self) -> Result<(), SpoolError> {
        let max_batch = self.sink.max_batch().max(1);
        loop {
            let entries = self.spool.read(READ_BATCH.max(max_batch)).await?;
            if entries.is_empty() {
                return Ok(());
            }
            for batch in entries.chunks(max_batch) {
                self.replay_batch(batch).await?;
            }
        }
    }

    /// Replays `batch` until every record has a definitive answer,
    /// acknowledging as it goes.
    async fn replay_batch(&self, batch: &[SpoolEntry]) -> Result<(), SpoolError> {
        let mut delay = self.backoff.initial;
        let mut from = 0;
        while from < batch.len() {
            let pending = &batch[from..];
            let webhooks: Vec<SpooledWebhook> =
                pending.iter().map(|entry| entry.webhook.clone()).collect();
            let mut results = self.sink.ingest(&webhooks).await.into_iter();
            let mut answered = 0;
            let mut failure = None;
            for entry in pending {
                match results.next() {
                    Some(Ok(outcome)) => {
                        self.counters.record(outcome);
                        tracing::debug!(
                            delivery_id = %entry.webhook.delivery_id,
                            ?outcome,
                            "replayed a spooled webhook"
                        );
                        answered += 1;
                    }
                    Some(Err(error)) => {
                        failure = Some((entry, error.to_string(), error.0.to_string()));
                        break;
                    }
                    None => {
                        failure = Some((
                            entry,
                            "replay failed for now".to_owned(),
                            "the sink answered fewer records than it was given".to_owned(),
                        ));
                        break;
                    }
                }
            }
            if answered > 0 {
                self.spool.ack(&pending[answered - 1]).await?;
                from += answered;
                delay = self.backoff.initial;
            }
            if let Some((entry, error, cause)) = failure {
                self.counters
                    .transient_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    delivery_id = %entry.webhook.delivery_id,
                    error = %error,
                    cause = %cause,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "replay of a spooled webhook failed; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(self.backoff.max);
            }
        }
        Ok(())
    }
}

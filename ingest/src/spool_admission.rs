//! The spool policy: when a webhook goes to the spool instead of the
//! database, who may fill the spool, and the replay that empties it. (The
//! spool itself, which only keeps what it is given, is the `webhook_spool`
//! crate.)
//!
//! - **When.** A webhook is spooled when its database call fails with an
//!   error a retry can fix ([`DbError::is_transient`]), when the database
//!   path is saturated (the alert would wait past its budget for a call,
//!   [`crate::batcher`]), and whenever the spool is not empty: a webhook
//!   that arrives while older ones still wait for replay queues behind them,
//!   so signals are stored in arrival order, and a database that hangs costs
//!   one deadline, not one per request. The answer is 202 within
//!   milliseconds (or the edge's own 400/422 for a body that is no signal:
//!   the replay still logs it for the trader).
//! - **Who.** While the database cannot answer, nobody can tell a trader's
//!   token from a guessed one. Known tokens ([`crate::tokens`]) spool
//!   freely up to the spool's size. Any other token is *unverified*: all of
//!   them together may spool a few per minute (a global budget, so it holds
//!   when every alert comes from TradingView's four addresses), only while
//!   the spool is less than half full, and an address outside the allowlist
//!   spends its own per-address budget too ([`crate::guard`]). A token the
//!   database already said is unknown never gets this far (404 from memory).
//!   So a flood of guesses can neither fill the spool nor crowd out known
//!   traders.
//! - **Refused.** A webhook the spool will not take (full, past a limit, a
//!   failed disk) goes to the database after all, if it answers, giving up
//!   arrival order for that one alert rather than the alert; else it gets
//!   503, which TradingView retries.
//! - **Replay.** [`DatabaseSink`] hands the spooled webhooks, in batches, to
//!   the same `public.ingest_signals` call the edge makes
//!   ([`Delivery::replay`]), each with its original delivery id and receive
//!   time: the trader's rules apply as they would have, and a webhook whose
//!   first call had in fact committed is answered `duplicate` instead of
//!   stored twice. The answers teach the token memory, as live answers do.
//!
//! [`DbError::is_transient`]: crate::db::DbError::is_transient

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use webhook_spool::{
    ReplayCounters, ReplayOutcome, ReplaySink, Spool, SpoolError, SpoolStats, SpooledWebhook,
    Transient,
};

use crate::db::{BatchBody, Database, DbError, IngestOutcome, alert_bytes};
use crate::delivery::Delivery;
use crate::tokens::{TokenKey, TokenMemory};

/// Why a webhook was not spooled. Every case is answered 503 unless the
/// database takes the webhook instead: TradingView retries it, which is the
/// best remaining chance for the alert.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the spool is full")]
    Full,
    #[error("unverified tokens may fill only half of the spool")]
    UnverifiedShare,
    #[error("too many unverified tokens were spooled this minute; retry in {0:?}")]
    UnverifiedRate(Duration),
    #[error(transparent)]
    Spool(SpoolError),
}

impl Refused {
    /// The metric label of the refusal.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Full | Self::Spool(SpoolError::Full { .. }) => "spool_full",
            Self::UnverifiedShare | Self::UnverifiedRate(_) => "spool_limited",
            Self::Spool(_) => "spool_failed",
        }
    }

    /// Seconds the client should wait before retrying.
    pub fn retry_after(&self) -> u64 {
        match self {
            Self::UnverifiedRate(wait) => wait.as_secs().max(1),
            _ => 5,
        }
    }
}

/// The spool as the edge uses it: every append goes through
/// [`SpoolAdmission::spool`], which applies the limits on unverified tokens.
#[derive(Debug)]
pub struct SpoolAdmission {
    spool: Spool,
    /// All unverified tokens together, per minute.
    unverified: DefaultDirectRateLimiter,
    replays: Arc<ReplayCounters>,
}

impl SpoolAdmission {
    /// `unverified_per_minute`: how many webhooks with unverified tokens may
    /// be spooled per minute, from all addresses together. `replays` are the
    /// replayer's counters, for `/health` and `/metrics`.
    pub fn new(
        spool: Spool,
        unverified_per_minute: NonZeroU32,
        replays: Arc<ReplayCounters>,
    ) -> Self {
        Self {
            spool,
            unverified: RateLimiter::direct(Quota::per_minute(unverified_per_minute)),
            replays,
        }
    }

    /// Whether older webhooks still wait for replay (then new ones queue
    /// behind them).
    pub fn is_replaying(&self) -> bool {
        self.spool.stats().entries > 0
    }

    /// Appends `webhook` durably; an unverified one (`known` false) only
    /// within the limits on unverified tokens.
    pub async fn spool(&self, webhook: &SpooledWebhook, known: bool) -> Result<(), Refused> {
        if !known {
            let stats = self.spool.stats();
            if stats.bytes >= stats.max_bytes / 2 {
                return Err(if stats.bytes >= stats.max_bytes {
                    Refused::Full
                } else {
                    Refused::UnverifiedShare
                });
            }
            self.unverified.check().map_err(|not_until| {
                Refused::UnverifiedRate(not_until.wait_time_from(DefaultClock::default().now()))
            })?;
        }
        self.spool
            .append(webhook)
            .await
            .map_err(|error| match error {
                SpoolError::Full { .. } => Refused::Full,
                other => Refused::Spool(other),
            })
    }

    /// Depth, size and age of the spool.
    pub fn stats(&self) -> SpoolStats {
        self.spool.stats()
    }

    /// Whether the spool can take more (for `/health`).
    pub fn has_room(&self) -> bool {
        let stats = self.spool.stats();
        stats.bytes < stats.max_bytes
    }

    /// Replay outcomes so far.
    pub fn replays(&self) -> &ReplayCounters {
        &self.replays
    }
}

/// Replays spooled webhooks through the edge's own database call, in
/// batches.
#[derive(Debug)]
pub struct DatabaseSink {
    db: Arc<Database>,
    tokens: Arc<TokenMemory>,
    max_batch: usize,
}

impl DatabaseSink {
    /// `max_batch`: most webhooks per `ingest_signals` call.
    pub fn new(db: Arc<Database>, tokens: Arc<TokenMemory>, max_batch: usize) -> Self {
        Self {
            db,
            tokens,
            max_batch: max_batch.max(1),
        }
    }
}

impl ReplaySink for DatabaseSink {
    fn max_batch(&self) -> usize {
        self.max_batch
    }

    async fn ingest(&self, webhooks: &[SpooledWebhook]) -> Vec<Result<ReplayOutcome, Transient>> {
        let deliveries: Vec<Delivery> = webhooks.iter().map(Delivery::replay).collect();
        let mut alerts: Vec<Value> = deliveries.iter().map(|d| d.call().arguments()).collect();
        let mut results = Vec::with_capacity(webhooks.len());
        // One call per body's worth (on the PostgREST path a body stops at
        // its byte limit, as the edge's own batches do), one after another:
        // the records stay in arrival order.
        while results.len() < webhooks.len() {
            let mut body = BatchBody::new(self.db.max_batch_bytes());
            let count = alerts
                .iter()
                .take_while(|alert| body.add(alert_bytes(alert)))
                .count();
            let chunk: Vec<Value> = alerts.drain(..count).collect();
            let start = results.len();
            let outcomes = match self.db.ingest_batch(chunk).await {
                Ok(outcomes) => outcomes,
                // A failure of the whole call is never one record's fault
                // (an alert's own trouble comes back as that alert's
                // error): keep the records and retry, whatever it was. A
                // function missing because ingest was upgraded before the
                // migration ran, or a revoked key, must not cost the spool
                // its alerts.
                Err(error) => {
                    results.push(Err(Transient::new(error)));
                    return results;
                }
            };
            for (webhook, outcome) in webhooks[start..].iter().zip(outcomes) {
                let result = self.replayed(webhook, outcome);
                let stop = result.is_err();
                results.push(result);
                if stop {
                    return results;
                }
            }
        }
        results
    }
}

impl DatabaseSink {
    /// What one replayed webhook's outcome means for its record.
    fn replayed(
        &self,
        webhook: &SpooledWebhook,
        outcome: Result<IngestOutcome, DbError>,
    ) -> Result<ReplayOutcome, Transient> {
        match outcome {
            Ok(outcome) => {
                self.tokens
                    .learn(TokenKey::of(&webhook.token), &outcome.outcome);
                Ok(match outcome.outcome.as_str() {
                    "accepted" => ReplayOutcome::Accepted,
                    "duplicate" => ReplayOutcome::Duplicate,
                    _ => ReplayOutcome::Rejected,
                })
            }
            // A deadlock or a serialization failure of this one alert: the
            // replay stops here and retries from it.
            Err(error) if error.is_transient() => Err(Transient::new(error)),
            Err(error) => {
                // A retry cannot change this answer; keeping the record
                // would hold every later one back for good.
                tracing::error!(
                    delivery_id = %webhook.delivery_id,
                    token = webhook.token.fingerprint(),
                    error = %error,
                    "the database refused a spooled webhook for good; dropped it"
                );
                Ok(ReplayOutcome::Rejected)
            }
        }
    }
}

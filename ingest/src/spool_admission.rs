//! The outage admission policy: what the edge does while the database path
//! is down. When a webhook goes to the spool instead of the database, who
//! may fill the spool, and the replay that empties it. (The spool itself,
//! which only keeps what it is given, is the `webhook_spool` crate.)
//!
//! - **When.** A webhook is spooled when its database call fails with an
//!   error a retry can fix ([`DbError::is_transient`]), and also whenever
//!   the spool is not empty: a webhook that arrives while older ones still
//!   wait for replay queues behind them, so signals are stored in arrival
//!   order, and a database that hangs costs one deadline, not one per
//!   request. The answer is 202 (or the edge's own 400/422 for a body that
//!   is no signal: the replay still logs it for the trader).
//! - **Who.** While the database is down, nobody can tell a trader's token
//!   from a guessed one. Tokens the database recognised in the last day
//!   ([`KnownTokens`]) spool freely up to the spool's size. Any other token
//!   is *unverified*: each client address may spool a few of those per
//!   minute, and only while the spool is less than half full, so a flood of
//!   guesses can neither fill the spool nor crowd out known traders.
//! - **Refused.** A webhook the spool will not take (full, past a limit, a
//!   failed disk) goes to the database after all, if it answers, giving up
//!   arrival order for that one alert rather than the alert; else it gets
//!   503, which TradingView retries.
//! - **Replay.** [`DatabaseSink`] hands each spooled webhook to the same
//!   `public.ingest_signal` call the edge makes ([`Delivery::replay`]), with
//!   its original delivery id and receive time: the trader's rules apply as
//!   they would have, and a webhook whose first call had in fact committed
//!   is answered `duplicate` instead of stored twice.
//!
//! [`DbError::is_transient`]: crate::db::DbError::is_transient

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use webhook_spool::{
    ReplayCounters, ReplayOutcome, ReplaySink, Spool, SpoolError, SpoolStats, SpooledWebhook,
    Transient,
};

use crate::db::{Database, IngestOutcome};
use crate::delivery::Delivery;
use crate::signal::WebhookToken;

/// How long a token the database recognised counts as known.
const KNOWN_FOR: Duration = Duration::from_hours(24);
/// Most known tokens remembered; past it, new ones stay unverified.
const MAX_KNOWN: usize = 200_000;
/// Most client addresses whose unverified spooling is tracked at once.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// Tokens `ingest_signal` recently said belong to a trader.
#[derive(Debug, Default)]
pub struct KnownTokens {
    seen: Mutex<HashMap<WebhookToken, Instant>>,
}

impl KnownTokens {
    /// Remembers `token` when `outcome` shows it belongs to a trader
    /// (anything but `unknown_token`), forgets it when it does not.
    pub fn learn(&self, token: &WebhookToken, outcome: &IngestOutcome) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if outcome.outcome == "unknown_token" {
            seen.remove(token);
            return;
        }
        let now = Instant::now();
        if seen.len() >= MAX_KNOWN && !seen.contains_key(token) {
            seen.retain(|_, at| now.duration_since(*at) < KNOWN_FOR);
            if seen.len() >= MAX_KNOWN {
                return;
            }
        }
        seen.insert(token.clone(), now);
    }

    /// Whether the database recognised `token` within the last day.
    pub fn contains(&self, token: &WebhookToken) -> bool {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(token).is_some_and(|at| at.elapsed() < KNOWN_FOR)
    }
}

/// Why a webhook was not spooled. Every case is answered 503: TradingView
/// retries it, which is the best remaining chance for the alert.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the spool is full")]
    Full,
    #[error("unverified tokens may fill only half of the spool")]
    UnverifiedShare,
    #[error("this address spooled too many unverified tokens; retry in {0:?}")]
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
    known: Arc<KnownTokens>,
    unverified: DefaultKeyedRateLimiter<IpAddr>,
    replays: Arc<ReplayCounters>,
}

impl SpoolAdmission {
    /// `unverified_per_minute`: how many webhooks with unverified tokens one
    /// address may spool per minute. `replays` are the replayer's counters,
    /// for `/health` and `/metrics`.
    pub fn new(
        spool: Spool,
        known: Arc<KnownTokens>,
        unverified_per_minute: NonZeroU32,
        replays: Arc<ReplayCounters>,
    ) -> Self {
        Self {
            spool,
            known,
            unverified: RateLimiter::keyed(Quota::per_minute(unverified_per_minute)),
            replays,
        }
    }

    /// Whether older webhooks still wait for replay (then new ones queue
    /// behind them).
    pub fn is_replaying(&self) -> bool {
        self.spool.stats().entries > 0
    }

    /// The database's answer for `token`, to tell known tokens apart.
    pub fn learn(&self, token: &WebhookToken, outcome: &IngestOutcome) {
        self.known.learn(token, outcome);
    }

    /// Appends `webhook` durably, within the limits on unverified tokens.
    pub async fn spool(&self, webhook: &SpooledWebhook) -> Result<(), Refused> {
        if !self.known.contains(&webhook.token) {
            let stats = self.spool.stats();
            if stats.bytes >= stats.max_bytes / 2 {
                return Err(if stats.bytes >= stats.max_bytes {
                    Refused::Full
                } else {
                    Refused::UnverifiedShare
                });
            }
            if let Some(ip) = webhook.client_ip {
                if self.unverified.len() >= MAX_TRACKED_ADDRESSES {
                    self.unverified.retain_recent();
                }
                self.unverified.check_key(&ip).map_err(|not_until| {
                    Refused::UnverifiedRate(not_until.wait_time_from(DefaultClock::default().now()))
                })?;
            }
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

    /// Replay outcomes so far.
    pub fn replays(&self) -> &ReplayCounters {
        &self.replays
    }
}

/// Replays spooled webhooks through the edge's own database call.
#[derive(Debug)]
pub struct DatabaseSink {
    db: Arc<Database>,
    known: Arc<KnownTokens>,
}

impl DatabaseSink {
    pub fn new(db: Arc<Database>, known: Arc<KnownTokens>) -> Self {
        Self { db, known }
    }
}

impl ReplaySink for DatabaseSink {
    async fn ingest(&self, webhook: &SpooledWebhook) -> Result<ReplayOutcome, Transient> {
        let delivery = Delivery::replay(webhook);
        match self.db.ingest(&delivery.call()).await {
            Ok(outcome) => {
                self.known.learn(&webhook.token, &outcome);
                Ok(match outcome.outcome.as_str() {
                    "accepted" => ReplayOutcome::Accepted,
                    "duplicate" => ReplayOutcome::Duplicate,
                    _ => ReplayOutcome::Rejected,
                })
            }
            Err(error) if error.is_transient() => Err(Transient::new(error)),
            Err(error) => {
                // A retry cannot change this answer; keeping the record would
                // hold every later one back for good.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(outcome: &str) -> IngestOutcome {
        IngestOutcome {
            outcome: outcome.into(),
            http_status: 200,
            signal_id: None,
            screenshot_status: None,
            estimated_wait: None,
            retry_after: None,
            message: None,
        }
    }

    #[test]
    fn tokens_are_known_after_any_answer_but_unknown_token() {
        let known = KnownTokens::default();
        let token = WebhookToken::parse("abcdefghijklmnopqrstuvwxyz0123").expect("token");
        assert!(!known.contains(&token));
        known.learn(&token, &outcome("quota_exceeded"));
        assert!(known.contains(&token));
        known.learn(&token, &outcome("unknown_token"));
        assert!(!known.contains(&token), "a rotated token is forgotten");
    }
}

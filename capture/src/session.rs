//! The trader's stored TradingView session, as operators administer it:
//! `capture set-session` stores one, `capture reseal-cookies` moves every
//! stored one to the current key.
//!
//! The session lives sealed in `user_config.tradingview_cookies_sealed`
//! (see `cookie-seal`); traders store theirs through ingest's
//! `PUT /v1/tradingview-session`. These two are the operator's side of the
//! same value, so they live here, beside what they administer, and not in
//! the queue: they run once from the command line, over a plain
//! connection, and say what went wrong in their own terms
//! ([`SessionError`]). Both write through the same database functions as
//! ingest's endpoint (`public.set_tradingview_session`, and
//! `public.reseal_tradingview_session` for a move to another key), so the
//! envelope check and the validity rules live in one place.
//!
//! Key rotation: put the new key first in `COOKIE_SEAL_KEYS` (new sessions
//! are sealed with it at once, old ones still open), run `reseal-cookies`,
//! then drop the old key. Each row is updated only if it still holds the
//! value read, so a trader pasting a new session meanwhile is never
//! overwritten.

use cookie_seal::{Keyring, TradingViewSession};
use tokio_postgres::Client;
use uuid::Uuid;

/// Storing or re-sealing a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("database query failed")]
    Query(#[from] tokio_postgres::Error),
    /// The user has no `user_config` row (no such trader).
    #[error("no user_config row for {0}")]
    NoSuchUser(Uuid),
}

/// What a re-seal run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Rows moved to the current key.
    pub resealed: u64,
    /// Rows already under the current key.
    pub current: u64,
    /// Rows that open under no configured key (left as they are).
    pub unreadable: u64,
}

/// Seals `session` for `user_id` under the current key and stores it as
/// their valid session.
pub async fn store(
    db: &Client,
    keys: &Keyring,
    user_id: Uuid,
    session: &TradingViewSession,
) -> Result<(), SessionError> {
    let sealed = keys.seal(user_id, session);
    let stored: bool = db
        .query_one(
            "select public.set_tradingview_session($1, $2)",
            &[&user_id, &sealed],
        )
        .await?
        .get(0);
    if stored {
        Ok(())
    } else {
        Err(SessionError::NoSuchUser(user_id))
    }
}

/// Re-seals every stored session not sealed under `keys`' current key.
pub async fn reseal_all(db: &Client, keys: &Keyring) -> Result<Resealed, SessionError> {
    let rows = db
        .query(
            "select user_id, tradingview_cookies_sealed from public.user_config \
              where tradingview_cookies_sealed is not null",
            &[],
        )
        .await?;
    let mut report = Resealed::default();
    for row in rows {
        let user_id: Uuid = row.get(0);
        let sealed: Vec<u8> = row.get(1);
        if Keyring::sealed_key_id(&sealed).is_ok_and(|id| id == keys.current_key_id()) {
            report.current += 1;
            continue;
        }
        match keys.open(user_id, &sealed) {
            Ok(session) => {
                let resealed = keys.seal(user_id, &session);
                let replaced: bool = db
                    .query_one(
                        "select public.reseal_tradingview_session($1, $2, $3)",
                        &[&user_id, &sealed, &resealed],
                    )
                    .await?
                    .get(0);
                report.resealed += u64::from(replaced);
            }
            Err(error) => {
                tracing::warn!(%user_id, error = %error, "Stored session opens under no configured key");
                report.unreadable += 1;
            }
        }
    }
    Ok(report)
}

//! `capture reseal-cookies`: moves every stored session to the current key.
//!
//! Key rotation: put the new key first in `COOKIE_SEAL_KEYS` (new sessions
//! are sealed with it at once, old ones still open), run this, then drop the
//! old key. Each row is updated only if it still holds the value read, so a
//! trader pasting a new session meanwhile is never overwritten.

use cookie_seal::Keyring;
use uuid::Uuid;

use crate::queue::{Queue, QueueError};

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Rows moved to the current key.
    pub resealed: u64,
    /// Rows already under the current key.
    pub current: u64,
    /// Rows that open under no configured key (left as they are).
    pub unreadable: u64,
}

/// Seals `session` for `user_id` and stores it as their valid session;
/// `false` when the user has no config row.
pub async fn store_session(
    queue: &Queue,
    keys: &Keyring,
    user_id: Uuid,
    session: &cookie_seal::TradingViewSession,
) -> Result<bool, QueueError> {
    let client = queue.pool().get().await?;
    let sealed = keys.seal(user_id, session);
    let updated = client
        .execute(
            "update public.user_config set tradingview_cookies_sealed = $2, cookies_valid = true \
              where user_id = $1",
            &[&user_id, &sealed],
        )
        .await?;
    Ok(updated == 1)
}

/// Re-seals every row not sealed under `keys`' current key.
pub async fn reseal_all(queue: &Queue, keys: &Keyring) -> Result<Resealed, QueueError> {
    let client = queue.pool().get().await?;
    let rows = client
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
                let updated = client
                    .execute(
                        "update public.user_config set tradingview_cookies_sealed = $3 \
                          where user_id = $1 and tradingview_cookies_sealed = $2",
                        &[&user_id, &sealed, &resealed],
                    )
                    .await?;
                report.resealed += updated;
            }
            Err(error) => {
                tracing::warn!(%user_id, error = %error, "Stored session opens under no configured key");
                report.unreadable += 1;
            }
        }
    }
    Ok(report)
}

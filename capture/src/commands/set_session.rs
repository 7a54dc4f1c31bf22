//! `capture set-session --user-id ID`: stores a trader's TradingView
//! session, sealed, from two lines on stdin (`sessionid`, then
//! `sessionid_sign`), for operators and benchmarks. Stdin, not arguments,
//! so the values stay out of process listings and shell history.

use std::io::BufRead;

use anyhow::Context as _;
use cookie_seal::{Keyring, TradingViewSession};
use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::session;

/// Reads the session from `input` and stores it for `user_id`.
pub async fn run(
    pool: &Pool,
    keys: Option<&Keyring>,
    user_id: Uuid,
    input: impl BufRead,
) -> anyhow::Result<()> {
    let keys = keys.context("set-session needs COOKIE_SEAL_KEYS")?;
    let tradingview = read_session(input)?;
    let db = pool.get().await.context("Failed to connect to Postgres")?;
    session::store(&db, keys, user_id, &tradingview)
        .await
        .context("Failed to store the session")?;
    tracing::info!(%user_id, key_id = keys.current_key_id(), "Stored the sealed TradingView session");
    Ok(())
}

/// The two cookie values, one per line, trimmed; a missing or blank line
/// is an error naming it.
pub fn read_session(input: impl BufRead) -> anyhow::Result<TradingViewSession> {
    let mut lines = input.lines();
    let mut next = |what: &str| {
        lines
            .next()
            .transpose()
            .context("Failed to read stdin")?
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .with_context(|| format!("expected {what} on stdin"))
    };
    Ok(TradingViewSession {
        sessionid: next("the sessionid line")?,
        sessionid_sign: next("the sessionid_sign line")?,
    })
}

#[cfg(test)]
mod tests {
    use super::read_session;

    #[test]
    fn two_lines_trimmed() {
        let session = read_session(&b"  sid-1 \r\nsign-1\n"[..]).expect("two lines");
        assert_eq!(session.sessionid, "sid-1");
        assert_eq!(session.sessionid_sign, "sign-1");
    }

    #[test]
    fn a_missing_or_blank_line_is_named() {
        for (input, missing) in [
            (&b""[..], "the sessionid line"),
            (&b"sid\n"[..], "the sessionid_sign line"),
            (&b"sid\n   \nsign\n"[..], "the sessionid_sign line"),
            (&b"\nsign\n"[..], "the sessionid line"),
        ] {
            let error = read_session(input).expect_err("incomplete");
            assert_eq!(error.to_string(), format!("expected {missing} on stdin"));
        }
    }

    #[test]
    fn the_values_stay_out_of_errors_and_debug() {
        let session = read_session(&b"sid-secret\nsign-secret\n"[..]).expect("two lines");
        let debug = format!("{session:?}");
        assert!(!debug.contains("sid-secret") && !debug.contains("sign-secret"));
    }
}

//! [`WebhookToken`]: the secret in a trader's webhook URL.
//!
//! Its own crate because two crates hold tokens: ingest reads them from the
//! request path, and the webhook spool stores them with each webhook it
//! keeps and refuses, on reading, a token no edge could have accepted. Both
//! need the one type, and the spool must not depend on the edge.
//!
//! The database issues tokens of 43 URL-safe base64 characters (32 random
//! bytes). The edge checks only the alphabet and a band of lengths around
//! that, so obviously malformed paths are answered 404 without a database
//! round trip, while a future change of token length in SQL needs no edge
//! release. The token is a bearer secret: `Debug` never prints it, and logs
//! use [`WebhookToken::fingerprint`] instead.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Shortest token accepted: 128 bits in URL-safe base64.
pub const MIN_TOKEN_LEN: usize = 22;
/// Longest token accepted: 512 bits in URL-safe base64.
pub const MAX_TOKEN_LEN: usize = 86;

/// A well-formed webhook token: URL-safe base64 (or hex) characters,
/// `A-Z a-z 0-9 - _`, 22..=86 of them. Whether it belongs to anyone is for
/// the database to say.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WebhookToken(String);

/// Why a path segment is not a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "webhook token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} URL-safe characters (A-Z a-z 0-9 - _)"
)]
pub struct WebhookTokenError;

impl WebhookToken {
    /// Checks `s` and keeps it. Nothing is trimmed or re-cased: tokens are
    /// compared byte for byte.
    pub fn parse(s: &str) -> Result<Self, WebhookTokenError> {
        let ok = (MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(WebhookTokenError)
        }
    }

    /// The token itself, for the database call only. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first 8 hex digits of the token's SHA-256: enough to tell one
    /// trader's deliveries apart in logs, useless for calling the webhook.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        format!(
            "{:08x}",
            u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
        )
    }
}

impl fmt::Debug for WebhookToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookToken({})", self.fingerprint())
    }
}

impl FromStr for WebhookToken {
    type Err = WebhookTokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::WebhookToken;

    const ISSUED: &str = "q3vG7Xk1_Zp0-LmN2bC4dE5fG6hI7jK8lM9nO0pQ1rS";

    #[test]
    fn accepts_database_issued_tokens() {
        assert_eq!(ISSUED.len(), 43);
        let token = WebhookToken::parse(ISSUED).unwrap();
        assert_eq!(token.expose(), ISSUED);
    }

    #[test]
    fn debug_shows_only_a_fingerprint() {
        let token = WebhookToken::parse(ISSUED).unwrap();
        let debug = format!("{token:?}");
        assert!(!debug.contains(ISSUED));
        assert_eq!(token.fingerprint().len(), 8);
        assert!(debug.contains(&token.fingerprint()));
    }

    #[test]
    fn rejects_malformed_tokens() {
        for bad in [
            "",
            "short",
            "has space in the middle of it..",
            "ñ".repeat(30).as_str(),
            &"a".repeat(87),
            "abc/def/ghi/jkl/mno/pqr/stu",
        ] {
            assert!(WebhookToken::parse(bad).is_err(), "{bad:?}");
        }
    }
}

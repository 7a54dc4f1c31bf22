//! Sealing a trader's TradingView session for storage at rest.
//!
//! ingest seals the `sessionid` / `sessionid_sign` pair a trader pastes; the
//! capture daemon opens it for the few seconds a capture takes. Neither the
//! table nor a database dump ever holds the plaintext.
//!
//! # Format
//!
//! `version (1 byte = 1) | key id length (1 byte) | key id | nonce (24 bytes) | ciphertext + tag`
//!
//! - XChaCha20-Poly1305: the 192-bit nonce is random per seal, so one key can
//!   seal any number of values without nonce bookkeeping.
//! - The user id is the associated data: a sealed value copied onto another
//!   trader's row does not open there.
//! - The key id names the key that sealed it, so keys rotate: a [`Keyring`]
//!   holds several keys, seals with the first and opens with whichever the
//!   key id names (`capture reseal-cookies` moves every row to the first).
//!
//! Plaintext lives in [`TradingViewSession`], whose `Debug` prints
//! `[redacted]`, and key material in [`secrecy`] types.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;
/// Longest key id; keeps the header small and the ids readable in config.
pub const MAX_KEY_ID_LEN: usize = 32;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A key in the configuration is malformed.
    #[error("invalid seal key {key_id:?}: {reason}")]
    InvalidKey {
        key_id: String,
        reason: &'static str,
    },
    /// The configuration has no key at all.
    #[error("no seal keys configured (COOKIE_SEAL_KEYS)")]
    NoKeys,
    /// The sealed bytes are not in the format above.
    #[error("the sealed value is malformed")]
    Malformed,
    /// The sealed value names a key this keyring does not hold.
    #[error("the sealed value was sealed under key {0:?}, which is not configured")]
    UnknownKey(String),
    /// Wrong key, wrong user, or tampered bytes (AEAD cannot tell which).
    #[error("the sealed value does not open (wrong key or user, or tampered)")]
    Open,
}

/// A trader's TradingView session: the two cookies that sign them in.
#[derive(Clone, Serialize, Deserialize)]
pub struct TradingViewSession {
    pub sessionid: String,
    pub sessionid_sign: String,
}

impl fmt::Debug for TradingViewSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TradingViewSession([redacted])")
    }
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// The configured keys: the first seals, all open.
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Parses `id:base64key[,id:base64key...]` (32-byte keys, standard
    /// base64), the form `COOKIE_SEAL_KEYS` takes. The first key seals.
    pub fn parse(spec: &SecretString) -> Result<Self, SealError> {
        let mut keys = Vec::new();
        for entry in spec
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (id, material) = entry.split_once(':').ok_or(SealError::InvalidKey {
                key_id: String::new(),
                reason: "expected id:base64key",
            })?;
            let invalid = |reason| SealError::InvalidKey {
                key_id: id.to_owned(),
                reason,
            };
            if id.is_empty()
                || id.len() > MAX_KEY_ID_LEN
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid("key id must be 1-32 characters of [A-Za-z0-9_-]"));
            }
            let bytes = SecretBox::new(Box::new(
                STANDARD
                    .decode(material.trim())
                    .map_err(|_| invalid("key is not standard base64"))?,
            ));
            if bytes.expose_secret().len() != KEY_LEN {
                return Err(invalid("key must be 32 bytes"));
            }
            if keys.iter().any(|k: &Key| k.id == id) {
                return Err(invalid("key id appears twice"));
            }
            let cipher = XChaCha20Poly1305::new_from_slice(bytes.expose_secret())
                .map_err(|_| invalid("key must be 32 bytes"))?;
            keys.push(Key {
                id: id.to_owned(),
                cipher,
            });
        }
        if keys.is_empty() {
            return Err(SealError::NoKeys);
        }
        Ok(Self { keys })
    }

    /// The ids of the configured keys, the sealing key first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Seals `session` for `user_id` under the current key.
    ///
    /// # Panics
    ///
    /// Never in practice: serialising two strings and encrypting in memory
    /// cannot fail.
    pub fn seal(&self, user_id: Uuid, session: &TradingViewSession) -> Vec<u8> {
        let key = &self.keys[0];
        let plaintext = SecretBox::new(Box::new(
            serde_json::to_vec(session).expect("two strings always serialise"),
        ));
        let nonce_bytes: [u8; NONCE_LEN] = rand_nonce();
        let nonce = XNonce::from_slice(&nonce_bytes);
        let ciphertext = key
            .cipher
            .encrypt(
                nonce,
                Payload {
                    msg: plaintext.expose_secret(),
                    aad: user_id.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory sizes");
        let mut sealed = Vec::with_capacity(2 + key.id.len() + NONCE_LEN + ciphertext.len());
        sealed.push(VERSION);
        sealed.push(u8::try_from(key.id.len()).expect("key ids are at most 32 bytes"));
        sealed.extend_from_slice(key.id.as_bytes());
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// The id of the key that sealed `sealed`, without opening it.
    pub fn sealed_key_id(sealed: &[u8]) -> Result<&str, SealError> {
        let (id, _, _) = split(sealed)?;
        Ok(id)
    }

    /// Opens a value sealed for `user_id` under any configured key.
    pub fn open(&self, user_id: Uuid, sealed: &[u8]) -> Result<TradingViewSession, SealError> {
        let (id, nonce, ciphertext) = split(sealed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let plaintext = SecretBox::new(Box::new(
            key.cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: user_id.as_bytes(),
                    },
                )
                .map_err(|_| SealError::Open)?,
        ));
        serde_json::from_slice(plaintext.expose_secret()).map_err(|_| SealError::Malformed)
    }
}

fn split(sealed: &[u8]) -> Result<(&str, &[u8], &[u8]), SealError> {
    let [version, id_len, rest @ ..] = sealed else {
        return Err(SealError::Malformed);
    };
    if *version != VERSION {
        return Err(SealError::Malformed);
    }
    let id_len = usize::from(*id_len);
    if id_len == 0 || id_len > MAX_KEY_ID_LEN || rest.len() < id_len + NONCE_LEN + 16 {
        return Err(SealError::Malformed);
    }
    let (id, rest) = rest.split_at(id_len);
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let id = std::str::from_utf8(id).map_err(|_| SealError::Malformed)?;
    Ok((id, nonce, ciphertext))
}

fn rand_nonce() -> [u8; NONCE_LEN] {
    use chacha20poly1305::aead::{AeadCore as _, OsRng};
    XChaCha20Poly1305::generate_nonce(&mut OsRng).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> Keyring {
        Keyring::parse(&SecretString::from(spec.to_owned())).expect("valid keyring")
    }

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    fn session() -> TradingViewSession {
        TradingViewSession {
            sessionid: "abc123".into(),
            sessionid_sign: "v3:sig".into(),
        }
    }

    #[test]
    fn round_trip() {
        let keys = ring(&format!("k1:{}", key(1)));
        let user = Uuid::new_v4();
        let sealed = keys.seal(user, &session());
        assert_eq!(Keyring::sealed_key_id(&sealed).unwrap(), "k1");
        let opened = keys.open(user, &sealed).unwrap();
        assert_eq!(opened.sessionid, "abc123");
        assert_eq!(opened.sessionid_sign, "v3:sig");
        assert!(!sealed.windows(6).any(|w| w == b"abc123"), "no plaintext");
    }

    #[test]
    fn another_users_value_does_not_open() {
        let keys = ring(&format!("k1:{}", key(1)));
        let sealed = keys.seal(Uuid::new_v4(), &session());
        assert!(matches!(
            keys.open(Uuid::new_v4(), &sealed),
            Err(SealError::Open)
        ));
    }

    #[test]
    fn tampering_is_detected() {
        let keys = ring(&format!("k1:{}", key(1)));
        let user = Uuid::new_v4();
        let mut sealed = keys.seal(user, &session());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(keys.open(user, &sealed), Err(SealError::Open)));
        assert!(matches!(
            keys.open(user, &[1, 2]),
            Err(SealError::Malformed)
        ));
    }

    #[test]
    fn rotation_first_seals_all_open() {
        let old = ring(&format!("old:{}", key(1)));
        let user = Uuid::new_v4();
        let sealed_old = old.seal(user, &session());
        let rotated = ring(&format!("new:{},old:{}", key(2), key(1)));
        assert_eq!(rotated.current_key_id(), "new");
        assert_eq!(rotated.open(user, &sealed_old).unwrap().sessionid, "abc123");
        let resealed = rotated.seal(user, &rotated.open(user, &sealed_old).unwrap());
        assert_eq!(Keyring::sealed_key_id(&resealed).unwrap(), "new");
        assert!(matches!(
            old.open(user, &resealed),
            Err(SealError::UnknownKey(id)) if id == "new"
        ));
    }

    #[test]
    fn bad_keys_are_refused() {
        let parse = |s: &str| Keyring::parse(&SecretString::from(s.to_owned()));
        assert!(matches!(parse(""), Err(SealError::NoKeys)));
        assert!(parse("k1").is_err());
        assert!(parse(&format!("k1:{}", STANDARD.encode([0u8; 16]))).is_err());
        assert!(parse("k1:not base64!").is_err());
        assert!(parse(&format!("k1:{},k1:{}", key(1), key(2))).is_err());
        assert!(parse(&format!("bad id:{}", key(1))).is_err());
    }

    #[test]
    fn debug_never_shows_secrets() {
        assert!(!format!("{:?}", session()).contains("abc123"));
        let keys = ring(&format!("k1:{}", key(1)));
        assert!(!format!("{keys:?}").contains(&key(1)));
    }
}

//! What the edge remembers about webhook tokens, so that strangers are
//! throttled by what they control (the token) and never by where
//! TradingView sends from.
//!
//! - **Known tokens**: ones the database answered with anything but
//!   `unknown_token` within [`KNOWN_FOR`]. A known token is never refused
//!   because of its address, costs no budget, and may fill the spool while
//!   the database is down. The set survives a restart: with a state
//!   directory (the spool's) it is saved to [`FILE_NAME`] there, atomically,
//!   periodically and on shutdown, and loaded at start, so an ingest
//!   restarted during an outage still tells its traders from strangers.
//! - **Unknown tokens** (the negative cache): ones the database said no
//!   webhook has, for [`UNKNOWN_FOR`]. They are answered 404 from memory: a
//!   stranger repeating a guess, or a trader's old alerts still firing at a
//!   rotated token, cost the database nothing and nobody else anything.
//! - Everything else is *unverified*: it needs the database's word, which
//!   the guard rations ([`crate::guard`]).
//!
//! Tokens are remembered by a [`TokenKey`], the first 128 bits of their
//! SHA-256, never in plaintext: the file holds no secret a reader could post
//! with (the tokens themselves carry 256 random bits, so the hash cannot be
//! reversed by guessing).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::signal::WebhookToken;

/// How long a token the database recognised counts as known: a week, so
/// alerts that fire once a week, or a restart during an outage after a
/// quiet weekend, still find their trader known.
pub const KNOWN_FOR: Duration = Duration::from_hours(7 * 24);
/// Most known tokens remembered; past it, new ones stay unverified.
pub const MAX_KNOWN: usize = 500_000;
/// How long a token the database did not know is answered 404 from memory.
/// Tokens are 256 random bits made by the database, so none of them turns
/// valid later; the limit only bounds the damage of a database that
/// wrongly answered `unknown_token` (one restored from an old backup).
pub const UNKNOWN_FOR: Duration = Duration::from_mins(10);
/// Most unknown tokens remembered.
pub const MAX_UNKNOWN: usize = 100_000;
/// The file in the state directory.
pub const FILE_NAME: &str = "known-tokens";
/// The file's first bytes (format version 1).
const MAGIC: &[u8; 8] = b"SCKTOK01";
/// A known token's last-seen time is rewritten to disk only when it moved by
/// this much: a trader's every alert must not make the file dirty.
const SEEN_RESOLUTION_SECS: u64 = 3600;

/// A token as the edge remembers it: 128 bits of its SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenKey([u8; 16]);

impl TokenKey {
    pub fn of(token: &WebhookToken) -> Self {
        let digest = Sha256::digest(token.expose().as_bytes());
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        Self(key)
    }

    /// 64 bits of the key, for the batcher's per-token bookkeeping.
    pub fn short(&self) -> u64 {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(bytes)
    }
}

/// What the edge knows about a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStatus {
    /// The database recognised it recently.
    Known,
    /// The database said no webhook has it, recently.
    Unknown,
    /// Neither: only the database can tell.
    Unverified,
}

/// The known tokens and the negative cache.
#[derive(Debug, Default)]
pub struct TokenMemory {
    /// Key → when the database last recognised it (Unix seconds).
    known: Mutex<HashMap<TokenKey, u64>>,
    unknown: Mutex<HashMap<TokenKey, Instant>>,
    /// Whether `known` changed since it was last saved.
    dirty: AtomicBool,
}

/// Why the file could not be read; the caller starts with an empty set.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("could not read {0}")]
    Io(String, #[source] io::Error),
    #[error("{0} is not a known-tokens file or is damaged; it is ignored")]
    Damaged(String),
}

impl TokenMemory {
    /// What the edge knows about `key` right now.
    pub fn status(&self, key: TokenKey) -> TokenStatus {
        let now = unix_now();
        if lock(&self.known)
            .get(&key)
            .is_some_and(|seen| now.saturating_sub(*seen) < KNOWN_FOR.as_secs())
        {
            return TokenStatus::Known;
        }
        if lock(&self.unknown)
            .get(&key)
            .is_some_and(|at| at.elapsed() < UNKNOWN_FOR)
        {
            return TokenStatus::Unknown;
        }
        TokenStatus::Unverified
    }

    /// Learns from the database's `outcome` for `key`: `unknown_token`
    /// makes it unknown (and no longer known: a rotated token), anything
    /// else known.
    pub fn learn(&self, key: TokenKey, outcome: &str) {
        if outcome == "unknown_token" {
            if lock(&self.known).remove(&key).is_some() {
                self.dirty.store(true, Ordering::Relaxed);
            }
            let mut unknown = lock(&self.unknown);
            if unknown.len() >= MAX_UNKNOWN && !unknown.contains_key(&key) {
                unknown.retain(|_, at| at.elapsed() < UNKNOWN_FOR);
                if unknown.len() >= MAX_UNKNOWN {
                    // Errs towards asking the database again, which the
                    // guard's budget for unverified tokens bounds.
                    unknown.clear();
                }
            }
            unknown.insert(key, Instant::now());
            return;
        }
        lock(&self.unknown).remove(&key);
        let now = unix_now();
        let mut known = lock(&self.known);
        if let Some(seen) = known.get_mut(&key) {
            if now.saturating_sub(*seen) >= SEEN_RESOLUTION_SECS {
                *seen = now;
                self.dirty.store(true, Ordering::Relaxed);
            }
            return;
        }
        if known.len() >= MAX_KNOWN {
            known.retain(|_, seen| now.saturating_sub(*seen) < KNOWN_FOR.as_secs());
            if known.len() >= MAX_KNOWN {
                return;
            }
        }
        known.insert(key, now);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Known tokens remembered (expired ones included until they are
    /// pruned at the next save).
    pub fn known_len(&self) -> usize {
        lock(&self.known).len()
    }

    /// Reads the known tokens saved in `dir`, keeping those still within
    /// [`KNOWN_FOR`]. No file is an empty set, not an error.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let path = dir.join(FILE_NAME);
        let shown = path.display().to_string();
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut file) => file
                .read_to_end(&mut bytes)
                .map_err(|e| LoadError::Io(shown.clone(), e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(LoadError::Io(shown, e)),
        };
        let known = decode(&bytes).ok_or(LoadError::Damaged(shown))?;
        let now = unix_now();
        Ok(Self {
            known: Mutex::new(
                known
                    .into_iter()
                    .filter(|(_, seen)| now.saturating_sub(*seen) < KNOWN_FOR.as_secs())
                    .collect(),
            ),
            ..Self::default()
        })
    }

    /// Writes the known tokens to `dir` if they changed since the last
    /// save: a new file, fsync'd, renamed over the old one, and the
    /// directory fsync'd, so a crash leaves the old set or the new one,
    /// never half of either. Returns whether it wrote.
    pub fn save(&self, dir: &Path) -> io::Result<bool> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(false);
        }
        let now = unix_now();
        let bytes = {
            let mut known = lock(&self.known);
            known.retain(|_, seen| now.saturating_sub(*seen) < KNOWN_FOR.as_secs());
            encode(&known)
        };
        let written = write_atomically(dir, &bytes);
        if written.is_err() {
            // Try again next time.
            self.dirty.store(true, Ordering::Relaxed);
        }
        written.map(|()| true)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single insert or remove: a panic cannot leave the
    // map half-changed.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `MAGIC`, then per token its 16-byte key and last-seen time (u64 LE),
/// then a CRC-32 of everything before it (LE).
fn encode(known: &HashMap<TokenKey, u64>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(MAGIC.len() + known.len() * 24 + 4);
    bytes.extend_from_slice(MAGIC);
    for (key, seen) in known {
        bytes.extend_from_slice(&key.0);
        bytes.extend_from_slice(&seen.to_le_bytes());
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<HashMap<TokenKey, u64>> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let entries = body.strip_prefix(MAGIC)?;
    if entries.len() % 24 != 0 {
        return None;
    }
    Some(
        entries
            .chunks_exact(24)
            .map(|entry| {
                let mut key = [0; 16];
                key.copy_from_slice(&entry[..16]);
                let mut seen = [0; 8];
                seen.copy_from_slice(&entry[16..]);
                (TokenKey(key), u64::from_le_bytes(seen))
            })
            .collect(),
    )
}

fn write_atomically(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let path = dir.join(FILE_NAME);
    let temporary = dir.join(format!("{FILE_NAME}.new"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, &path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> TokenKey {
        TokenKey([n; 16])
    }

    #[test]
    fn a_token_is_known_after_any_answer_but_unknown_token() {
        let memory = TokenMemory::default();
        assert_eq!(memory.status(key(1)), TokenStatus::Unverified);
        memory.learn(key(1), "quota_exceeded");
        assert_eq!(memory.status(key(1)), TokenStatus::Known);
        memory.learn(key(1), "unknown_token");
        assert_eq!(
            memory.status(key(1)),
            TokenStatus::Unknown,
            "a rotated token is forgotten and answered from memory"
        );
        memory.learn(key(1), "accepted");
        assert_eq!(memory.status(key(1)), TokenStatus::Known);
    }

    #[test]
    fn keys_are_a_hash_not_the_token() {
        let token = WebhookToken::parse("abcdefghijklmnopqrstuvwxyz0123").expect("token");
        let key = TokenKey::of(&token);
        assert_eq!(key, TokenKey::of(&token));
        assert!(!key.0.windows(4).any(|w| w == b"abcd"));
        let other = WebhookToken::parse("abcdefghijklmnopqrstuvwxyz0124").expect("token");
        assert_ne!(key, TokenKey::of(&other));
    }

    #[test]
    fn the_known_set_survives_a_restart_and_only_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let memory = TokenMemory::default();
        memory.learn(key(1), "accepted");
        memory.learn(key(2), "webhook_disabled");
        memory.learn(key(3), "unknown_token");
        assert!(memory.save(dir.path()).expect("saved"));
        assert!(!memory.save(dir.path()).expect("nothing new"), "unchanged");

        let loaded = TokenMemory::load(dir.path()).expect("loaded");
        assert_eq!(loaded.status(key(1)), TokenStatus::Known);
        assert_eq!(loaded.status(key(2)), TokenStatus::Known);
        assert_eq!(
            loaded.status(key(3)),
            TokenStatus::Unverified,
            "the negative cache is memory only"
        );
        let bytes = fs::read(dir.path().join(FILE_NAME)).expect("file");
        assert_eq!(bytes.len(), 8 + 2 * 24 + 4);
        let mode = fs::metadata(dir.path().join(FILE_NAME))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_file_is_refused_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(
            TokenMemory::load(dir.path()).expect("no file").known_len(),
            0
        );
        let memory = TokenMemory::default();
        memory.learn(key(1), "accepted");
        memory.save(dir.path()).expect("saved");
        let path = dir.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).expect("file");
        bytes[10] ^= 1;
        fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            TokenMemory::load(dir.path()),
            Err(LoadError::Damaged(_))
        ));
        fs::write(&path, b"SCK").expect("write");
        assert!(matches!(
            TokenMemory::load(dir.path()),
            Err(LoadError::Damaged(_))
        ));
    }

    #[test]
    fn expired_tokens_are_not_loaded() {
        let mut old = HashMap::new();
        old.insert(key(1), unix_now() - KNOWN_FOR.as_secs() - 10);
        old.insert(key(2), unix_now() - 60);
        let dir = tempfile::tempdir().expect("dir");
        fs::write(dir.path().join(FILE_NAME), encode(&old)).expect("write");
        let loaded = TokenMemory::load(dir.path()).expect("loaded");
        assert_eq!(loaded.known_len(), 1);
        assert_eq!(loaded.status(key(2)), TokenStatus::Known);
    }
}

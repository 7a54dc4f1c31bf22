//! Secret settings that need more than [`secrecy::SecretString`].
//!
//! A Postgres URL is a secret (it carries the password) that is also worth
//! checking at start-up: a typo should stop the binary with a clear message
//! before it accepts any work, not surface as a connection error later. The
//! same holds for the keys that seal traders' TradingView sessions
//! ([`SealKeys`]).
//!
//! clap's own message for a value it cannot parse repeats the value
//! (`invalid value 'postgres://app:hunter2@...'`), and that message lands
//! in the service's log. [`SecretParser`] parses the same way but says only
//! which setting was wrong and why, so a secret with a typo in it is not
//! printed.

use std::ffi::OsStr;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::Arc;

use clap::builder::{TypedValueParser, ValueParserFactory};
use clap::error::ErrorKind;
use cookie_seal::{Keyring, SealError};
use secrecy::{ExposeSecret as _, SecretString};
use url::Url;

/// What stands in for a password in logs; plain characters, so the URL
/// stays readable instead of percent-encoded.
const REDACTED: &str = "***";

/// A `postgres://` or `postgresql://` connection URL, checked at parse time.
///
/// `Debug` prints only the non-secret parts (user, host, port, database), so
/// a `Config` holding one can be logged as a whole.
#[derive(Clone)]
pub struct DatabaseUrl {
    /// The URL exactly as given, for the driver.
    raw: SecretString,
    /// The same URL with the password removed, for logs.
    redacted: String,
}

/// Why a string is not a usable database URL. The message never repeats the
/// input, which may contain a password.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    /// Not a URL at all.
    #[error("not a URL: {0}")]
    Syntax(#[source] url::ParseError),
    /// A URL, but not one a Postgres driver understands.
    #[error("expected a postgres:// or postgresql:// URL, got a {scheme}:// URL")]
    Scheme { scheme: String },
}

impl DatabaseUrl {
    /// The full URL, password included, for handing to the database driver.
    pub fn expose(&self) -> &str {
        self.raw.expose_secret()
    }

    /// The URL without its password, safe for logs.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl FromStr for DatabaseUrl {
    type Err = DatabaseUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut url = Url::parse(s).map_err(DatabaseUrlError::Syntax)?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(DatabaseUrlError::Scheme {
                scheme: url.scheme().to_owned(),
            });
        }
        if url.password().is_some() {
            // Cannot fail: a URL with a password has a host.
            let _ = url.set_password(Some(REDACTED));
        }
        // libpq also accepts the password as a query parameter.
        if url.query_pairs().any(|(key, _)| key == "password") {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(key, value)| {
                    let value = if key == "password" {
                        REDACTED.into()
                    } else {
                        value
                    };
                    (key.into_owned(), value.into_owned())
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        Ok(Self {
            raw: SecretString::from(s.to_owned()),
            redacted: url.to_string(),
        })
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&self.redacted).finish()
    }
}

impl ValueParserFactory for DatabaseUrl {
    type Parser = SecretParser<Self>;

    fn value_parser() -> Self::Parser {
        SecretParser::new()
    }
}

/// A clap value parser for secrets: [`FromStr`], and an error that names
/// the setting and the reason but never the value.
pub struct SecretParser<T>(PhantomData<fn() -> T>);

impl<T> SecretParser<T> {
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for SecretParser<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for SecretParser<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for SecretParser<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretParser")
    }
}

impl<T> TypedValueParser for SecretParser<T>
where
    T: FromStr + Clone + Send + Sync + 'static,
    T::Err: fmt::Display,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let invalid = |reason: String| {
            let name = arg.map_or_else(|| "a setting".to_owned(), ToString::to_string);
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid value for '{name}' (not shown, it is secret): {reason}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| invalid("not valid UTF-8".to_owned()))?;
        text.parse()
            .map_err(|reason: T::Err| invalid(reason.to_string()))
    }
}

/// The keys that seal and open traders' TradingView sessions, as a setting:
/// `COOKIE_SEAL_KEYS=id:base64-32-bytes[,id:key...]` parsed into a
/// [`Keyring`] at start-up (a malformed key stops the binary before it
/// serves anything, and the message names the key id, never the key).
#[derive(Clone)]
pub struct SealKeys(Arc<Keyring>);

impl SealKeys {
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.0
    }
}

impl FromStr for SealKeys {
    type Err = SealError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Keyring::parse(&SecretString::from(s.to_owned())).map(|keys| Self(Arc::new(keys)))
    }
}

impl fmt::Debug for SealKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl ValueParserFactory for SealKeys {
    type Parser = SecretParser<Self>;

    fn value_parser() -> Self::Parser {
        SecretParser::new()
    }
}

/// `COOKIE_SEAL_KEYS`, as each binary's config flattens it.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct SealKeySettings {
    /// Keys that seal and open traders' TradingView sessions:
    /// `id:base64-32-bytes[,id:key...]`. The first seals (ingest's session
    /// endpoint, `capture set-session`, `capture reseal-cookies`), all open
    /// (the capture daemon). Without them ingest's session endpoint is off
    /// and capture draws the built-in chart for every signal.
    #[arg(
        id = "cookie_seal_keys",
        long = "cookie-seal-keys",
        value_name = "COOKIE_SEAL_KEYS",
        env = "COOKIE_SEAL_KEYS",
        hide_env_values = true
    )]
    pub keys: Option<SealKeys>,
}

impl SealKeySettings {
    /// The keyring, when keys are configured.
    pub fn keyring(&self) -> Option<&Arc<Keyring>> {
        self.keys.as_ref().map(SealKeys::keyring)
    }
}

/// The headers that authenticate a service to a Supabase project (PostgREST,
/// Storage): a new secret key (`sb_secret_...`) goes only in `apikey` (the
/// project's gateway maps it to the service role); a legacy service-role JWT
/// also as the bearer token, which PostgREST and Storage check themselves.
/// Both services use this one rule.
pub fn supabase_service_headers(key: &SecretString) -> Vec<(&'static str, String)> {
    let key = key.expose_secret();
    let mut headers = vec![("apikey", key.to_owned())];
    if !key.starts_with("sb_") {
        headers.push(("Authorization", format!("Bearer {key}")));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::DatabaseUrl;

    #[test]
    fn debug_and_redacted_hide_the_password() {
        let url: DatabaseUrl = "postgres://app:hunter2@db.example:5432/postgres"
            .parse()
            .expect("valid URL");
        assert_eq!(
            url.expose(),
            "postgres://app:hunter2@db.example:5432/postgres"
        );
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(!url.redacted().contains("hunter2"));
        assert_eq!(
            url.redacted(),
            "postgres://app:***@db.example:5432/postgres"
        );
    }

    #[test]
    fn password_in_the_query_is_hidden_too() {
        let url: DatabaseUrl = "postgresql:///postgres?host=/run/pg&user=app&password=hunter2"
            .parse()
            .expect("valid URL");
        assert!(!url.redacted().contains("hunter2"));
        assert!(url.redacted().contains("user=app"));
    }

    #[test]
    fn rejects_other_schemes_without_echoing_the_input() {
        let error = "mysql://root:hunter2@localhost/db"
            .parse::<DatabaseUrl>()
            .expect_err("wrong scheme");
        let message = error.to_string();
        assert!(message.contains("mysql"));
        assert!(!message.contains("hunter2"));
    }

    #[derive(Debug, clap::Parser)]
    struct Settings {
        #[arg(long)]
        database_url: Option<DatabaseUrl>,
        #[arg(long)]
        seal_keys: Option<super::SealKeys>,
    }

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        use clap::Parser as _;
        Settings::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
    }

    #[test]
    fn a_bad_secret_is_reported_without_its_value() {
        let error = parse(&["--database-url=mysql://root:hunter2@localhost/db"])
            .expect_err("wrong scheme")
            .to_string();
        assert!(error.contains("--database-url"), "{error}");
        assert!(error.contains("mysql"), "the reason is given: {error}");
        assert!(!error.contains("hunter2"), "{error}");

        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="; // 31 bytes
        let error = parse(&[&format!("--seal-keys=k1:{key}")])
            .expect_err("a short key")
            .to_string();
        assert!(
            error.contains("--seal-keys") && error.contains("k1"),
            "{error}"
        );
        assert!(error.contains("32 bytes"), "{error}");
        assert!(!error.contains(key), "{error}");
    }

    #[test]
    fn seal_keys_parse_into_a_keyring_that_never_prints_a_key() {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        let settings = parse(&[&format!("--seal-keys=new:{key},old:{key}")]).expect("valid");
        let keys = settings.seal_keys.expect("keys");
        assert_eq!(keys.keyring().current_key_id(), "new");
        assert_eq!(keys.keyring().key_ids().collect::<Vec<_>>(), ["new", "old"]);
        assert!(!format!("{keys:?}").contains(&key));
    }

    #[test]
    fn secret_keys_go_in_apikey_only_and_legacy_jwts_also_as_bearer() {
        use super::{SecretString, supabase_service_headers};
        assert_eq!(
            supabase_service_headers(&SecretString::from("sb_secret_abc")),
            vec![("apikey", "sb_secret_abc".to_owned())]
        );
        assert_eq!(
            supabase_service_headers(&SecretString::from("eyJ.a.b")),
            vec![
                ("apikey", "eyJ.a.b".to_owned()),
                ("Authorization", "Bearer eyJ.a.b".to_owned())
            ]
        );
    }
}

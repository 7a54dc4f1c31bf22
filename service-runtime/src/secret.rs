//! Secret settings that need more than [`secrecy::SecretString`].
//!
//! A Postgres URL is a secret (it carries the password) that is also worth
//! checking at start-up: a typo should stop the binary with a clear message
//! before it accepts any work, not surface as a connection error later.

use std::fmt;
use std::str::FromStr;

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

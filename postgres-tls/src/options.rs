//! Reading a connection URL: which TLS it asks for, and what we do when it
//! asks for nothing.
//!
//! `sslmode` means what it means to libpq:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` | tried; plaintext when the server refuses TLS | not checked (the chain is, with an `sslrootcert` file) |
//! | `require` | always | not checked (the chain is, with an `sslrootcert` file, as libpq does) |
//! | `verify-ca` | always | the chain, to `sslrootcert` or the system's roots |
//! | `verify-full` | always | the chain and the host name |
//!
//! `sslrootcert` is a PEM file of trusted roots, or `system`: the system's
//! store (which, as in libpq 16, makes `verify-full` the default and any
//! weaker mode an error). Without `sslrootcert`, `verify-ca` and
//! `verify-full` trust the system's store (libpq would read
//! `~/.postgresql/root.crt`; services here have no such home).
//!
//! **Our default differs from libpq's.** libpq defaults to `prefer`, which
//! silently falls back to plaintext when the server (or anyone in the path)
//! says it has no TLS. Here the default is `prefer` only when every host is
//! a loopback address or a Unix socket, and `require` otherwise, so a hosted
//! database is never reached in plaintext by accident. `prefer` towards a
//! non-loopback host is refused for the same reason: the only way to talk
//! plaintext across a network is an explicit `sslmode=disable`, and then
//! [`ConnectConfig::from_url`] logs a warning. Unix sockets carry no TLS
//! (Postgres does not offer it there), so any mode connects to them in
//! plaintext, as libpq does.
//!
//! One nuance of `prefer`: it falls back to plaintext when the server
//! answers the TLS request with "no"; a TLS handshake that fails is an
//! error (libpq would retry in plaintext). Since `prefer` is only accepted
//! towards loopback, that matters only on one machine.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::percent_decode_str;
use tokio_postgres::config::Host;

use crate::stream::{MakeRustlsConnect, TlsStream};
use crate::verify::{self, Verification};

/// libpq's `sslmode`, the five values this project accepts (`allow` is
/// left out: it tries plaintext first, which nothing here should want).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The spelling libpq uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(ConfigError::SslMode {
                    value: other.to_owned(),
                });
            }
        })
    }
}

/// Where the trusted roots come from (`sslrootcert`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootSource {
    /// A PEM file of one or more certificates.
    File(PathBuf),
    /// The system's store (`sslrootcert=system`, or no `sslrootcert` with a
    /// verifying mode).
    System,
}

/// Why a URL cannot be connected with. No message repeats the URL (it may
/// carry the password); host names and paths are not secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("expected a postgres:// or postgresql:// URL")]
    NotAUrl,
    #[error("sslmode={value:?} is not one of disable, prefer, require, verify-ca, verify-full")]
    SslMode { value: String },
    #[error("the URL is not valid Postgres connection settings")]
    Settings(#[source] tokio_postgres::Error),
    #[error(
        "weak sslmode {mode} may not be used with sslrootcert=system (use verify-full, or a root file)"
    )]
    WeakWithSystemRoots { mode: SslMode },
    #[error(
        "sslmode=prefer would fall back to plaintext if {host} (not a loopback address) refused TLS: \
         use sslmode=require or verify-full, or sslmode=disable to accept plaintext explicitly"
    )]
    PreferToRemote { host: String },
    #[error(
        "the URL mixes Unix-socket and TCP hosts; with TLS (sslmode={mode}) give one kind only"
    )]
    MixedHosts { mode: SslMode },
    #[error("sslrootcert={path}: cannot read it")]
    RootFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sslrootcert={path}: {reason}")]
    RootCertificates { path: PathBuf, reason: String },
    #[error("the system's certificate store has no usable root ({reason})")]
    SystemRoots { reason: String },
    #[error("the TLS settings could not be built")]
    Tls(#[source] rustls::Error),
}

/// A parsed connection URL: the settings `tokio-postgres` takes and the TLS
/// connector that does what `sslmode` asks.
#[derive(Clone)]
pub struct ConnectConfig {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    mode: SslMode,
    verification: Verification,
}

impl fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio_postgres::Config's Debug redacts the password.
        f.debug_struct("ConnectConfig")
            .field("sslmode", &self.mode)
            .field("verification", &self.verification)
            .field("hosts", &self.config.get_hosts())
            .finish_non_exhaustive()
    }
}

/// Where a URL's hosts are, as far as TLS is concerned.
#[derive(Debug, Default)]
struct Hosts {
    unix: usize,
    tcp: usize,
    /// The first host that is neither a Unix socket nor a loopback address.
    remote: Option<String>,
}

impl ConnectConfig {
    /// Parses `url`, loads the roots it needs, and decides the TLS (see the
    /// module doc). Logs a warning when `sslmode=disable` sends the
    /// connection to a non-loopback address in plaintext.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let (rest, mode, root) = split_tls_params(url)?;
        let mut config: tokio_postgres::Config = rest.parse().map_err(ConfigError::Settings)?;
        let hosts = classify(&config);
        let mode = match (mode, &root) {
            (Some(mode), Some(RootSource::System)) if mode != SslMode::VerifyFull => {
                return Err(ConfigError::WeakWithSystemRoots { mode });
            }
            (Some(mode), _) => mode,
            (None, Some(RootSource::System)) => SslMode::VerifyFull,
            (None, _) if hosts.remote.is_some() => SslMode::Require,
            (None, _) => SslMode::Prefer,
        };
        if mode == SslMode::Prefer
            && let Some(host) = &hosts.remote
        {
            return Err(ConfigError::PreferToRemote { host: host.clone() });
        }
        if mode != SslMode::Disable && hosts.unix > 0 && hosts.tcp > 0 {
            return Err(ConfigError::MixedHosts { mode });
        }
        if mode == SslMode::Disable
            && let Some(host) = &hosts.remote
        {
            tracing::warn!(
                host = %host,
                "sslmode=disable: the connection to this non-loopback address is not encrypted; \
                 the password and every row cross the network in plaintext"
            );
        }
        let verification = match mode {
            SslMode::Disable => Verification::None,
            SslMode::Prefer | SslMode::Require => {
                if matches!(root, Some(RootSource::File(_))) {
                    Verification::Chain
                } else {
                    Verification::None
                }
            }
            SslMode::VerifyCa => Verification::Chain,
            SslMode::VerifyFull => Verification::Full,
        };
        let roots = match verification {
            Verification::None => None,
            Verification::Chain | Verification::Full => {
                Some(verify::roots(root.as_ref().unwrap_or(&RootSource::System))?)
            }
        };
        let tls = MakeRustlsConnect::new(verify::client_config(verification, roots.as_ref())?);
        // Postgres offers no TLS on a Unix socket: connect there in plaintext
        // whatever the mode, as libpq does.
        config.ssl_mode(if hosts.tcp == 0 && hosts.unix > 0 {
            tokio_postgres::config::SslMode::Disable
        } else {
            match mode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                    tokio_postgres::config::SslMode::Require
                }
            }
        });
        Ok(Self {
            config,
            tls,
            mode,
            verification,
        })
    }

    /// The mode in effect (the URL's, or our default).
    pub fn ssl_mode(&self) -> SslMode {
        self.mode
    }

    /// What is checked of the server's certificate.
    pub fn verification(&self) -> Verification {
        self.verification
    }

    /// The settings and the connector, for a pool builder.
    pub fn parts(&self) -> (tokio_postgres::Config, MakeRustlsConnect) {
        (self.config.clone(), self.tls.clone())
    }

    /// Opens one session.
    pub async fn connect(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, TlsStream<tokio_postgres::Socket>>,
        ),
        tokio_postgres::Error,
    > {
        self.config.connect(self.tls.clone()).await
    }
}

/// Splits `sslmode` and `sslrootcert` off the URL's query; the rest is for
/// `tokio-postgres`, whose parser knows neither `verify-*` nor
/// `sslrootcert`.
fn split_tls_params(
    url: &str,
) -> Result<(String, Option<SslMode>, Option<RootSource>), ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::NotAUrl);
    }
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None, None));
    };
    let mut mode = None;
    let mut root = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = || percent_decode_str(value).decode_utf8_lossy().into_owned();
        match percent_decode_str(key).decode_utf8_lossy().as_ref() {
            "sslmode" => mode = Some(value().parse()?),
            "sslrootcert" => {
                let value = value();
                root = Some(if value == "system" {
                    RootSource::System
                } else {
                    RootSource::File(PathBuf::from(value))
                });
            }
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode, root))
}

/// Which of the configured hosts are local. With `hostaddr`, that address
/// is where the connection goes, so it decides.
fn classify(config: &tokio_postgres::Config) -> Hosts {
    let mut hosts = Hosts::default();
    let names = config.get_hosts();
    let addrs = config.get_hostaddrs();
    for i in 0..names.len().max(addrs.len()) {
        let remote = match (addrs.get(i), names.get(i)) {
            (Some(addr), _) => {
                hosts.tcp += 1;
                (!addr.is_loopback()).then(|| addr.to_string())
            }
            (None, Some(Host::Tcp(name))) => {
                hosts.tcp += 1;
                (!is_loopback_name(name)).then(|| name.clone())
            }
            (None, Some(Host::Unix(_))) => {
                hosts.unix += 1;
                None
            }
            (None, None) => None,
        };
        if hosts.remote.is_none() {
            hosts.remote = remote;
        }
    }
    hosts
}

fn is_loopback_name(name: &str) -> bool {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(url: &str) -> Result<SslMode, ConfigError> {
        ConnectConfig::from_url(url).map(|c| c.ssl_mode())
    }

    #[test]
    fn explicit_modes_are_kept() {
        for mode in ["disable", "require", "verify-ca", "verify-full"] {
            let url = format!("postgres://u:p@db.example.com:5432/postgres?sslmode={mode}");
            assert_eq!(mode_of(&url).expect("valid").as_str(), mode);
        }
        assert_eq!(
            mode_of("postgres://u@127.0.0.1/db?sslmode=prefer").expect("loopback"),
            SslMode::Prefer
        );
    }

    #[test]
    fn the_default_is_require_away_from_loopback_and_prefer_on_it() {
        assert_eq!(
            mode_of("postgres://u:p@db.example.com/postgres").expect("valid"),
            SslMode::Require
        );
        assert_eq!(
            mode_of("postgresql://u@10.0.0.5:6543/postgres?application_name=x").expect("valid"),
            SslMode::Require
        );
        for local in [
            "postgres://u@127.0.0.1:5432/db",
            "postgres://u@localhost/db",
            "postgres://u@[::1]:5432/db",
            "postgresql://u@/db?host=/run/postgresql",
        ] {
            assert_eq!(mode_of(local).expect(local), SslMode::Prefer, "{local}");
        }
    }

    #[test]
    fn prefer_towards_a_remote_host_is_refused() {
        let error = mode_of("postgres://u:hunter2@db.example.com/db?sslmode=prefer")
            .expect_err("could fall back to plaintext");
        let message = error.to_string();
        assert!(message.contains("db.example.com"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn hostaddr_decides_where_the_connection_goes() {
        assert_eq!(
            mode_of("postgres://u@db.example.com/db?hostaddr=127.0.0.1").expect("valid"),
            SslMode::Prefer
        );
        assert_eq!(
            mode_of("postgres://u@localhost/db?hostaddr=192.0.2.7").expect("valid"),
            SslMode::Require
        );
    }

    #[test]
    fn system_roots_imply_verify_full_and_refuse_weaker_modes() {
        assert_eq!(
            mode_of("postgres://u@db.example.com/db?sslrootcert=system").expect("valid"),
            SslMode::VerifyFull
        );
        for weak in ["disable", "prefer", "require", "verify-ca"] {
            let url = format!("postgres://u@127.0.0.1/db?sslrootcert=system&sslmode={weak}");
            assert!(
                matches!(mode_of(&url), Err(ConfigError::WeakWithSystemRoots { .. })),
                "{weak}"
            );
        }
    }

    #[test]
    fn unknown_modes_and_missing_root_files_are_clear_errors() {
        let error = mode_of("postgres://u@db.example.com/db?sslmode=allow").expect_err("allow");
        assert!(error.to_string().contains("\"allow\""), "{error}");
        let error = mode_of(
            "postgres://u@db.example.com/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
        )
        .expect_err("no such file");
        assert!(error.to_string().contains("/nonexistent/ca.crt"), "{error}");
        assert!(matches!(
            mode_of("host=db.example.com sslmode=require"),
            Err(ConfigError::NotAUrl)
        ));
    }

    #[test]
    fn the_tls_parameters_are_stripped_and_the_rest_kept() {
        let (rest, mode, root) = split_tls_params(
            "postgres://u:p@h/db?application_name=a%20b&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&connect_timeout=3",
        )
        .expect("valid");
        assert_eq!(
            rest,
            "postgres://u:p@h/db?application_name=a%20b&connect_timeout=3"
        );
        assert_eq!(mode, Some(SslMode::VerifyFull));
        assert_eq!(root, Some(RootSource::File("/tmp/ca.pem".into())));
        let (rest, _, _) = split_tls_params("postgres://u@h/db?sslmode=require").expect("valid");
        assert_eq!(rest, "postgres://u@h/db");
    }

    #[test]
    fn unix_sockets_never_use_tls_and_do_not_mix_with_tcp() {
        let config =
            ConnectConfig::from_url("postgresql://u@/db?host=/run/postgresql&sslmode=verify-full")
                .expect("a socket ignores sslmode, as in libpq");
        assert_eq!(
            config.parts().0.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        let mixed = ConnectConfig::from_url(
            "postgresql://u@127.0.0.1,%2Frun%2Fpostgresql/db?sslmode=require",
        );
        assert!(
            matches!(mixed, Err(ConfigError::MixedHosts { .. })),
            "{mixed:?}"
        );
    }

    /// What `from_url` logs for `url`, at every level.
    fn logged_by(url: &str) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            ConnectConfig::from_url(url).expect("valid");
        });
        let bytes = buffer.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("UTF-8")
    }

    #[test]
    fn plaintext_to_a_remote_host_is_allowed_only_explicitly_and_with_a_warning() {
        let log = logged_by("postgres://u:hunter2@db.example.com:5432/db?sslmode=disable");
        assert!(
            log.contains("WARN")
                && log.contains("sslmode=disable")
                && log.contains("db.example.com"),
            "{log}"
        );
        assert!(!log.contains("hunter2"), "{log}");
        assert_eq!(
            logged_by("postgres://u:hunter2@127.0.0.1:5432/db?sslmode=disable"),
            "",
            "plaintext on loopback is no news"
        );
        assert_eq!(
            logged_by("postgres://u@db.example.com/db?sslmode=require"),
            ""
        );
    }

    #[test]
    fn debug_shows_the_mode_but_not_the_password() {
        let config =
            ConnectConfig::from_url("postgres://u:hunter2@db.example.com/db?sslmode=require")
                .expect("valid");
        let debug = format!("{config:?}");
        assert!(
            debug.contains("Require") && !debug.contains("hunter2"),
            "{debug}"
        );
    }
}

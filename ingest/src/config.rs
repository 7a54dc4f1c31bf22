//! Every setting ingest reads, parsed once at start-up.
//!
//! Each flag has an environment variable fallback (the names `.env.example`
//! documents), so the same binary runs from a shell, systemd or a container.
//! Values are parsed here, not where they are used: a malformed URL or
//! duration stops the binary before it accepts a single request.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use service_runtime::LogFormat;
use service_runtime::SecretString;
use service_runtime::secret::DatabaseUrl;
use url::Url;

/// The `ingest` binary's settings.
///
/// Database path: when `DATABASE_URL` is set, `public.ingest_signal` is
/// called over a direct Postgres pool (no HTTP hop); otherwise through
/// PostgREST at `SUPABASE_URL` with the service key. One of the two is
/// required.
#[derive(Debug, Parser)]
#[command(name = "ingest", version, about, long_about = None)]
#[command(group(
    clap::ArgGroup::new("service_key")
        .args(["supabase_secret_key", "supabase_service_role_key"])
        .multiple(true)
))]
pub struct Config {
    /// Address the webhook server listens on. TradingView only calls ports
    /// 80 and 443, so in production a reverse proxy or tunnel sits in front.
    #[arg(long, env = "INGEST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Base URL of the Supabase project (or the local stack's gateway), e.g.
    /// `https://abcd.supabase.co`. PostgREST is reached at `/rest/v1`.
    #[arg(
        long,
        env = "SUPABASE_URL",
        required_unless_present = "database_url",
        requires = "service_key"
    )]
    pub supabase_url: Option<Url>,

    /// Supabase secret key (`sb_secret_...`), sent as `apikey`. Wins over
    /// `SUPABASE_SERVICE_ROLE_KEY` when both are set.
    #[arg(long, env = "SUPABASE_SECRET_KEY", hide_env_values = true)]
    supabase_secret_key: Option<SecretString>,

    /// Legacy service-role JWT, used only when `SUPABASE_SECRET_KEY` is not
    /// set (projects that have not moved to the new API keys yet).
    #[arg(long, env = "SUPABASE_SERVICE_ROLE_KEY", hide_env_values = true)]
    supabase_service_role_key: Option<SecretString>,

    /// Direct Postgres URL. When set, ingest calls `public.ingest_signal`
    /// over a connection pool instead of through PostgREST.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,

    /// How long in-flight requests may take to finish after SIGTERM/SIGINT
    /// before they are cut off (e.g. `10s`, `1500ms`).
    #[arg(
        long,
        env = "INGEST_SHUTDOWN_GRACE",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub shutdown_grace: Duration,
}

impl Config {
    /// The key used to call Supabase as the service: `SUPABASE_SECRET_KEY`
    /// if set, else the legacy `SUPABASE_SERVICE_ROLE_KEY`.
    pub fn service_key(&self) -> Option<&SecretString> {
        self.supabase_secret_key
            .as_ref()
            .or(self.supabase_service_role_key.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};
    use service_runtime::ExposeSecret as _;

    use super::Config;

    #[test]
    fn verify_cli() {
        Config::command().debug_assert();
    }

    /// Parses `args` with every environment fallback switched off, so the
    /// tests do not depend on what the shell running them exports (CI
    /// sources `.dev/stack.env`, which sets `DATABASE_URL` and friends).
    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let matches = Config::command()
            .mut_args(|arg| arg.env(None))
            .try_get_matches_from(std::iter::once("ingest").chain(args.iter().copied()))?;
        Config::from_arg_matches(&matches)
    }

    #[test]
    fn secret_key_wins_over_the_legacy_key() {
        let config = parse(&[
            "--supabase-url=http://127.0.0.1:54321",
            "--supabase-service-role-key=legacy",
            "--supabase-secret-key=sb_secret_new",
        ])
        .expect("valid");
        let key = config.service_key().expect("a key");
        assert_eq!(key.expose_secret(), "sb_secret_new");
        assert!(!format!("{config:?}").contains("sb_secret_new"));
    }

    #[test]
    fn legacy_key_alone_is_accepted() {
        let config = parse(&[
            "--supabase-url=http://127.0.0.1:54321",
            "--supabase-service-role-key=legacy",
        ])
        .expect("valid");
        assert_eq!(
            config.service_key().expect("a key").expose_secret(),
            "legacy"
        );
    }

    #[test]
    fn supabase_url_without_a_key_is_rejected() {
        assert!(parse(&["--supabase-url=http://127.0.0.1:54321"]).is_err());
    }

    #[test]
    fn a_database_path_is_required() {
        assert!(parse(&[]).is_err());
        let config = parse(&["--database-url=postgres://u:p@localhost/db"]).expect("valid");
        assert!(config.supabase_url.is_none());
    }

    #[test]
    fn durations_and_addresses_parse_up_front() {
        let config = parse(&[
            "--database-url=postgres://localhost/db",
            "--shutdown-grace=1500ms",
            "--listen=0.0.0.0:9000",
        ])
        .expect("valid");
        assert_eq!(config.shutdown_grace.as_millis(), 1500);
        assert_eq!(config.listen.port(), 9000);
        assert!(
            parse(&[
                "--database-url=postgres://localhost/db",
                "--shutdown-grace=soon"
            ])
            .is_err()
        );
        assert!(parse(&["--database-url=mysql://localhost/db"]).is_err());
    }
}

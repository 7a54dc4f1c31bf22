//! Every setting the capture daemon reads, parsed once at start-up.
//!
//! Each flag has an environment variable fallback (the names `.env.example`
//! documents). Values are parsed here, not where they are used, so a bad
//! value stops the daemon before it claims any work.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use service_runtime::LogFormat;
use service_runtime::secret::DatabaseUrl;

/// The `capture` binary's settings.
#[derive(Debug, Parser)]
#[command(name = "capture", version, about, long_about = None)]
pub struct Config {
    /// Direct Postgres URL. Must reach Postgres in session mode (directly or
    /// through a session-mode pooler): the daemon holds one session open
    /// for LISTEN, which transaction-mode pooling cannot carry.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: DatabaseUrl,

    /// How many charts are rendered at once. Each one is a Chrome browser
    /// context costing 100+ MB, so the ceiling is deliberately low.
    #[arg(
        long,
        env = "CAPTURE_CONCURRENCY",
        default_value_t = 3,
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    pub concurrency: u16,

    /// Process the queue until it is empty, then exit instead of waiting
    /// for new jobs (for tests and one-off back-fills).
    #[arg(long)]
    pub drain: bool,

    /// Address of the health endpoint (`GET /health/live`).
    #[arg(long, env = "CAPTURE_HEALTH_LISTEN", default_value = "127.0.0.1:8081")]
    pub health_listen: SocketAddr,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,

    /// How long work in flight may take to finish after SIGTERM/SIGINT
    /// (e.g. `10s`, `1500ms`).
    #[arg(
        long,
        env = "CAPTURE_SHUTDOWN_GRACE",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub shutdown_grace: Duration,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::Config;

    #[test]
    fn verify_cli() {
        Config::command().debug_assert();
    }

    /// Parses `args` with every environment fallback switched off, so the
    /// tests do not depend on what the shell running them exports.
    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let matches = Config::command()
            .mut_args(|arg| arg.env(None))
            .try_get_matches_from(std::iter::once("capture").chain(args.iter().copied()))?;
        Config::from_arg_matches(&matches)
    }

    #[test]
    fn database_url_is_required() {
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn defaults() {
        let config = parse(&["--database-url=postgres://u:secret@localhost/db"]).expect("valid");
        assert_eq!(config.concurrency, 3);
        assert!(!config.drain);
        assert_eq!(config.health_listen.port(), 8081);
        assert_eq!(config.shutdown_grace.as_secs(), 10);
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn concurrency_is_bounded() {
        let base = "--database-url=postgres://localhost/db";
        assert!(parse(&[base, "--concurrency=0"]).is_err());
        assert!(parse(&[base, "--concurrency=65"]).is_err());
        assert_eq!(
            parse(&[base, "--concurrency=8"])
                .expect("valid")
                .concurrency,
            8
        );
    }
}

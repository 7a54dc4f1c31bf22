//! Every setting the capture daemon reads, parsed once at start-up.
//!
//! Each flag has an environment variable fallback (the names `.env.example`
//! documents). Values are parsed here, not where they are used, so a bad
//! value stops the daemon before it claims any work.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use service_runtime::secret::{DatabaseUrl, SealKeySettings};
use service_runtime::{ExposeSecret as _, Logging, SecretString, SupabaseSettings};
use url::Url;

use crate::egress;
use crate::page::PageRules;
use crate::session_check::SessionCheckSettings;
use crate::storage::StorageKind;

/// TradingView's chart page for the signal's symbol and interval.
pub const DEFAULT_CHART_URL: &str = "https://www.tradingview.com/chart/{chart_id}/?symbol={symbol}&interval={interval}&theme={theme}";
/// The `capture` binary's settings.
#[derive(Debug, Parser)]
#[command(name = "capture", version, about, long_about = None)]
pub struct Config {
    /// What to do; without a subcommand the daemon runs.
    #[command(subcommand)]
    pub command: Option<Command>,

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

    #[command(flatten)]
    pub logging: Logging,

    /// How long work in flight may take to finish after SIGTERM/SIGINT
    /// (e.g. `10s`, `1500ms`).
    #[arg(
        long,
        env = "CAPTURE_SHUTDOWN_GRACE",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub shutdown_grace: Duration,

    /// Hard limit for one capture attempt (render, upload).
    #[arg(long, env = "CAPTURE_JOB_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub job_timeout: Duration,

    /// Lease per claimed job. Must outlive the job timeout: a daemon that
    /// vanishes (kill -9, lost host) gets its jobs reclaimed this long after
    /// it claimed them.
    #[arg(long, env = "CAPTURE_LEASE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub lease: Duration,

    /// Rescan the queue this often even without a NOTIFY (the fallback when
    /// the LISTEN session is down).
    #[arg(long, env = "CAPTURE_POLL_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// This daemon's name in the queue (`locked_by`, heartbeats). Default:
    /// host name and process id.
    #[arg(long, env = "CAPTURE_WORKER_ID")]
    pub worker_id: Option<String>,

    /// The Chromium binary.
    #[arg(long, env = "CHROMIUM_PATH", default_value = "/usr/bin/chromium")]
    pub chromium: PathBuf,

    /// The unprivileged user Chromium runs as when the daemon runs as root
    /// (Chromium never runs as root: without this setting a root daemon
    /// refuses to start). A user of its own, nothing else running as it.
    /// A daemon that is not root runs Chromium as itself.
    #[arg(long, env = "CAPTURE_CHROMIUM_USER")]
    pub chromium_user: Option<String>,

    /// The `host:port` targets Chromium may reach although they are not on
    /// the public internet (loopback, private, link-local, metadata),
    /// comma-separated and exact, e.g. `127.0.0.1:8080,charts.lan:443`.
    /// Everything else non-public is refused, for pages and every request
    /// they make.
    #[arg(long, env = "CAPTURE_EGRESS_ALLOW", default_value = "")]
    pub egress_allow: egress::Allow,

    /// Pages kept ready in fresh, never-used browser contexts, so a capture
    /// starts on a ready tab instead of waiting for one (each spare costs
    /// Chromium a few MB). Each serves one capture and is then disposed of;
    /// 0 creates every page when its capture starts.
    #[arg(long, env = "CAPTURE_PREWARM", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(0..=16))]
    pub prewarm: u16,

    /// Relaunch Chromium after this many captures.
    #[arg(long, env = "CAPTURE_BROWSER_RECYCLE_AFTER", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub browser_recycle_after: u32,

    /// The chart URL. Placeholders: `{chart_id}`, `{symbol}` (`EXCHANGE:SYMBOL`),
    /// `{interval}` (TradingView's resolution: `60`, `1D`), `{theme}`, `{ticker}`,
    /// `{exchange}`; each value is URL-encoded.
    #[arg(long, env = "CAPTURE_CHART_URL_TEMPLATE", default_value = DEFAULT_CHART_URL)]
    pub chart_url_template: String,

    /// How the chart page is read: drawn, signed out, the chart area, the
    /// overlays (see [`crate::page`]).
    #[command(flatten)]
    pub page: PageRules,

    /// Cookies set with the session, `name=value` separated by `;`. The
    /// default presets TradingView's cookie banner as answered, so it never
    /// covers the chart (evidence: the screenshot tools set
    /// `cookiePrivacyPreferenceBannerProduction`).
    #[arg(long, env = "CAPTURE_EXTRA_COOKIES", default_value = "cookiePrivacyPreferenceBannerProduction=accepted",
          value_parser = parse_cookies)]
    pub extra_cookies: Cookies,

    /// Where screenshots go: `supabase` (Storage REST at `SUPABASE_URL`) or
    /// `fs:<directory>` (the local stack).
    #[arg(long, env = "STORAGE", default_value = "supabase")]
    pub storage: StorageKind,

    /// The Supabase project and the key that may write the bucket (for
    /// `STORAGE=supabase`).
    #[command(flatten)]
    pub supabase: SupabaseSettings,

    /// The Storage bucket.
    #[arg(long, env = "SCREENSHOT_BUCKET", default_value = "screenshots")]
    pub bucket: String,

    /// Whether the bucket is public (then `screenshot_url` is filled too).
    #[arg(long, env = "SCREENSHOT_BUCKET_PUBLIC", default_value_t = false)]
    pub bucket_public: bool,

    /// `COOKIE_SEAL_KEYS`: without keys every capture uses the built-in
    /// chart.
    #[command(flatten)]
    pub seal: SealKeySettings,

    /// Telegram bot token (from `@BotFather`). With it, traders link their
    /// chat by sending the bot `/start <code>` (the daemon long-polls the
    /// bot's updates) and then get each signal and its screenshot there.
    #[arg(long, env = "TELEGRAM_BOT_TOKEN", hide_env_values = true)]
    pub telegram_bot_token: Option<SecretString>,

    /// The TradingView session checks (`check-sessions`, and the daemon's
    /// periodic check).
    #[command(flatten)]
    pub session_checks: SessionCheckSettings,

    /// The Bot API's base URL.
    #[arg(
        long,
        env = "TELEGRAM_API_URL",
        default_value = "https://api.telegram.org"
    )]
    pub telegram_api_url: Url,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Re-seal every stored TradingView session under the current (first)
    /// key, after adding a new key in front of `COOKIE_SEAL_KEYS`.
    ResealCookies,
    /// Store a trader's TradingView session, sealed, from two lines on
    /// stdin (`sessionid`, then `sessionid_sign`), for operators and
    /// benchmarks; traders use ingest's `PUT /v1/tradingview-session`.
    SetSession {
        /// The trader's user id.
        #[arg(long)]
        user_id: uuid::Uuid,
    },
    /// Check every stored TradingView session due for a check (not checked
    /// within `CAPTURE_SESSION_CHECK_INTERVAL`) now, over HTTP: valid ones
    /// stay valid, signed-out ones are marked expired and their traders told.
    /// Shares the daemon's schedule, so neither checks a session twice within
    /// an interval.
    CheckSessions,
    /// Delete screenshots older than their owner's plan retention and those
    /// of deleted signals (through the Storage API, or from the `fs:`
    /// directory), then clear the rows' screenshot fields. Safe to interrupt
    /// and to re-run: schedule it (cron, a systemd timer) once a day.
    Prune {
        /// Screenshots deleted per Storage request.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
        batch_size: u16,
    },
}

/// `name=value` pairs.
#[derive(Clone, Debug, Default)]
pub struct Cookies(pub Vec<(String, String)>);

fn parse_cookies(s: &str) -> Result<Cookies, String> {
    s.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("expected name=value, got {pair:?}"))?;
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect::<Result<_, String>>()
        .map(Cookies)
}

impl Config {
    /// Checks what clap cannot: relations between settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease < self.job_timeout + Duration::from_secs(5)
            || self.lease < Duration::from_secs(10)
        {
            return Err(
                "CAPTURE_LEASE must be at least 10 s and 5 s longer than CAPTURE_JOB_TIMEOUT"
                    .into(),
            );
        }
        if let Some(token) = &self.telegram_bot_token
            && crate::telegram::bot_id_of(token.expose_secret()).is_none()
        {
            return Err(
                "TELEGRAM_BOT_TOKEN is not a bot token (<bot id>:<secret>, as @BotFather gives it)"
                    .into(),
            );
        }
        if self.storage == StorageKind::Supabase
            && (self.supabase.url.is_none() || self.storage_key().is_none())
        {
            return Err(
                "STORAGE=supabase needs SUPABASE_URL and SUPABASE_SECRET_KEY (or SUPABASE_SERVICE_ROLE_KEY)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The key for Storage uploads: the secret key, else the legacy JWT.
    pub fn storage_key(&self) -> Option<SecretString> {
        self.supabase.service_key().cloned()
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::{Config, egress};

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
        assert_eq!(config.job_timeout.as_secs(), 30);
        assert_eq!(config.prewarm, 1);
        assert_eq!(config.chromium_user, None);
        assert_eq!(
            config.egress_allow,
            egress::Allow::default(),
            "nothing private allowed"
        );
        assert!(config.lease > config.job_timeout);
        assert!(!format!("{config:?}").contains(":secret@"));
    }

    #[test]
    fn lease_must_outlive_the_job_timeout() {
        let base = "--database-url=postgres://localhost/db";
        let ok = parse(&[base, "--storage=fs:/tmp/x"]).expect("valid");
        assert!(ok.validate().is_ok());
        let short = parse(&[base, "--storage=fs:/tmp/x", "--lease=20s"]).expect("parses");
        assert!(short.validate().is_err());
        let supabase = parse(&[base]).expect("parses");
        assert!(
            supabase.validate().is_err(),
            "supabase storage needs its URL and key"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let config = parse(&[
            "--database-url=postgres://localhost/db",
            "--supabase-secret-key=sb_secret_abc",
            &format!("--cookie-seal-keys=k1:{key}"),
        ])
        .expect("valid");
        assert_eq!(
            config.seal.keyring().map(|keys| keys.current_key_id()),
            Some("k1")
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("sb_secret_abc") && !debug.contains(key));
    }

    #[test]
    fn a_malformed_seal_key_stops_the_daemon_without_printing_it() {
        let error = parse(&[
            "--database-url=postgres://localhost/db",
            "--cookie-seal-keys=k1:AAAA",
        ])
        .expect_err("a 3-byte key")
        .to_string();
        assert!(error.contains("k1") && !error.contains("AAAA"), "{error}");
    }

    #[test]
    fn the_egress_allow_list_is_parsed_up_front() {
        let base = "--database-url=postgres://localhost/db";
        let config =
            parse(&[base, "--egress-allow=127.0.0.1:8080, charts.lan:443"]).expect("valid");
        assert_eq!(
            config.egress_allow.to_string(),
            "127.0.0.1:8080,charts.lan:443"
        );
        let error = parse(&[base, "--egress-allow=127.0.0.1"])
            .expect_err("no port")
            .to_string();
        assert!(error.contains("is not host:port"), "{error}");
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

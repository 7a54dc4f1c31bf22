//! Every setting ingest reads, parsed once at start-up.
//!
//! Each flag has an environment variable fallback (the names `.env.example`
//! documents), so the same binary runs from a shell, systemd or a container.
//! Values are parsed here, not where they are used: a malformed URL or
//! duration stops the binary before it accepts a single request.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use service_runtime::secret::{DatabaseUrl, SealKeySettings};
use service_runtime::supabase::SERVICE_KEY;
use service_runtime::{Logging, SecretString, SupabaseSettings};
use url::Url;

use crate::db::DEFAULT_MAX_BATCH_BYTES;

/// The `ingest` binary's settings.
///
/// Database path: when `DATABASE_URL` is set, `public.ingest_signal` is
/// called over a direct Postgres pool (no HTTP hop); otherwise through
/// PostgREST at `SUPABASE_URL` with the service key. One of the two is
/// required.
#[derive(Debug, Parser)]
#[command(name = "ingest", version, about, long_about = None)]
// The PostgREST path needs the service key; one of the two paths is needed.
#[command(mut_arg("supabase_url", |arg| arg
    .required_unless_present("database_url")
    .requires(SERVICE_KEY)))]
pub struct Config {
    /// Address the webhook server listens on. TradingView only calls ports
    /// 80 and 443, so in production a reverse proxy or tunnel sits in front.
    #[arg(long, env = "INGEST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A separate address for `/health`, `/health/live`, `/health/ready` and
    /// `/metrics`. When set they are served only there (the webhook
    /// listener answers them 404), so only the orchestrator and Prometheus
    /// can reach them. Unset: they are on `INGEST_LISTEN`.
    #[arg(long, env = "INGEST_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// The Supabase project: PostgREST at `SUPABASE_URL` with the service
    /// key is the database path unless `DATABASE_URL` is set.
    #[command(flatten)]
    pub supabase: SupabaseSettings,

    /// Direct Postgres URL. When set, ingest calls `public.ingest_signal`
    /// (and the session endpoint stores sessions) over a connection pool
    /// instead of through PostgREST.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,

    #[command(flatten)]
    pub logging: Logging,

    /// How long in-flight requests may take to finish after SIGTERM/SIGINT
    /// before they are cut off (e.g. `10s`, `1500ms`).
    #[arg(
        long,
        env = "INGEST_SHUTDOWN_GRACE",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub shutdown_grace: Duration,

    /// Largest webhook body accepted, in bytes. TradingView alert messages
    /// are short; a larger body is refused with 413 as soon as its
    /// Content-Length (or its first bytes past the limit) shows it.
    #[arg(long, env = "INGEST_MAX_BODY_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    pub max_body_bytes: u32,

    /// How long a client may take to send a request's headers, and then its
    /// body. A slow client, or a connection that sends nothing, is cut off
    /// instead of holding a connection.
    #[arg(long, env = "INGEST_READ_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub read_timeout: Duration,

    /// How long an idle keep-alive connection is kept open (the shorter of
    /// this and `INGEST_READ_TIMEOUT` applies: the wait for the next
    /// request's headers counts against that too). A reverse proxy that
    /// keeps connections to ingest open must close them sooner than this.
    #[arg(long, env = "INGEST_KEEP_ALIVE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub keep_alive_timeout: Duration,

    /// How long one database call may take before the webhook is answered
    /// 503 (TradingView retries it). Keep it well under TradingView's 3 s.
    #[arg(long, env = "INGEST_DB_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub db_timeout: Duration,

    /// Connections served at once; more wait in the kernel's backlog. A bar
    /// close brings thousands at once, each on a new connection: below that
    /// many, connections that have sent nothing for 200 ms are closed to
    /// make room. Ingest raises its open-file limit to match (up to the
    /// hard limit).
    #[arg(long, env = "INGEST_MAX_CONNECTIONS", default_value_t = 16_384,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Connections the kernel holds for ingest before it accepts them (the
    /// listen backlog). At a bar close thousands arrive within a second;
    /// one that finds the backlog full is retried by the client only after
    /// 1 s, then 3 s. The kernel caps it at `net.core.somaxconn` (4096 by
    /// default since Linux 5.4): raise that too to go higher.
    #[arg(long, env = "INGEST_LISTEN_BACKLOG", default_value_t = service_runtime::http::DEFAULT_BACKLOG,
          value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub listen_backlog: u32,

    /// Connections in the direct Postgres pool (with `DATABASE_URL`); more
    /// than `INGEST_DB_CONCURRENCY`, which the webhooks' calls use, so that
    /// `/health` and the session endpoint find one too.
    #[arg(long, env = "INGEST_DB_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(2..=512))]
    pub db_pool_size: u32,

    /// Database calls for webhooks in flight at once. Alerts that arrive
    /// while all of them are busy are gathered into the next call. Few
    /// calls make large batches, which cost the database far less per
    /// alert; raise it when the database is far away (each call then holds
    /// a slot for a whole round trip). BENCHMARKS.md, "batched against one
    /// call per alert".
    #[arg(long, env = "INGEST_DB_CONCURRENCY", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub db_concurrency: u32,

    /// Most alerts in one `ingest_signals` call (1: every alert alone). At
    /// most 64: each alert of a batch takes a subtransaction, and Postgres
    /// keeps 64 of them per transaction in its fast path.
    #[arg(long, env = "INGEST_DB_MAX_BATCH", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub db_max_batch: u32,

    /// On the PostgREST path, the most bytes of one call's body: a batch
    /// ends before it would pass this (an alert larger than it goes alone).
    /// Keep it within the request-body buffer of the gateway in front of
    /// PostgREST (8 KiB in nginx and Kong by default): a larger body is
    /// written to disk and forwarded in two parts, and the call waits tens
    /// of milliseconds for the second.
    #[arg(long, env = "INGEST_DB_MAX_BATCH_BYTES", default_value_t = DEFAULT_MAX_BATCH_BYTES,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub db_max_batch_bytes: u32,

    /// With a spool: how long a webhook may wait for its database call to
    /// start before the database path counts as saturated and the webhook
    /// is spooled instead (202 at once, stored by the replay). Keeps
    /// answers well within TradingView's 3 s during bar-close bursts.
    #[arg(long, env = "INGEST_DB_QUEUE_BUDGET", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub db_queue_budget: Duration,

    /// Unverified tokens (neither known nor known to be unknown) one client
    /// address outside `INGEST_ALLOWED_SOURCES` may spend per minute (all
    /// addresses when that is empty): unknown-token answers, and unverified
    /// webhooks spooled while the database is down. Past it, 429 without a
    /// database call. Known tokens and allowed addresses never spend it.
    #[arg(long, env = "INGEST_UNKNOWN_TOKEN_PER_MINUTE", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub unknown_token_per_minute: u32,

    /// Database calls for unverified tokens in flight at once, from all
    /// addresses together: the share of the database path that guessed
    /// tokens can take. Past it, such webhooks are spooled (within the
    /// spool's limits) or answered 503.
    #[arg(long, env = "INGEST_UNVERIFIED_IN_FLIGHT", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub unverified_in_flight: u32,

    /// Directory of the durable spool: while the database path is down or
    /// saturated, webhooks are appended here (fsync'd) and answered 202,
    /// then replayed in arrival order. A local disk, one ingest per
    /// directory; it also keeps the tokens the database recognised (hashed)
    /// across restarts. Unset: no spool, the answer is 503.
    #[arg(long, env = "INGEST_SPOOL_DIR")]
    pub spool_dir: Option<std::path::PathBuf>,

    /// Most bytes of webhooks waiting in the spool; past it, 503.
    #[arg(long, env = "INGEST_SPOOL_MAX_BYTES", default_value_t = 256 << 20,
          value_parser = clap::value_parser!(u64).range(1 << 20..))]
    pub spool_max_bytes: u64,

    /// Webhooks with a token the database has not recognised in the last
    /// week that may be spooled per minute, from all addresses together
    /// (they also may fill only half of the spool): tokens cannot be checked
    /// while the database is down, so this is what keeps guessed tokens from
    /// filling it, also when every alert comes from the same four addresses.
    #[arg(long, env = "INGEST_SPOOL_UNVERIFIED_PER_MINUTE", default_value_t = 600,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub spool_unverified_per_minute: u32,

    /// After a WARN or ERROR line that every request of a flood would
    /// repeat (the database down, the spool refusing, the budget for
    /// unverified tokens in use), further ones of its kind within this
    /// window are only counted; the next line after it says how many
    /// (`suppressed`). `/metrics` counts every one. 0: every line.
    #[arg(long, env = "INGEST_LOG_REPEAT_WINDOW", default_value = "10s", value_parser = humantime::parse_duration)]
    pub log_repeat_window: Duration,

    /// Source addresses allowed to post webhooks: comma-separated IPs or
    /// CIDR blocks, or `tradingview` for TradingView's published webhook
    /// addresses. Empty: any address. Health and metrics are not affected.
    #[arg(long, env = "INGEST_ALLOWED_SOURCES", value_delimiter = ',')]
    pub allowed_sources: Vec<SourceRule>,

    /// Reverse proxies (IPs or CIDR blocks) whose `X-Forwarded-For` is
    /// believed. Empty (the default): the header is ignored and the TCP
    /// peer is the client, so nobody can forge their address.
    #[arg(long, env = "INGEST_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,

    /// `PUT`/`DELETE /v1/tradingview-session`: sealing keys, who may call.
    #[command(flatten)]
    pub session: SessionSettings,
}

/// The session endpoint's settings. It is on when `COOKIE_SEAL_KEYS` is set
/// and an access token can be verified (a JWT secret, or a JWKS URL, which
/// `SUPABASE_URL` implies).
#[derive(Debug, clap::Args)]
pub struct SessionSettings {
    #[command(flatten)]
    pub seal: SealKeySettings,

    /// The project's legacy JWT secret, to verify HS256 access tokens on the
    /// session endpoint. Without it only asymmetric (JWKS) tokens are
    /// accepted.
    #[arg(long, env = "SUPABASE_JWT_SECRET", hide_env_values = true)]
    pub supabase_jwt_secret: Option<SecretString>,

    /// Where the project's signing keys are published, for asymmetric access
    /// tokens. Default: `{SUPABASE_URL}/auth/v1/.well-known/jwks.json`.
    #[arg(long, env = "SUPABASE_JWKS_URL")]
    pub supabase_jwks_url: Option<Url>,

    /// The `aud` every access token must carry.
    #[arg(long, env = "SUPABASE_JWT_AUDIENCE", default_value = "authenticated")]
    pub jwt_audience: String,

    /// The `iss` every access token must carry. Default:
    /// `{SUPABASE_URL}/auth/v1`, as Supabase Auth writes it.
    #[arg(long, env = "SUPABASE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The dashboard's origin (`https://app.example.com`), allowed by CORS
    /// to call the session endpoint from the browser.
    #[arg(long, env = "DASHBOARD_ORIGIN")]
    pub dashboard_origin: Option<Url>,
}

/// TradingView's published webhook source addresses.
pub const TRADINGVIEW_WEBHOOK_IPS: [&str; 4] = [
    "52.89.214.238",
    "34.212.75.30",
    "54.218.53.128",
    "52.32.178.7",
];

/// One entry of `INGEST_ALLOWED_SOURCES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceRule {
    /// TradingView's published addresses.
    TradingView,
    Net(IpNet),
}

impl std::str::FromStr for SourceRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("tradingview") {
            return Ok(Self::TradingView);
        }
        parse_net(s).map(Self::Net)
    }
}

/// An IP network from `1.2.3.4`, `1.2.3.0/24`, `::1` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet(ipnet::IpNet);

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_net(s.trim())
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(IpNet(net));
    }
    s.parse::<IpAddr>()
        .map(|ip| IpNet(ipnet::IpNet::from(ip)))
        .map_err(|_| format!("{s:?} is not an IP address or CIDR block (or `tradingview`)"))
}

impl Config {
    /// The allowlist with the `tradingview` preset expanded; `None` when any
    /// source may post.
    pub fn allowed_networks(&self) -> Option<Vec<IpNet>> {
        if self.allowed_sources.is_empty() {
            return None;
        }
        let mut nets = Vec::new();
        for rule in &self.allowed_sources {
            match rule {
                SourceRule::Net(net) => nets.push(*net),
                SourceRule::TradingView => nets.extend(
                    TRADINGVIEW_WEBHOOK_IPS
                        .iter()
                        .filter_map(|ip| parse_net(ip).ok()),
                ),
            }
        }
        Some(nets)
    }
}

impl Config {
    /// The JWKS URL: the configured one, else the project's standard one.
    pub fn jwks_url(&self) -> Option<Url> {
        self.session
            .supabase_jwks_url
            .clone()
            .or_else(|| Url::parse(&format!("{}/.well-known/jwks.json", self.auth_base()?)).ok())
    }

    /// The issuer access tokens must name: the configured one, else the
    /// project's Auth (`{SUPABASE_URL}/auth/v1`).
    pub fn jwt_issuer(&self) -> Option<String> {
        self.session.jwt_issuer.clone().or_else(|| self.auth_base())
    }

    /// `{SUPABASE_URL}/auth/v1`, without a trailing slash.
    fn auth_base(&self) -> Option<String> {
        let base = self.supabase.url.as_ref()?.as_str().trim_end_matches('/');
        Some(format!("{base}/auth/v1"))
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

    #[test]
    fn the_log_repeat_window_defaults_to_ten_seconds() {
        let config = parse(&[
            "--supabase-url=http://127.0.0.1:54321",
            "--supabase-secret-key=k",
        ])
        .expect("valid");
        assert_eq!(
            config.log_repeat_window,
            crate::log_throttle::DEFAULT_WINDOW
        );
        let config = parse(&[
            "--supabase-url=http://127.0.0.1:54321",
            "--supabase-secret-key=k",
            "--log-repeat-window=1m",
        ])
        .expect("valid");
        assert_eq!(config.log_repeat_window.as_secs(), 60);
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
        let key = config.supabase.service_key().expect("a key");
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
            config
                .supabase
                .service_key()
                .expect("a key")
                .expose_secret(),
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
        assert!(config.supabase.url.is_none());
    }

    #[test]
    fn allowlist_presets_and_proxies_parse() {
        let config = parse(&[
            "--database-url=postgres://localhost/db",
            "--allowed-sources=tradingview,10.0.0.0/8",
            "--trusted-proxies=127.0.0.1",
        ])
        .expect("valid");
        let nets = config.allowed_networks().expect("an allowlist");
        assert_eq!(nets.len(), 5);
        assert!(
            nets.iter()
                .any(|n| n.contains("52.89.214.238".parse().expect("ip")))
        );
        assert!(
            nets.iter()
                .any(|n| n.contains("10.1.2.3".parse().expect("ip")))
        );
        assert!(
            !nets
                .iter()
                .any(|n| n.contains("8.8.8.8".parse().expect("ip")))
        );
        assert!(config.trusted_proxies[0].contains("127.0.0.1".parse().expect("ip")));
        assert!(
            parse(&[
                "--database-url=postgres://localhost/db",
                "--allowed-sources=nowhere"
            ])
            .is_err()
        );
        let open = parse(&["--database-url=postgres://localhost/db"]).expect("valid");
        assert!(open.allowed_networks().is_none());
        assert!(open.trusted_proxies.is_empty());
    }

    #[test]
    fn the_session_settings_parse_and_keep_their_secrets() {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.encode([4u8; 32]);
        let config = parse(&[
            "--supabase-url=http://127.0.0.1:54321/",
            "--supabase-secret-key=sb_secret_x",
            &format!("--cookie-seal-keys=k2:{key},k1:{key}"),
            "--supabase-jwt-secret=jwt-secret-value",
            "--dashboard-origin=https://app.example.com",
        ])
        .expect("valid");
        let keys = config.session.seal.keyring().expect("keys");
        assert_eq!(keys.current_key_id(), "k2");
        assert_eq!(config.session.jwt_audience, "authenticated");
        assert_eq!(
            config.jwks_url().map(String::from).as_deref(),
            Some("http://127.0.0.1:54321/auth/v1/.well-known/jwks.json")
        );
        let debug = format!("{config:?}");
        assert!(
            !debug.contains(&key) && !debug.contains("jwt-secret-value"),
            "{debug}"
        );

        let bad = parse(&[
            "--database-url=postgres://localhost/db",
            "--cookie-seal-keys=k1:c2hvcnQ=",
        ])
        .expect_err("a 5-byte key")
        .to_string();
        assert!(bad.contains("k1") && !bad.contains("c2hvcnQ="), "{bad}");
        let pool_only = parse(&["--database-url=postgres://localhost/db"]).expect("valid");
        assert!(pool_only.jwks_url().is_none());
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

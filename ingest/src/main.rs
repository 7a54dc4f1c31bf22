//! `ingest`: parse the config, start logging, build the database path,
//! open the spool and start its replayer, serve until SIGINT/SIGTERM.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::HeaderValue;
use ingest::Config;
use ingest::auth::{JWKS_MIN_REFETCH, JWKS_TTL, Verifier, VerifierConfig};
use ingest::db::{Database, RestPath};
use ingest::guard::Guard;
use ingest::metrics::Metrics;
use ingest::server::{App, SessionEndpoint, Settings, session};
use ingest::spool_admission::{DatabaseSink, KnownTokens, SpoolAdmission};
use service_runtime::http::Drain;
use service_runtime::postgres::{self, PoolSettings};
use service_runtime::{cli, shutdown, telemetry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use webhook_spool::{Backoff, Replayer, Spool, SpoolConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = cli::parse();
    telemetry::init(config.logging.format).context("Failed to initialise logging")?;
    let stop = shutdown::signal().context("Failed to install signal handlers")?;

    let db = Arc::new(database(&config).context("Failed to set up the database path")?);
    let guard = Guard::new(
        config.allowed_networks(),
        config.trusted_proxies.clone(),
        config.unknown_token_per_minute,
    );
    let settings = Settings {
        max_body_bytes: config.max_body_bytes,
        read_timeout: config.read_timeout,
        max_connections: config.max_connections as usize,
        grace: config.shutdown_grace,
    };
    let database = db.kind();
    let mut app = App::new(Arc::clone(&db), guard, Metrics::new(), settings);
    let replayer = match &config.spool_dir {
        Some(dir) => {
            let (spool, replayer) = spool(&config, dir, &db)?;
            app = app.with_fallback(spool);
            Some(replayer)
        }
        None => None,
    };
    if let Some(session) =
        session_endpoint(&config).context("Failed to set up the session endpoint")?
    {
        tracing::info!(path = session::PATH, "TradingView session endpoint on");
        app = app.with_session(session);
    }
    let app = Arc::new(app);

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("Failed to listen on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("Failed to read the listening address")?;
    tracing::info!(%addr, database, grace = ?config.shutdown_grace, "Ingest listening");

    let stopping = CancellationToken::new();
    let replaying = replayer.map(|replayer| {
        let stopping = stopping.clone();
        tokio::spawn(async move {
            if let Err(error) = replayer.run(stopping.cancelled()).await {
                tracing::error!(%error, "The spool failed; webhooks are no longer replayed until ingest restarts");
            }
        })
    });
    let shutdown = async {
        let signal = stop.await;
        tracing::info!(signal = signal.name(), "Shutting down; draining requests");
    };
    let drained = ingest::run(listener, app, shutdown).await;
    // A record in the middle of its replay is not acknowledged: it is
    // replayed after the restart, and its delivery id makes that a duplicate.
    stopping.cancel();
    if let Some(replaying) = replaying {
        let _ = replaying.await;
    }
    match drained {
        Drain::Complete => tracing::info!("Drained; exiting"),
        Drain::DeadlineExceeded => {
            tracing::warn!(grace = ?config.shutdown_grace, "Grace period over; dropping open connections");
        }
    }
    Ok(())
}

/// Opens the spool in `dir` (recovering what a crash left) and builds the
/// edge's fallback and the replayer that feeds the spool to `db`.
fn spool(
    config: &Config,
    dir: &std::path::Path,
    db: &Arc<Database>,
) -> anyhow::Result<(SpoolAdmission, Replayer<DatabaseSink>)> {
    let (spool, recovery) = Spool::open(&SpoolConfig::new(dir, config.spool_max_bytes))
        .with_context(|| format!("Failed to open the spool in {}", dir.display()))?;
    tracing::info!(
        dir = %dir.display(),
        max_bytes = config.spool_max_bytes,
        waiting = recovery.entries,
        truncated_bytes = recovery.truncated_bytes,
        "Spool open"
    );
    let known = Arc::new(KnownTokens::default());
    let replayer = Replayer::new(
        spool.clone(),
        DatabaseSink::new(Arc::clone(db), Arc::clone(&known)),
    )
    // Each retry is one cheap call: come back quickly once the database is.
    .with_backoff(Backoff {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(5),
    });
    let unverified = NonZeroU32::new(config.spool_unverified_per_minute)
        .context("INGEST_SPOOL_UNVERIFIED_PER_MINUTE must be at least 1")?;
    let fallback = SpoolAdmission::new(spool, known, unverified, replayer.counters());
    Ok((fallback, replayer))
}

/// The direct pool when `DATABASE_URL` is set, else PostgREST.
fn database(config: &Config) -> anyhow::Result<Database> {
    if let Some(url) = &config.database_url {
        let pool = postgres::pool(
            url,
            PoolSettings {
                max_size: config.db_pool_size as usize,
                timeout: Some(config.db_timeout),
            },
        )
        .context("Failed to build the Postgres pool")?;
        return Ok(Database::pool(pool, config.db_timeout));
    }
    let url = config
        .supabase
        .url
        .as_ref()
        .context("SUPABASE_URL or DATABASE_URL is required")?;
    let key = config.supabase.service_key().context(
        "SUPABASE_SECRET_KEY or SUPABASE_SERVICE_ROLE_KEY is required with SUPABASE_URL",
    )?;
    Ok(Database::rest(RestPath::new(url, key), config.db_timeout))
}

/// The session endpoint, when seal keys are configured and access tokens
/// can be verified (a JWT secret, or a JWKS URL). It stores sessions over
/// the same database path as the webhooks.
fn session_endpoint(config: &Config) -> anyhow::Result<Option<SessionEndpoint>> {
    let settings = &config.session;
    let Some(keys) = settings.seal.keyring() else {
        return Ok(None);
    };
    let jwks_url = config.jwks_url();
    if settings.supabase_jwt_secret.is_none() && jwks_url.is_none() {
        tracing::warn!(
            "COOKIE_SEAL_KEYS is set but no access token can be verified (set SUPABASE_JWT_SECRET, \
             SUPABASE_JWKS_URL or SUPABASE_URL): the TradingView session endpoint is off"
        );
        return Ok(None);
    }
    let Some(issuer) = config.jwt_issuer() else {
        tracing::warn!(
            "COOKIE_SEAL_KEYS is set but no token issuer is known (set SUPABASE_URL or \
             SUPABASE_JWT_ISSUER): the TradingView session endpoint is off"
        );
        return Ok(None);
    };
    let cors_origin = settings
        .dashboard_origin
        .as_ref()
        .map(|origin| HeaderValue::from_str(origin.origin().ascii_serialization().as_str()))
        .transpose()
        .context("DASHBOARD_ORIGIN is not a valid origin")?;
    let verifier = Verifier::new(VerifierConfig {
        jwks_url,
        jwt_secret: settings.supabase_jwt_secret.clone(),
        audience: settings.jwt_audience.clone(),
        issuer,
        jwks_ttl: JWKS_TTL,
        jwks_min_refetch: JWKS_MIN_REFETCH,
    })
    .context("Failed to build the JWKS client")?;
    Ok(Some(SessionEndpoint::new(
        verifier,
        Arc::clone(keys),
        cors_origin,
    )))
}

//! `ingest`: parse the config, start logging, build the database path,
//! open the spool (and the known tokens kept beside it) and start its
//! replayer, serve until SIGINT/SIGTERM.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::HeaderValue;
use ingest::Config;
use ingest::auth::{JWKS_MIN_REFETCH, JWKS_TTL, Verifier, VerifierConfig};
use ingest::batcher::BatchSettings;
use ingest::db::{Database, RestPath};
use ingest::guard::Guard;
use ingest::metrics::Metrics;
use ingest::open_files::Raised;
use ingest::server::{App, SessionEndpoint, Settings, session};
use ingest::spool_admission::{DatabaseSink, SpoolAdmission};
use ingest::tokens::TokenMemory;
use service_runtime::http::Drain;
use service_runtime::postgres::{self, PoolSettings};
use service_runtime::{cli, shutdown, telemetry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use webhook_spool::{Backoff, Replayer, Spool, SpoolConfig, SyncObserver};

/// How often the known tokens are saved (when they changed).
const SAVE_TOKENS_EVERY: Duration = Duration::from_mins(1);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = cli::parse();
    telemetry::init(config.logging.format).context("Failed to initialise logging")?;
    let stop = shutdown::signal().context("Failed to install signal handlers")?;

    open_files(&config);
    let db = Arc::new(database(&config).context("Failed to set up the database path")?);
    let database = db.kind();
    // Every call slot's connection opened before the first webhook, not
    // inside the first burst's deadlines.
    match db.warm(config.db_concurrency as usize).await {
        Ok(0) => {}
        Ok(ready) => tracing::info!(connections = ready, "Database pool warmed"),
        Err(error) => {
            tracing::warn!(%error, "Could not open database connections at start; calls connect when the database answers");
        }
    }
    let (app, replayer, tokens) = app(&config, &db)?;
    let app = Arc::new(app);

    let listener = service_runtime::http::listen(config.listen, config.listen_backlog)
        .with_context(|| format!("Failed to listen on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("Failed to read the listening address")?;
    let admin = match config.admin_listen {
        Some(admin) => Some(
            TcpListener::bind(admin)
                .await
                .with_context(|| format!("Failed to listen on {admin} (INGEST_ADMIN_LISTEN)"))?,
        ),
        None => None,
    };
    tracing::info!(%addr, admin = ?config.admin_listen, database, grace = ?config.shutdown_grace, "Ingest listening");

    let stopping = CancellationToken::new();
    let replaying = replayer.map(|replayer| {
        let stopping = stopping.clone();
        tokio::spawn(async move {
            if let Err(error) = replayer.run(stopping.cancelled()).await {
                tracing::error!(%error, "The spool failed; webhooks are no longer replayed until ingest restarts");
            }
        })
    });
    let saving = config.spool_dir.clone().map(|dir| {
        let (tokens, stopping) = (Arc::clone(&tokens), stopping.clone());
        tokio::spawn(save_tokens_periodically(tokens, dir, stopping))
    });
    let serving = CancellationToken::new();
    let shutdown = {
        let serving = serving.clone();
        async move {
            let signal = stop.await;
            tracing::info!(signal = signal.name(), "Shutting down; draining requests");
            serving.cancel();
        }
    };
    let admin_serving = admin.map(|listener| {
        let (app, serving) = (Arc::clone(&app), serving.clone());
        tokio::spawn(async move {
            ingest::server::run_admin(listener, app, serving.cancelled_owned()).await
        })
    });
    let drained = ingest::run(listener, app, shutdown).await;
    if let Some(admin) = admin_serving {
        let _ = admin.await;
    }
    // A record in the middle of its replay is not acknowledged: it is
    // replayed after the restart, and its delivery id makes that a duplicate.
    stopping.cancel();
    if let Some(replaying) = replaying {
        let _ = replaying.await;
    }
    if let Some(saving) = saving {
        let _ = saving.await;
    }
    match drained {
        Drain::Complete => tracing::info!("Drained; exiting"),
        Drain::DeadlineExceeded => {
            tracing::warn!(grace = ?config.shutdown_grace, "Grace period over; dropping open connections");
        }
    }
    Ok(())
}

/// Raises the open-file limit for `INGEST_MAX_CONNECTIONS` connections, or
/// says why it could not.
fn open_files(config: &Config) {
    let connections = u64::from(config.max_connections) + u64::from(config.db_pool_size);
    match ingest::open_files::raise(connections) {
        Ok(Raised::Enough { .. }) => {}
        Ok(Raised::To { from, to }) => {
            tracing::info!(
                from,
                to,
                "Raised the open-file limit for INGEST_MAX_CONNECTIONS"
            );
        }
        Ok(Raised::Short { needed, to }) => tracing::warn!(
            needed,
            limit = to,
            "The open-file hard limit is below what INGEST_MAX_CONNECTIONS needs: connections past it fail to be accepted; raise it (systemd LimitNOFILE, docker --ulimit nofile) or lower INGEST_MAX_CONNECTIONS"
        ),
        Err(error) => tracing::warn!(%error, "Could not read or raise the open-file limit"),
    }
}

/// The app as `config` describes it, the spool's replayer (with a spool)
/// and the token memory (loaded from the spool's directory).
fn app(
    config: &Config,
    db: &Arc<Database>,
) -> anyhow::Result<(App, Option<Replayer<DatabaseSink>>, Arc<TokenMemory>)> {
    let guard = Guard::new(
        config.allowed_networks(),
        config.trusted_proxies.clone(),
        config.unknown_token_per_minute,
        config.unverified_in_flight as usize,
    );
    let settings = Settings {
        max_body_bytes: config.max_body_bytes,
        read_timeout: config.read_timeout,
        keep_alive: config.keep_alive_timeout,
        max_connections: config.max_connections as usize,
        grace: config.shutdown_grace,
        batch: BatchSettings {
            max_batch: config.db_max_batch as usize,
            concurrency: config.db_concurrency as usize,
        },
        queue_budget: config.db_queue_budget,
        log_repeat_window: config.log_repeat_window,
    };
    let metrics = Metrics::new();
    // The spool opens first: its directory is also where the known tokens
    // are kept, and opening it makes that directory private.
    let opened = match &config.spool_dir {
        Some(dir) => Some(open_spool(config, dir, metrics.spool_sync_observer())?),
        None => None,
    };
    let tokens = Arc::new(match &config.spool_dir {
        Some(dir) => load_tokens(dir),
        None => TokenMemory::default(),
    });
    let mut app = App::new(
        Arc::clone(db),
        guard,
        Arc::clone(&tokens),
        metrics,
        settings,
    );
    let replayer = match opened {
        Some(spool) => {
            let (fallback, replayer) = fallback(config, spool, db, &tokens)?;
            app = app.with_fallback(fallback);
            Some(replayer)
        }
        None => None,
    };
    if let Some(session) =
        session_endpoint(config).context("Failed to set up the session endpoint")?
    {
        tracing::info!(path = session::PATH, "TradingView session endpoint on");
        app = app.with_session(session);
    }
    if config.admin_listen.is_some() {
        app = app.with_admin_listener();
    }
    Ok((app, replayer, tokens))
}

/// Opens the spool in `dir`, recovering what a crash left and making the
/// directory private if it was not.
fn open_spool(config: &Config, dir: &Path, on_sync: SyncObserver) -> anyhow::Result<Spool> {
    let spool_config = SpoolConfig {
        on_sync: Some(on_sync),
        ..SpoolConfig::new(dir, config.spool_max_bytes)
    };
    let (spool, recovery) = Spool::open(&spool_config)
        .with_context(|| format!("Failed to open the spool in {}", dir.display()))?;
    if let Some(mode) = recovery.tightened_from {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{mode:o}"),
            "The spool directory could be read by others; it holds webhook tokens, so it was made 0700"
        );
    }
    tracing::info!(
        dir = %dir.display(),
        max_bytes = config.spool_max_bytes,
        waiting = recovery.entries,
        truncated_bytes = recovery.truncated_bytes,
        "Spool open"
    );
    Ok(spool)
}

/// The known tokens saved in `dir`; a damaged file costs only the
/// knowledge (every token is unverified until the database answers).
fn load_tokens(dir: &Path) -> TokenMemory {
    match TokenMemory::load(dir) {
        Ok(tokens) => {
            tracing::info!(known = tokens.known_len(), "Known tokens loaded");
            tokens
        }
        Err(error) => {
            tracing::warn!(error = %error, "Starting without known tokens");
            TokenMemory::default()
        }
    }
}

/// Saves the known tokens every [`SAVE_TOKENS_EVERY`] while they change, and
/// once more when ingest stops.
async fn save_tokens_periodically(
    tokens: Arc<TokenMemory>,
    dir: PathBuf,
    stopping: CancellationToken,
) {
    let save = |tokens: Arc<TokenMemory>, dir: PathBuf| async move {
        let result = tokio::task::spawn_blocking(move || tokens.save(&dir)).await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "Failed to save the known tokens; retrying later");
            }
            Err(error) => tracing::warn!(%error, "Failed to save the known tokens"),
        }
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(SAVE_TOKENS_EVERY) => save(Arc::clone(&tokens), dir.clone()).await,
            () = stopping.cancelled() => break,
        }
    }
    save(tokens, dir).await;
}

/// The edge's fallback and the replayer that feeds the spool to `db` in
/// batches.
fn fallback(
    config: &Config,
    spool: Spool,
    db: &Arc<Database>,
    tokens: &Arc<TokenMemory>,
) -> anyhow::Result<(SpoolAdmission, Replayer<DatabaseSink>)> {
    let replayer = Replayer::new(
        spool.clone(),
        DatabaseSink::new(
            Arc::clone(db),
            Arc::clone(tokens),
            config.db_max_batch as usize,
        ),
    )
    // Each retry is one cheap call: come back quickly once the database is.
    .with_backoff(Backoff {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(5),
    });
    let unverified = NonZeroU32::new(config.spool_unverified_per_minute)
        .context("INGEST_SPOOL_UNVERIFIED_PER_MINUTE must be at least 1")?;
    let fallback = SpoolAdmission::new(spool, unverified, replayer.counters());
    Ok((fallback, replayer))
}

/// The direct pool when `DATABASE_URL` is set, else PostgREST.
fn database(config: &Config) -> anyhow::Result<Database> {
    if let Some(url) = &config.database_url {
        anyhow::ensure!(
            config.db_pool_size > config.db_concurrency,
            "INGEST_DB_POOL_SIZE ({}) must be larger than INGEST_DB_CONCURRENCY ({}): /health and the session endpoint need a connection too",
            config.db_pool_size,
            config.db_concurrency
        );
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
    let rest = RestPath::new(url, key)
        .context("Failed to build the PostgREST client")?
        .with_max_batch_bytes(config.db_max_batch_bytes as usize);
    Ok(Database::rest(rest, config.db_timeout))
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

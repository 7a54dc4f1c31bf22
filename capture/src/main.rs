//! `capture`: parse the config, start logging, build what every subcommand
//! shares, and run the one asked for (see [`capture::commands`]).

use anyhow::Context as _;
use capture::commands::{self, check_sessions, prune, reseal_cookies, serve, set_session};
use capture::config::{Command, Config};
use service_runtime::{cli, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = cli::parse();
    telemetry::init(config.logging.format).context("Failed to initialise logging")?;
    config
        .validate()
        .map_err(anyhow::Error::msg)
        .context("Invalid configuration")?;
    let keys = commands::seal_keys(&config);
    let database = commands::database(&config)?;
    let pool = commands::pool(&config, &database)?;

    match config.command {
        None => serve::run(&config, database, pool, keys).await,
        Some(Command::SetSession { user_id }) => {
            set_session::run(&pool, keys.as_deref(), user_id, std::io::stdin().lock()).await
        }
        Some(Command::ResealCookies) => reseal_cookies::run(&pool, keys.as_deref()).await,
        Some(Command::CheckSessions) => check_sessions::run(&config, pool, keys).await,
        Some(Command::Prune { batch_size }) => prune::run(&config, &pool, batch_size).await,
    }
}

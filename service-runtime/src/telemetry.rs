//! Logging set-up, done once at start-up by each binary's `main`.
//!
//! Why one function: every binary must honour `RUST_LOG` and `LOG_FORMAT` the
//! same way, and a second `init` somewhere would silently lose events (the
//! global subscriber can only be set once). Logs go to stderr so stdout stays
//! free for anything a binary prints on purpose (`--help`, reports).

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{EnvFilter, FromEnvError};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::{SubscriberInitExt as _, TryInitError};

/// The filter used when `RUST_LOG` is unset or empty: our own events at
/// `info` and above, which is what an operator wants by default.
pub const DEFAULT_LEVEL: LevelFilter = LevelFilter::INFO;

/// Targets held at a level whatever `RUST_LOG` asks for, because their
/// events carry secrets. `tokio_postgres::query` logs every statement's bound
/// parameters at `debug`: the webhook token passed to `ingest_signal`, the
/// sealed TradingView session passed to `set_tradingview_session` and
/// `reseal_tradingview_session`. Naming the target in `RUST_LOG` does not lift
/// this (unlike the per-binary defaults): a debugging session must not be one
/// environment variable away from writing traders' credentials to a log
/// shipper. The statements themselves are still logged by
/// `tokio_postgres::prepare`.
pub const SECRET_BEARING: &[&str] = &["tokio_postgres::query=info"];

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers. Span fields are included
    /// so a webhook delivery or capture job can be followed by its id.
    Json,
}

/// `LOG_FORMAT`, the one logging setting, as each binary's config flattens
/// it (`RUST_LOG` is read by [`init`] itself, the way `tracing` expects).
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct Logging {
    /// Log line format.
    #[arg(
        long = "log-format",
        value_name = "LOG_FORMAT",
        env = "LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub format: LogFormat,
}

/// Why logging could not be set up. Both are start-up errors: the binary
/// should report them and exit.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// `RUST_LOG` is set but is not a valid filter directive.
    #[error("RUST_LOG is not a valid filter")]
    Filter(#[source] FromEnvError),
    /// A global subscriber was already installed.
    #[error("a tracing subscriber is already installed")]
    Install(#[source] TryInitError),
}

/// Installs the global `tracing` subscriber.
///
/// The filter comes from `RUST_LOG` (for example
/// `RUST_LOG=ingest=debug,hyper=warn`), defaulting to [`DEFAULT_LEVEL`]. An
/// invalid `RUST_LOG` is an error rather than silently ignored: a typo there
/// would otherwise hide exactly the logs someone was asking for. The targets
/// in [`SECRET_BEARING`] stay at their cap whatever it says.
pub fn init(format: LogFormat) -> Result<(), InitError> {
    init_with_defaults(format, &[])
}

/// As [`init`], with per-target defaults such as `"headless_chrome=error"`
/// for a dependency whose own logging is too loud (or too revealing) at
/// the default level. A default applies unless `RUST_LOG` names that target
/// itself, so an operator can still turn it up.
///
/// # Panics
///
/// If a default is not a valid directive (a programming error).
pub fn init_with_defaults(format: LogFormat, defaults: &[&str]) -> Result<(), InitError> {
    let mut filter = EnvFilter::builder()
        .with_default_directive(DEFAULT_LEVEL.into())
        .from_env()
        .map_err(InitError::Filter)?;
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_default();
    for default in defaults {
        let target = default.split('=').next().unwrap_or(default);
        if !from_env.contains(target) {
            filter = filter.add_directive(default.parse().expect("a valid directive"));
        }
    }
    for directive in SECRET_BEARING {
        filter = filter.add_directive(directive.parse().expect("a valid directive"));
    }
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(InitError::Install)
}

//! The one way a binary builds its Postgres connection pool.
//!
//! ingest's direct path and the capture daemon both run short statements
//! over a `deadpool-postgres` pool; building it in two places had already
//! let the two drift (one with timeouts, one without). Here:
//!
//! - connections use the TLS the URL asks for, with libpq's `sslmode`
//!   and `sslrootcert` meanings and our safer default (`require` towards
//!   anything but loopback): [`postgres_tls`] reads the URL, here and for
//!   capture's LISTEN session ([`connect_config`]), so both agree;
//! - a returned connection is checked only for being open
//!   ([`RecyclingMethod::Fast`]): a broken one fails its next statement and
//!   is dropped, which costs less than a round trip on every checkout;
//! - waiting for a free connection and opening a new one are bounded by
//!   [`PoolSettings::timeout`] when one is given, so a database that does
//!   not answer turns into an error instead of a hung caller.
//!
//! The capture daemon's LISTEN session is deliberately not from this pool:
//! pooled connections swallow notifications (see `capture`'s `listener`).

use std::time::Duration;

use deadpool_postgres::{BuildError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
pub use postgres_tls::{ConnectConfig, SslMode};

use crate::secret::DatabaseUrl;

/// How big the pool is and how long a caller may wait for a connection.
#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    /// Most connections open at once.
    pub max_size: usize,
    /// Bound on waiting for a free connection and on opening a new one;
    /// `None` waits as long as it takes.
    pub timeout: Option<Duration>,
}

/// Why the pool could not be built. Neither message repeats the URL.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The URL parsed as a URL but not as Postgres connection settings,
    /// or its TLS settings cannot be honoured (an unknown `sslmode`, a
    /// missing root file, `prefer` towards a remote host).
    #[error("DATABASE_URL is not usable")]
    Config(#[source] postgres_tls::ConfigError),
    #[error("the Postgres pool could not be built")]
    Build(#[source] BuildError),
}

/// How to connect to `url`: the settings and the TLS it asks for. Logs the
/// warning for `sslmode=disable` towards a non-loopback address; build it
/// once per URL and share it ([`pool_from`], capture's LISTEN session).
pub fn connect_config(url: &DatabaseUrl) -> Result<ConnectConfig, PoolError> {
    ConnectConfig::from_url(url.expose()).map_err(PoolError::Config)
}

/// A pool of connections to `url`. Connects lazily: nothing is opened until
/// the first checkout.
pub fn pool(url: &DatabaseUrl, settings: PoolSettings) -> Result<Pool, PoolError> {
    pool_from(&connect_config(url)?, settings)
}

/// A pool of connections made as `connect` says.
pub fn pool_from(connect: &ConnectConfig, settings: PoolSettings) -> Result<Pool, PoolError> {
    let (config, tls) = connect.parts();
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(settings.timeout)
        .create_timeout(settings.timeout)
        .build()
        .map_err(PoolError::Build)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{PoolSettings, pool};

    /// Nothing listens on port 9 of the loopback address: a checkout must
    /// fail within the timeout, not hang.
    #[tokio::test]
    async fn a_checkout_is_bounded_by_the_timeout() {
        let url = "postgres://nobody@127.0.0.1:9/nothing"
            .parse()
            .expect("url");
        let pool = pool(
            &url,
            PoolSettings {
                max_size: 2,
                timeout: Some(Duration::from_millis(500)),
            },
        )
        .expect("a pool is built without connecting");
        assert_eq!(pool.status().max_size, 2);
        let started = Instant::now();
        assert!(pool.get().await.is_err());
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn unusable_settings_are_an_error_without_the_url() {
        let url = "postgres://u:hunter2@localhost/db?connect_timeout=soon"
            .parse()
            .expect("a URL");
        let error = pool(
            &url,
            PoolSettings {
                max_size: 1,
                timeout: None,
            },
        )
        .expect_err("connect_timeout is not a number");
        assert!(!format!("{error} {error:?}").contains("hunter2"));
    }
}

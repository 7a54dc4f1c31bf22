//! TLS for every Postgres connection this project makes, with libpq's
//! `sslmode` and `sslrootcert` read from the connection URL.
//!
//! The database is across the internet (hosted Supabase, directly or
//! through Supavisor in session mode), so the `postgres` role's password and
//! every trader's rows must not cross it in clear. `tokio-postgres` brings
//! no TLS of its own and its URL parser knows only `disable`, `prefer` and
//! `require`; libpq's `verify-ca`, `verify-full` and `sslrootcert` are what
//! operators write, so they are read here, removed from the URL, and the
//! rest is handed to `tokio-postgres`. Every binary, test and tool that
//! connects (the services' pool and capture's LISTEN session, the test
//! harness, the load tool) goes through [`ConnectConfig`], so one reading of
//! a URL holds everywhere.
//!
//! # Layout
//!
//! - [`options`]: [`ConnectConfig::from_url`] parses the URL: the
//!   [`SslMode`], where trusted roots come from ([`RootSource`]), our
//!   default when no `sslmode` is given, the refusal of anything that could
//!   fall back to plaintext towards a non-loopback host, and the warning
//!   when `sslmode=disable` does exactly that on purpose.
//! - [`verify`]: the certificate checks each mode asks for (none, the chain,
//!   the chain and the host name) and the trusted roots (a PEM file, or the
//!   system's store through `rustls-native-certs`).
//! - [`stream`]: [`MakeRustlsConnect`], `tokio-postgres`'s TLS hooks over
//!   `tokio-rustls` (ring, the provider `reqwest` already brings), and the
//!   `tls-server-end-point` channel binding, so SCRAM authentication is
//!   bound to the TLS session even when the certificate is not verified.
//!
//! A URL goes in, a [`ConnectConfig`] comes out; [`ConnectConfig::connect`]
//! opens a session, and [`ConnectConfig::parts`] hands a pool builder the
//! `tokio_postgres::Config` and the connector.

pub mod options;
pub mod stream;
pub mod verify;

pub use options::{ConfigError, ConnectConfig, RootSource, SslMode};
pub use stream::{MakeRustlsConnect, TlsStream};

/// Opens one session to `url` with the TLS it asks for; the connection
/// future must be polled (spawned) for the client to work.
pub async fn connect(
    url: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, TlsStream<tokio_postgres::Socket>>,
    ),
    ConnectError,
> {
    let config = ConnectConfig::from_url(url).map_err(ConnectError::Config)?;
    config.connect().await.map_err(ConnectError::Connect)
}

/// Why [`connect`] failed. Neither message repeats the URL.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the Postgres URL is not usable")]
    Config(#[source] ConfigError),
    #[error("could not connect to Postgres")]
    Connect(#[source] tokio_postgres::Error),
}

//! The database path: `public.ingest_signals` for webhooks (a batch of one
//! or more alerts per call, see [`crate::batcher`]), and the other database
//! functions ingest calls (`capture_queue_status` for `/health`,
//! `set_tradingview_session` for the session endpoint).
//!
//! Two ways to make each call, with the same arguments and the same answer:
//!
//! - [`Database::rest`]: through PostgREST (`POST /rest/v1/rpc/ingest_signals`)
//!   with the project's secret key, the way every Supabase project can be
//!   reached ([`RestPath`], the workspace's reqwest; `rest.rs` says why not
//!   the `postgrest` crate).
//! - [`Database::pool`]: over a `deadpool-postgres` pool straight to
//!   Postgres, one HTTP hop fewer, for deployments next to the database.
//!
//! Both send each alert as one JSON object of `ingest_signal`'s named
//! parameters ([`IngestCall::arguments`]) and the batch as a JSON array of
//! them, so the two paths cannot drift apart: the pool passes the array as a
//! single `jsonb` parameter, PostgREST as `p_alerts`, and the function
//! unpacks each object with the same names. The other calls have two or no
//! arguments and are written out for each path. Every rule lives in the SQL
//! function, never here, so both paths obey the same ones.
//!
//! Every call is bounded by a deadline: TradingView gives up after 3 s, so a
//! database that does not answer must turn into a quick 503 (which
//! TradingView retries), never a hung request.

use std::time::Duration;

mod rest;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

pub use rest::{DEFAULT_MAX_BATCH_BYTES, RestPath, RestPathError};

use crate::signal::{Signal, WebhookToken};

/// Why the edge refused a body before the database saw a signal. The
/// database still logs the delivery for the trader (`p_reject_code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// 422: nothing in the body names an instrument.
    NoTicker,
    /// 400: not UTF-8, a NUL byte, or empty.
    InvalidBody,
    /// 413: larger than the configured limit.
    BodyTooLarge,
}

impl Rejection {
    pub fn code(self) -> &'static str {
        match self {
            Self::NoTicker => "no_ticker",
            Self::InvalidBody => "invalid_body",
            Self::BodyTooLarge => "body_too_large",
        }
    }
}

/// One webhook, as `ingest_signal` takes it.
#[derive(Debug)]
pub struct IngestCall<'a> {
    /// A time-ordered id for this delivery, made when it arrived. A later
    /// call with the same id (a replay from the spool of a call whose
    /// answer was lost) gets the first answer instead of a second signal.
    pub delivery_id: Uuid,
    pub token: &'a WebhookToken,
    pub received_at: DateTime<Utc>,
    /// The body exactly as received (for a rejected body that was not
    /// text, a lossy rendering: only its start is kept, in the log).
    pub raw_message: &'a str,
    /// `?chart=` from the URL; wins over a chart id in the body.
    pub chart_id: Option<&'a str>,
    pub body: Result<&'a Signal, (Rejection, String)>,
}

impl IngestCall<'_> {
    /// The named arguments of `public.ingest_signal`, without the ones
    /// that are null (the function takes a missing one as null): a batch's
    /// body stays small enough for an API gateway to hold in memory
    /// ([`crate::batcher::BatchSettings::max_bytes`]).
    pub fn arguments(&self) -> Value {
        let mut args = json!({
            "p_delivery_id": self.delivery_id,
            "p_token": self.token.expose(),
            "p_received_at": self.received_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "p_raw_message": self.raw_message,
            "p_chart_id": self.chart_id,
        });
        let extra = match &self.body {
            Ok(signal) => {
                let ticker = signal.ticker();
                json!({
                    "p_chart_id": self.chart_id.or_else(|| signal.chart_id().map(crate::signal::ChartId::as_str)),
                    "p_ticker": ticker.to_string(),
                    "p_exchange": ticker.exchange(),
                    "p_symbol": ticker.symbol(),
                    "p_price": signal.price().map(|p| p.as_decimal().to_string()),
                    "p_direction": signal.direction().map(crate::signal::Direction::as_str),
                    "p_signal_type": signal.signal_type(),
                    "p_interval": signal.interval().map(|i| i.to_string()),
                    "p_indicator_name": signal.indicator(),
                    "p_signal_time": signal.time().map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true)),
                })
            }
            Err((rejection, message)) => json!({
                "p_reject_code": rejection.code(),
                "p_reject_message": message,
            }),
        };
        if let (Value::Object(args), Value::Object(extra)) = (&mut args, extra) {
            args.extend(extra);
            args.retain(|_, value| !value.is_null());
        }
        args
    }
}

/// What `ingest_signal` decided; maps one-to-one onto the HTTP answer.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct IngestOutcome {
    /// `accepted`, `duplicate`, `unknown_token`, `webhook_disabled`,
    /// `no_ticker`, `invalid_body`, `body_too_large`, `quota_exceeded`,
    /// `rate_limited`; in a batch also `error` (the alert raised; see
    /// [`DbError::Alert`]).
    pub outcome: String,
    pub http_status: u16,
    #[serde(default)]
    pub signal_id: Option<Uuid>,
    #[serde(default)]
    pub screenshot_status: Option<String>,
    #[serde(default)]
    pub estimated_wait: Option<i64>,
    #[serde(default)]
    pub retry_after: Option<i64>,
    #[serde(default)]
    pub message: Option<String>,
    /// With outcome `error`: the SQLSTATE the alert raised.
    #[serde(default)]
    pub sqlstate: Option<String>,
}

/// Queue figures for `/health`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct QueueStatus {
    pub queue_length: i64,
    pub active_workers: i64,
}

/// Why the database path failed. Never shown to callers (they get an
/// opaque 503); logged once where it is mapped.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    /// reqwest's message with the URL stripped (it holds no secret, but
    /// the message stays the same whatever the deployment).
    #[error("PostgREST could not be reached: {0}")]
    Http(String),
    #[error("PostgREST answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("no connection from the pool")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("the query failed")]
    Query(#[source] tokio_postgres::Error),
    #[error("the answer was not what the database function returns")]
    Decode(#[source] serde_json::Error),
    /// `ingest_signals` answered a batch with a different number of
    /// outcomes than it was sent alerts.
    #[error("ingest_signals answered {got} outcomes for {sent} alerts")]
    Mismatch { sent: usize, got: usize },
    /// One alert of a batch raised; the others were decided.
    #[error("the alert raised SQLSTATE {sqlstate}: {message}")]
    Alert { sqlstate: String, message: String },
}

impl DbError {
    /// Whether the same call may well succeed later: the database or
    /// PostgREST could not be reached, did not answer in time, or was
    /// restarting or overloaded. False for answers a retry cannot change (a
    /// 4xx or 500 from PostgREST, an SQL error, an answer that does not
    /// decode): those would block a spool's replay forever.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Http(_) | Self::Pool(_) => true,
            Self::Status { status, .. } => matches!(status, 502..=504),
            Self::Query(error) => {
                error.is_closed()
                    || error
                        .code()
                        .is_none_or(|code| transient_sqlstate(code.code()))
            }
            Self::Alert { sqlstate, .. } => transient_sqlstate(sqlstate),
            Self::Decode(_) | Self::Mismatch { .. } => false,
        }
    }
}

/// Connection trouble, resources, an operator's intervention, a
/// serialization failure or a deadlock: a later attempt may succeed.
fn transient_sqlstate(code: &str) -> bool {
    ["08", "53", "57"]
        .iter()
        .any(|class| code.starts_with(class))
        || code == "40001"
        || code == "40P01"
}

/// The SQL behind [`Database::pool`]'s batch: the JSON array of alerts as
/// one `jsonb` parameter.
const INGEST_BATCH_SQL: &str = "select public.ingest_signals($1::jsonb)";

/// What an `ingest_signals` call's body holds around its alerts:
/// `{"p_alerts":[`, then `]}`.
const BATCH_ENVELOPE_BYTES: usize = r#"{"p_alerts":[]}"#.len();

/// The bytes of one alert's arguments in a batch's body: serialized into a
/// counter, not a string (every webhook on the PostgREST path asks, and the
/// call serializes the alert again anyway).
///
/// # Panics
///
/// Never: a JSON value always serializes, and the counter never fails.
pub fn alert_bytes(arguments: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, arguments).expect("a JSON value always serializes");
    count.0
}

/// Fills one call's body up to a limit, alert by alert, as
/// [`Database::ingest_batch`] will write it: the envelope, the alerts, a
/// comma between each two.
#[derive(Debug)]
pub struct BatchBody {
    limit: Option<usize>,
    alerts: usize,
    bytes: usize,
}

impl BatchBody {
    /// An empty body; `limit`: [`Database::max_batch_bytes`].
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            alerts: 0,
            bytes: BATCH_ENVELOPE_BYTES,
        }
    }

    /// Adds an alert of `bytes` ([`alert_bytes`]) if it fits, and says
    /// whether it did. The first always fits: an alert larger than the
    /// limit goes alone.
    pub fn add(&mut self, bytes: usize) -> bool {
        let after = self.bytes + bytes + usize::from(self.alerts > 0);
        if self.alerts > 0 && self.limit.is_some_and(|limit| after > limit) {
            return false;
        }
        self.alerts += 1;
        self.bytes = after;
        true
    }
}

/// Where the database calls go, and how long a call may take.
#[derive(Debug)]
pub struct Database {
    path: Path,
    deadline: Duration,
}

#[derive(Debug)]
enum Path {
    Rest(RestPath),
    Pool(deadpool_postgres::Pool),
}

impl Database {
    pub fn rest(rest: RestPath, deadline: Duration) -> Self {
        Self {
            path: Path::Rest(rest),
            deadline,
        }
    }

    pub fn pool(pool: deadpool_postgres::Pool, deadline: Duration) -> Self {
        Self {
            path: Path::Pool(pool),
            deadline,
        }
    }

    /// How long one call may take.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The most bytes of one `ingest_signals` call's body: on the PostgREST
    /// path only ([`RestPath::with_max_batch_bytes`]); the pool has no
    /// gateway in between.
    pub fn max_batch_bytes(&self) -> Option<usize> {
        match &self.path {
            Path::Rest(rest) => Some(rest.max_batch_bytes()),
            Path::Pool(_) => None,
        }
    }

    /// `rest` or `pool`, for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self.path {
            Path::Rest(_) => "rest",
            Path::Pool(_) => "pool",
        }
    }

    /// Opens up to `connections` pool connections at once and prepares the
    /// batch statement on each, within the deadline; how many are ready.
    ///
    /// Why: the pool connects lazily, and opening a connection (more so
    /// with TLS, or on a loaded machine) can take most of the deadline. At
    /// a bar close every call slot wants one at the same moment, so the
    /// first burst after a start would pay them all inside its calls'
    /// deadlines. Warming at start moves that cost before the first
    /// webhook. A database that is down now is no reason not to start (the
    /// calls connect when it is back), so failures are returned for a log
    /// line, not raised. PostgREST keeps its own connections: nothing to do.
    pub async fn warm(&self, connections: usize) -> Result<usize, DbError> {
        let Path::Pool(pool) = &self.path else {
            return Ok(0);
        };
        self.bounded(async {
            // Every checkout is held until all are made, so each opens a
            // connection of its own instead of taking back the last one.
            let mut opening = tokio::task::JoinSet::new();
            for _ in 0..connections {
                let pool = pool.clone();
                opening.spawn(async move {
                    let client = pool.get().await.map_err(DbError::Pool)?;
                    client
                        .prepare_cached(INGEST_BATCH_SQL)
                        .await
                        .map_err(DbError::Query)?;
                    Ok::<_, DbError>(client)
                });
            }
            let mut ready = Vec::new();
            let mut failed = None;
            while let Some(opened) = opening.join_next().await {
                match opened {
                    Ok(Ok(client)) => ready.push(client),
                    Ok(Err(error)) => failed = Some(error),
                    Err(panicked) => std::panic::resume_unwind(panicked.into_panic()),
                }
            }
            match failed {
                Some(error) if ready.is_empty() => Err(error),
                _ => Ok(ready.len()),
            }
        })
        .await
    }

    /// Calls `public.ingest_signals` once with `alerts` (each an
    /// [`IngestCall::arguments`] object): one outcome per alert, in order,
    /// or the error that failed the whole call. An alert that raised is an
    /// [`DbError::Alert`] of its own; the others stand.
    pub async fn ingest_batch(
        &self,
        alerts: Vec<Value>,
    ) -> Result<Vec<Result<IngestOutcome, DbError>>, DbError> {
        let sent = alerts.len();
        let batch = Value::Array(alerts);
        let value = self
            .bounded(async {
                match &self.path {
                    Path::Rest(rest) => {
                        rest.rpc("ingest_signals", &json!({ "p_alerts": batch }))
                            .await
                    }
                    Path::Pool(pool) => {
                        let client = pool.get().await.map_err(DbError::Pool)?;
                        let statement = client
                            .prepare_cached(INGEST_BATCH_SQL)
                            .await
                            .map_err(DbError::Query)?;
                        let row = client
                            .query_one(&statement, &[&batch])
                            .await
                            .map_err(DbError::Query)?;
                        Ok(row.get::<_, Value>(0))
                    }
                }
            })
            .await?;
        let outcomes: Vec<IngestOutcome> =
            serde_json::from_value(value).map_err(DbError::Decode)?;
        if outcomes.len() != sent {
            return Err(DbError::Mismatch {
                sent,
                got: outcomes.len(),
            });
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                if outcome.outcome == "error" {
                    Err(DbError::Alert {
                        sqlstate: outcome.sqlstate.unwrap_or_default(),
                        message: outcome.message.unwrap_or_default(),
                    })
                } else {
                    Ok(outcome)
                }
            })
            .collect())
    }

    /// Queue length and live capture daemons (`public.capture_queue_status()`);
    /// also proves the database path works, for `/health/ready`.
    pub async fn queue_status(&self) -> Result<QueueStatus, DbError> {
        let value = self
            .bounded(async {
                match &self.path {
                    Path::Rest(rest) => rest.rpc("capture_queue_status", &json!({})).await,
                    Path::Pool(pool) => {
                        let client = pool.get().await.map_err(DbError::Pool)?;
                        let row = client
                            .query_one("select public.capture_queue_status()", &[])
                            .await
                            .map_err(DbError::Query)?;
                        Ok(row.get::<_, Value>(0))
                    }
                }
            })
            .await?;
        serde_json::from_value(value).map_err(DbError::Decode)
    }

    /// Stores the trader's sealed TradingView session (`Some`, marked valid)
    /// or forgets it (`None`, marked invalid) with
    /// `public.set_tradingview_session`; `false` when the user has no
    /// settings row. The value is [`cookie_seal`]'s envelope, never
    /// plaintext (the function refuses anything else).
    pub async fn set_session(&self, user_id: Uuid, sealed: Option<&[u8]>) -> Result<bool, DbError> {
        let value = self
            .bounded(async {
                match &self.path {
                    Path::Rest(rest) => {
                        let args = json!({
                            "p_user_id": user_id,
                            "p_sealed": sealed.map(bytea_literal),
                        });
                        rest.rpc("set_tradingview_session", &args).await
                    }
                    Path::Pool(pool) => {
                        let client = pool.get().await.map_err(DbError::Pool)?;
                        let row = client
                            .query_one(
                                "select public.set_tradingview_session($1, $2)",
                                &[&user_id, &sealed],
                            )
                            .await
                            .map_err(DbError::Query)?;
                        Ok(Value::Bool(row.get(0)))
                    }
                }
            })
            .await?;
        serde_json::from_value(value).map_err(DbError::Decode)
    }

    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        tokio::time::timeout(self.deadline, work)
            .await
            .map_err(|_| DbError::Timeout(self.deadline))?
    }
}

/// `bytes` as Postgres reads a `bytea` from text (`\x` and hex), the form
/// in which PostgREST passes a JSON string argument on.
fn bytea_literal(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut literal = String::with_capacity(2 + 2 * bytes.len());
    literal.push_str("\\x");
    for b in bytes {
        let _ = write!(literal, "{b:02x}");
    }
    literal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_that_raised_is_transient_only_when_a_retry_can_help() {
        let alert = |sqlstate: &str| DbError::Alert {
            sqlstate: sqlstate.into(),
            message: "x".into(),
        };
        assert!(alert("40P01").is_transient(), "a deadlock");
        assert!(alert("40001").is_transient(), "a serialization failure");
        assert!(alert("57014").is_transient(), "cancelled by an operator");
        assert!(!alert("22023").is_transient(), "bad input stays bad");
        assert!(!alert("23514").is_transient(), "a check constraint");
        assert!(!DbError::Mismatch { sent: 2, got: 1 }.is_transient());
    }

    #[test]
    fn bytea_literals_are_hex_escaped() {
        assert_eq!(bytea_literal(&[]), r"\x");
        assert_eq!(bytea_literal(&[0x01, 0xab, 0x00]), r"\x01ab00");
    }

    #[test]
    fn arguments_carry_the_parsed_signal_and_the_url_chart_wins() {
        let token = WebhookToken::parse("abcdefghijklmnopqrstuvwxyz0123").expect("token");
        let signal = Signal::parse(
            br#"{"ticker":"BINANCE:BTCUSDT","price":"67,890.50","side":"buy","tf":"1h","chart":"aaaa1111"}"#,
        )
        .expect("signal");
        let received_at = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let mut call = IngestCall {
            delivery_id: Uuid::now_v7(),
            token: &token,
            received_at,
            raw_message: signal.raw_message(),
            chart_id: Some("bbbb2222"),
            body: Ok(&signal),
        };
        let args = call.arguments();
        assert_eq!(args["p_token"], "abcdefghijklmnopqrstuvwxyz0123");
        assert_eq!(args["p_delivery_id"], call.delivery_id.to_string());
        assert_eq!(args["p_received_at"], "2026-11-22T10:00:00.000000Z");
        assert_eq!(args["p_ticker"], "BINANCE:BTCUSDT");
        assert_eq!(args["p_exchange"], "BINANCE");
        assert_eq!(args["p_symbol"], "BTCUSDT");
        assert_eq!(args["p_price"], "67890.50");
        assert_eq!(args["p_direction"], "long");
        assert_eq!(args["p_chart_id"], "bbbb2222");
        assert!(args.get("p_reject_code").is_none());
        assert!(
            args.get("p_signal_type").is_none(),
            "a null argument is left out"
        );
        call.chart_id = None;
        assert_eq!(call.arguments()["p_chart_id"], "aaaa1111");

        let rejected = IngestCall {
            delivery_id: Uuid::now_v7(),
            token: &token,
            received_at,
            raw_message: "hello",
            chart_id: None,
            body: Err((Rejection::NoTicker, "no ticker found".into())),
        };
        let args = rejected.arguments();
        assert_eq!(args["p_reject_code"], "no_ticker");
        assert_eq!(args["p_reject_message"], "no ticker found");
        assert!(args.get("p_ticker").is_none());
    }
}

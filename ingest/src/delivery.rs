//! One webhook delivery as `public.ingest_signal` takes it.
//!
//! The edge builds a [`Delivery`] from a request it is answering now, and
//! the spool's replayer builds one from a [`SpooledWebhook`] minutes later:
//! the same parsing and the same checks either way, so a replayed alert is
//! stored (or refused, and logged for the trader) exactly as it would have
//! been if the database had answered the first time.

use chrono::{DateTime, Utc};
use uuid::Uuid;
use webhook_spool::SpooledWebhook;

use crate::api::ApiError;
use crate::db::{IngestCall, Rejection};
use crate::signal::{ChartId, ParseError, Signal, WebhookToken};

/// How much of a rejected, non-text body is passed on for the trader's
/// delivery log (which keeps its first 500 characters).
const REJECTED_EXCERPT_CHARS: usize = 1000;

/// The body as the edge got it.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// Read whole, within the size limit.
    Read(&'a [u8]),
    /// Larger than `limit` bytes: refused without reading it.
    TooLarge { limit: u32 },
}

/// A webhook ready for its one database call.
#[derive(Debug)]
pub struct Delivery {
    /// Made when the request arrived; goes with every call for it.
    pub id: Uuid,
    pub token: WebhookToken,
    pub received_at: DateTime<Utc>,
    chart_id: Option<ChartId>,
    /// For a rejected body: what the delivery log shows of it.
    excerpt: String,
    parsed: Result<Signal, (Rejection, ApiError)>,
}

impl Delivery {
    /// Parses `body` and the raw `?chart=` value.
    pub fn new(
        id: Uuid,
        token: WebhookToken,
        received_at: DateTime<Utc>,
        chart: Option<&str>,
        body: Body<'_>,
    ) -> Self {
        let (excerpt, parsed) = match body {
            Body::TooLarge { limit } => (
                String::new(),
                Err((Rejection::BodyTooLarge, ApiError::BodyTooLarge { limit })),
            ),
            Body::Read(bytes) => match Signal::parse(bytes) {
                Ok(signal) => (String::new(), Ok(signal)),
                Err(error) => (excerpt(bytes), Err(refused(&error))),
            },
        };
        let (chart_id, parsed) = match chart_id(chart) {
            Ok(chart_id) => (chart_id, parsed),
            Err(message) => (
                None,
                Err((Rejection::InvalidBody, ApiError::InvalidBody(message))),
            ),
        };
        Self {
            id,
            token,
            received_at,
            chart_id,
            excerpt,
            parsed,
        }
    }

    /// A spooled webhook, parsed again for its replay.
    pub fn replay(webhook: &SpooledWebhook) -> Self {
        Self::new(
            webhook.delivery_id,
            webhook.token.clone(),
            webhook.received_at,
            webhook.chart.as_deref(),
            Body::Read(&webhook.body),
        )
    }

    /// The arguments of the call.
    pub fn call(&self) -> IngestCall<'_> {
        IngestCall {
            delivery_id: self.id,
            token: &self.token,
            received_at: self.received_at,
            raw_message: match &self.parsed {
                Ok(signal) => signal.raw_message(),
                Err(_) => &self.excerpt,
            },
            chart_id: self.chart_id.as_ref().map(ChartId::as_str),
            body: self
                .parsed
                .as_ref()
                .map_err(|(rejection, error)| (*rejection, error.to_string())),
        }
    }

    /// The edge's own refusal of the body, as the error the client gets;
    /// `None` when the body is a signal.
    pub fn refusal(&self) -> Option<ApiError> {
        self.parsed.as_ref().err().map(|(_, error)| error.clone())
    }
}

/// A parse error as the delivery log's reason and the client's answer.
fn refused(error: &ParseError) -> (Rejection, ApiError) {
    match error {
        ParseError::NoTicker => (Rejection::NoTicker, ApiError::NoTicker(error.to_string())),
        ParseError::NotUtf8(_) | ParseError::NulByte { .. } | ParseError::Empty => (
            Rejection::InvalidBody,
            ApiError::InvalidBody(error.to_string()),
        ),
    }
}

/// `?chart=` as a chart id: `Ok(None)` when absent or empty, `Err(message)`
/// when present but not a chart id.
fn chart_id(value: Option<&str>) -> Result<Option<ChartId>, String> {
    match value {
        None | Some("") => Ok(None),
        Some(value) => ChartId::parse(value)
            .map(Some)
            .map_err(|error| format!("?chart= is not a TradingView chart id: {error}")),
    }
}

/// A rejected body as text for the delivery log: lossy UTF-8, NULs (which
/// Postgres text cannot hold) replaced, cut short.
fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(REJECTED_EXCERPT_CHARS)
        .map(|c| if c == '\0' { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> WebhookToken {
        WebhookToken::parse("abcdefghijklmnopqrstuvwxyz0123").expect("token")
    }

    fn delivery(chart: Option<&str>, body: Body<'_>) -> Delivery {
        Delivery::new(Uuid::now_v7(), token(), Utc::now(), chart, body)
    }

    #[test]
    fn the_chart_parameter_is_a_chart_id_or_an_error() {
        assert_eq!(chart_id(None), Ok(None));
        assert_eq!(chart_id(Some("")), Ok(None));
        assert_eq!(
            chart_id(Some("aBcD1234")).map(|c| c.map(|c| c.as_str().to_owned())),
            Ok(Some("aBcD1234".to_owned()))
        );
        assert!(chart_id(Some("../../etc")).is_err());

        let bad_chart = delivery(Some("../x"), Body::Read(b"BINANCE:BTCUSDT buy"));
        assert!(matches!(
            bad_chart.refusal(),
            Some(ApiError::InvalidBody(_))
        ));
        assert_eq!(
            bad_chart.call().arguments()["p_reject_code"],
            "invalid_body"
        );
    }

    #[test]
    fn excerpts_hold_no_nul_and_stay_short() {
        let text = excerpt(b"a\0b\xff");
        assert_eq!(text, "a\u{fffd}b\u{fffd}");
        assert_eq!(excerpt(&[b'x'; 5000]).len(), REJECTED_EXCERPT_CHARS);
    }

    #[test]
    fn a_replay_makes_the_same_call_as_the_first_attempt() {
        let body = br#"{"ticker":"BINANCE:BTCUSDT","side":"buy"}"#;
        let first = Delivery::new(
            Uuid::now_v7(),
            token(),
            Utc::now(),
            Some("aaaa1111"),
            Body::Read(body),
        );
        let spooled = SpooledWebhook {
            delivery_id: first.id,
            token: token(),
            chart: Some("aaaa1111".into()),
            body: bytes::Bytes::from_static(body),
            received_at: first.received_at,
            client_ip: None,
        };
        assert_eq!(
            Delivery::replay(&spooled).call().arguments(),
            first.call().arguments()
        );
    }

    #[test]
    fn refusals_name_what_the_edge_found() {
        assert!(
            delivery(None, Body::Read(b"BINANCE:BTCUSDT buy"))
                .refusal()
                .is_none()
        );
        assert!(matches!(
            delivery(None, Body::Read(b"hello there")).refusal(),
            Some(ApiError::NoTicker(_))
        ));
        assert!(matches!(
            delivery(None, Body::Read(b"")).refusal(),
            Some(ApiError::InvalidBody(_))
        ));
        let large = delivery(None, Body::TooLarge { limit: 10 });
        assert_eq!(large.call().arguments()["p_reject_code"], "body_too_large");
        assert!(matches!(
            large.refusal(),
            Some(ApiError::BodyTooLarge { limit: 10 })
        ));
    }
}

//! The webhook body, parsed once into a [`Signal`] or a precise
//! [`ParseError`]. Pure: no I/O, no clock, no allocation beyond the result.
//!
//! Why this is its own module: TradingView sends whatever the trader typed
//! into the alert's message box, sometimes JSON, often not, and never
//! labelled by `Content-Type` (a JSON message with a trailing newline
//! arrives as `text/plain`). Every guess about that text is made here, once,
//! and the rest of the service only sees typed values: [`Ticker`],
//! [`Price`], [`Direction`], [`Interval`], [`ChartId`]. Each of those can
//! only hold a value the database accepts, so a parsed signal never fails a
//! column check. This is also where the fuzz target and the property tests
//! aim.
//!
//! How a body is read ([`Signal::parse`]):
//!
//! 1. Bytes: must be UTF-8 ([`ParseError::NotUtf8`]), contain no NUL
//!    ([`ParseError::NulByte`], Postgres text cannot hold one) and not be
//!    blank ([`ParseError::Empty`]).
//! 2. Sniffing: a body that parses as a JSON object is read by key
//!    (`json.rs`); a JSON string is unwrapped and read as text; anything else
//!    is text (`text.rs`): TradingView's default messages, `Label: value`
//!    lines, free text.
//! 3. A signal needs a ticker; without one the answer is
//!    [`ParseError::NoTicker`], whose message tells the trader what to send.
//!    Every other field is optional.
//!
//! The body itself is kept untouched for `raw_message`
//! ([`Signal::raw_message`]).

mod chart;
mod direction;
mod draft;
mod interval;
mod json;
mod price;
mod text;
mod ticker;
mod time;
mod words;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub use chart::{ChartId, ChartIdError, MAX_CHART_ID_LEN};
pub use interval::{Interval, IntervalError, IntervalUnit};
pub use price::{Price, PriceError};
pub use signal_vocabulary::Direction;
pub use ticker::{MAX_EXCHANGE_LEN, MAX_SYMBOL_LEN, Ticker, TickerError};
pub use webhook_token::{MAX_TOKEN_LEN, MIN_TOKEN_LEN, WebhookToken, WebhookTokenError};

use draft::Draft;

/// One alert, as the trader meant it.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    ticker: Ticker,
    price: Option<Price>,
    direction: Option<Direction>,
    #[expect(
        clippy::struct_field_names,
        reason = "named after the signals.signal_type column it fills"
    )]
    signal_type: Option<String>,
    indicator: Option<String>,
    interval: Option<Interval>,
    time: Option<DateTime<Utc>>,
    chart_id: Option<ChartId>,
    extra: Map<String, Value>,
    format: BodyFormat,
    raw: String,
}

/// How the body was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// A JSON object.
    Json,
    /// Anything else: labelled lines, TradingView's default texts, prose.
    Text,
}

/// Why a body is not a signal. The messages are written for the trader:
/// they end up in the delivery log on their dashboard.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is not UTF-8 text.
    #[error("body is not UTF-8 text; TradingView alert messages are UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// The body holds a NUL character, which Postgres text cannot store.
    #[error("body contains a NUL character (byte {offset}), which a text message cannot hold")]
    NulByte {
        /// Byte offset of the first NUL.
        offset: usize,
    },
    /// The body is empty or only whitespace.
    #[error("body is empty: write the alert's message in TradingView's Message box")]
    Empty,
    /// Nothing in the body names an instrument.
    #[error(
        "no ticker found: send JSON with a \"ticker\" field, a line like \"Ticker: BINANCE:BTCUSDT\", or EXCHANGE:SYMBOL anywhere in the text"
    )]
    NoTicker,
}

impl Signal {
    /// Parses a webhook body. Never panics, whatever the bytes; runs in time
    /// linear in the body's length.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let raw = std::str::from_utf8(body).map_err(ParseError::NotUtf8)?;
        if let Some(offset) = raw.find('\0') {
            return Err(ParseError::NulByte { offset });
        }
        let content = raw.trim_start_matches('\u{feff}').trim();
        if content.is_empty() {
            return Err(ParseError::Empty);
        }

        let mut draft = Draft::default();
        let format = match json::sniff(content) {
            Some(json::Json::Object(entries)) => {
                json::fill(&entries, &mut draft);
                if draft.ticker.is_none() {
                    // `{"message": "BINANCE:BTCUSDT buy"}`: look inside.
                    draft.ticker = text::find_exchange_symbol(content).map(|(ticker, _)| ticker);
                }
                BodyFormat::Json
            }
            Some(json::Json::String(inner)) => {
                text::fill(&inner, &mut draft);
                BodyFormat::Text
            }
            None => {
                text::fill(content, &mut draft);
                BodyFormat::Text
            }
        };
        draft.finish(raw.to_owned(), format)
    }

    /// The instrument.
    pub fn ticker(&self) -> &Ticker {
        &self.ticker
    }

    /// The price the alert carried, if any.
    pub fn price(&self) -> Option<Price> {
        self.price
    }

    /// Long or short, from an explicit field or inferred from the signal
    /// kind or a buy/sell word.
    pub fn direction(&self) -> Option<Direction> {
        self.direction
    }

    /// What kind of alert this is, as the trader worded it (`COMPRA`,
    /// `Long Entry`, `Crossing`, `buy`). At most 100 characters.
    pub fn signal_type(&self) -> Option<&str> {
        self.signal_type.as_deref()
    }

    /// The indicator or strategy that fired. At most 200 characters.
    pub fn indicator(&self) -> Option<&str> {
        self.indicator.as_deref()
    }

    /// The chart timeframe.
    pub fn interval(&self) -> Option<Interval> {
        self.interval
    }

    /// When the alert says it fired.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        self.time
    }

    /// A chart layout named in the body (the `?chart=` query parameter is
    /// the HTTP layer's business).
    pub fn chart_id(&self) -> Option<&ChartId> {
        self.chart_id.as_ref()
    }

    /// Everything else the alert carried: unknown JSON keys, unknown labels
    /// in a labelled message, values under known names that could not be
    /// read, and details of TradingView's order-fill message
    /// (`contracts`, `position_size`).
    pub fn extra(&self) -> &Map<String, Value> {
        &self.extra
    }

    /// How the body was read.
    pub fn format(&self) -> BodyFormat {
        self.format
    }

    /// The body exactly as received, for `raw_message`.
    pub fn raw_message(&self) -> &str {
        &self.raw
    }
}

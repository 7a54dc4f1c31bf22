//! The fields of a signal as they are being collected, before the ticker is
//! known to be there. Both the JSON and the text readers fill a [`Draft`];
//! [`Draft::finish`] turns it into a [`Signal`] or [`ParseError::NoTicker`].
//!
//! Rules shared by every reader:
//! - the first usable value of a field wins, except that a ticker naming its
//!   exchange replaces one that does not (`"symbol": "BTCUSDT"` followed by
//!   `"tickerid": "BINANCE:BTCUSDT"`);
//! - unfilled placeholders (`{{close}}`) are missing values;
//! - a value under a known name that cannot be read (`"price": "n/a"`) is
//!   kept in `extra` under its original name, so nothing the trader sent is
//!   silently lost.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use signal_vocabulary::Direction;

use super::chart::ChartId;
use super::direction;
use super::interval::Interval;
use super::price::Price;
use super::ticker::{Ticker, is_exchange};
use super::time::{from_unix, parse_time};
use super::words::{clean_text, fold, is_placeholder};
use super::{BodyFormat, ParseError, Signal};

/// The `indicator_name` column's limit, in characters.
pub(crate) const MAX_INDICATOR_CHARS: usize = 200;
/// The `signal_type` column's limit, in characters.
pub(crate) const MAX_SIGNAL_TYPE_CHARS: usize = 100;
/// Longest value kept in `extra` from a text body, in characters.
const MAX_EXTRA_CHARS: usize = 500;

/// Which signal field a key or label names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    Ticker,
    Exchange,
    Price,
    Indicator,
    SignalType,
    Direction,
    Interval,
    Time,
    Chart,
    /// Labelled text only: `Cambio:` / `Change:`, kept in `extra`.
    Change,
}

impl Field {
    /// The field a JSON key names, after lower-casing and turning spaces and
    /// dashes into underscores.
    pub(crate) fn from_json_key(key: &str) -> Option<Self> {
        let key: String = key
            .trim()
            .chars()
            .map(|c| match c {
                ' ' | '-' => '_',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        Some(match key.as_str() {
            "ticker" | "symbol" | "tickerid" | "ticker_id" => Self::Ticker,
            "exchange" => Self::Exchange,
            "price" | "close" => Self::Price,
            "indicator" | "indicator_name" | "strategy" => Self::Indicator,
            "signal_type" | "signal" | "alert" | "type" => Self::SignalType,
            "direction" | "side" | "action" | "order_action" | "market_position" => Self::Direction,
            "interval" | "timeframe" | "tf" => Self::Interval,
            "time" | "timenow" | "timestamp" => Self::Time,
            "chart" | "chart_id" | "chartid" => Self::Chart,
            _ => return None,
        })
    }

    /// The field a text label names (English or Spanish, accents and case
    /// optional).
    pub(crate) fn from_label(label: &str) -> Option<Self> {
        let label = fold(label);
        let label: String = label.split_whitespace().collect::<Vec<_>>().join(" ");
        Some(match label.as_str() {
            "ticker" | "tickerid" | "simbolo" | "symbol" | "par" | "pair" | "activo" | "asset"
            | "instrumento" | "instrument" => Self::Ticker,
            "exchange" | "bolsa" => Self::Exchange,
            "precio" | "price" | "close" | "cierre" | "entrada" | "entry" | "entry price"
            | "precio de entrada" | "precio actual" | "current price" => Self::Price,
            "cambio" | "change" | "variacion" => Self::Change,
            "senal" | "signal" | "signal type" | "tipo de senal" | "tipo" | "type" | "alerta"
            | "alert" | "evento" | "event" => Self::SignalType,
            "indicador" | "indicator" | "indicator name" | "estrategia" | "strategy" => {
                Self::Indicator
            }
            "direccion" | "direction" | "side" | "lado" | "accion" | "action" | "orden"
            | "order" | "operacion" => Self::Direction,
            "temporalidad" | "timeframe" | "intervalo" | "interval" | "tf" | "marco temporal"
            | "periodo" | "period" => Self::Interval,
            "hora" | "time" | "fecha" | "date" | "timestamp" | "fecha y hora" | "datetime" => {
                Self::Time
            }
            "grafico" | "chart" | "chart id" => Self::Chart,
            _ => return None,
        })
    }
}

/// A value offered for a field.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Offered<'a> {
    /// Text: a JSON string's contents, a label's value.
    Text(&'a str),
    /// A JSON number literal exactly as written.
    Number(&'a str),
}

impl<'a> Offered<'a> {
    fn text(self) -> &'a str {
        match self {
            Self::Text(text) | Self::Number(text) => text,
        }
    }
}

/// Signal fields collected so far.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    pub(crate) ticker: Option<Ticker>,
    pub(crate) exchange: Option<String>,
    pub(crate) price: Option<Price>,
    pub(crate) indicator: Option<String>,
    pub(crate) signal_type: Option<String>,
    pub(crate) direction: Option<Direction>,
    pub(crate) interval: Option<Interval>,
    pub(crate) time: Option<DateTime<Utc>>,
    pub(crate) chart_id: Option<ChartId>,
    pub(crate) extra: Map<String, Value>,
}

impl Draft {
    /// Offers `value` for `field`; `name` is the key or label it came under,
    /// used if the value has to go to `extra`. Returns whether the value was
    /// understood (used or a duplicate of a field already set).
    pub(crate) fn offer(&mut self, field: Field, name: &str, value: Offered<'_>) -> bool {
        let text = value.text().trim();
        if text.is_empty() || is_placeholder(text) {
            return true;
        }
        let understood = match field {
            Field::Ticker => self.offer_ticker(text),
            Field::Exchange => {
                let exchange = text.to_ascii_uppercase();
                let ok = is_exchange(&exchange);
                if ok && self.exchange.is_none() {
                    self.exchange = Some(exchange);
                }
                ok
            }
            Field::Price => {
                let price = match value {
                    Offered::Number(literal) => Price::from_json_number(literal),
                    Offered::Text(text) => Price::parse(text),
                };
                set(&mut self.price, price.ok())
            }
            Field::Indicator => set(&mut self.indicator, clean_text(text, MAX_INDICATOR_CHARS)),
            Field::SignalType => set(
                &mut self.signal_type,
                clean_text(text, MAX_SIGNAL_TYPE_CHARS),
            ),
            Field::Direction => set(&mut self.direction, direction::from_field(text)),
            Field::Interval => set(&mut self.interval, Interval::parse(text).ok()),
            Field::Time => {
                let time = match value {
                    Offered::Number(literal) => from_unix(literal),
                    Offered::Text(text) => parse_time(text),
                };
                set(&mut self.time, time)
            }
            Field::Chart => set(&mut self.chart_id, ChartId::parse(text).ok()),
            Field::Change => {
                self.keep("change", text);
                true
            }
        };
        if !understood {
            self.keep(name, text);
        }
        understood
    }

    /// Keeps a value the signal has no field for.
    pub(crate) fn keep(&mut self, name: &str, text: &str) {
        if let (Some(name), Some(text)) = (clean_text(name, 100), clean_text(text, MAX_EXTRA_CHARS))
        {
            self.extra.entry(name).or_insert(Value::String(text));
        }
    }

    /// The first word of `text` that is a ticker wins; a ticker with an
    /// exchange replaces one without.
    fn offer_ticker(&mut self, text: &str) -> bool {
        let found = text
            .split(|c: char| {
                c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '|' | '"' | '\'')
            })
            .find_map(|word| Ticker::parse(word).ok());
        let Some(found) = found else {
            return false;
        };
        match &self.ticker {
            None => self.ticker = Some(found),
            Some(current) if current.exchange().is_none() && found.exchange().is_some() => {
                self.ticker = Some(found);
            }
            Some(_) => {}
        }
        true
    }

    /// Turns the draft into a signal. Fails only when no ticker was found.
    pub(crate) fn finish(self, raw: String, format: BodyFormat) -> Result<Signal, ParseError> {
        let mut ticker = self.ticker.ok_or(ParseError::NoTicker)?;
        if let Some(exchange) = &self.exchange {
            // The exchange was validated when offered, so joining cannot fail;
            // keep the bare ticker if it somehow does.
            ticker = ticker.clone().with_exchange(exchange).unwrap_or(ticker);
        }
        let direction = self
            .direction
            .or_else(|| self.signal_type.as_deref().and_then(direction::from_field));
        Ok(Signal {
            ticker,
            price: self.price,
            direction,
            signal_type: self.signal_type,
            indicator: self.indicator,
            interval: self.interval,
            time: self.time,
            chart_id: self.chart_id,
            extra: self.extra,
            format,
            raw,
        })
    }
}

/// Sets `slot` to `value` if empty. Returns whether `value` was usable.
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    match value {
        Some(value) => {
            if slot.is_none() {
                *slot = Some(value);
            }
            true
        }
        None => false,
    }
}

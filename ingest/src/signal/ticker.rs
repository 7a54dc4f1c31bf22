//! [`Ticker`]: which instrument an alert is about.
//!
//! TradingView names instruments `EXCHANGE:SYMBOL` (`BINANCE:BTCUSDT`,
//! `CME_MINI:ES1!`, `NYSE:BRK.B`); its `{{ticker}}` placeholder gives the
//! symbol alone and `{{exchange}}` the exchange. A `Ticker` holds an optional
//! exchange and a symbol, both upper-case and within the column limits of
//! `public.signals`, so the database never rejects one.

use std::fmt;
use std::str::FromStr;

/// Longest exchange accepted. TradingView's longest prefixes are around a
/// dozen characters (`CBOT_MINI`, `CRYPTOCAP`); the column allows 40.
pub const MAX_EXCHANGE_LEN: usize = 32;
/// Longest symbol accepted, the `symbol` column's limit.
pub const MAX_SYMBOL_LEN: usize = 40;

/// An instrument: an optional exchange and a symbol.
///
/// Invariants: the exchange is 1..=32 characters of `A-Z`, `0-9`, `_`,
/// starting with a letter; the symbol is 1..=40 characters of `A-Z`, `0-9`,
/// `.`, `_`, `/`, `-`, starting and ending with a letter or digit, except
/// that a continuous-futures symbol may end in `!` right after a digit
/// (`ES1!`, `6E1!`). Input is upper-cased before checking.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ticker {
    exchange: Option<String>,
    symbol: String,
}

/// Why a string is not a ticker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TickerError {
    /// Nothing but whitespace.
    #[error("ticker is empty")]
    Empty,
    /// The part before `:` is not an exchange name.
    #[error(
        "exchange must be 1 to {MAX_EXCHANGE_LEN} letters, digits or underscores, starting with a letter"
    )]
    Exchange,
    /// The symbol has characters or a length TradingView symbols never have.
    #[error(
        "symbol must be 1 to {MAX_SYMBOL_LEN} letters, digits or . _ / - characters (or end in digit + !)"
    )]
    Symbol,
}

impl Ticker {
    /// Builds a ticker from its parts, upper-casing both.
    pub fn new(exchange: Option<&str>, symbol: &str) -> Result<Self, TickerError> {
        let exchange = exchange
            .map(|exchange| {
                let exchange = exchange.trim().to_ascii_uppercase();
                if is_exchange(&exchange) {
                    Ok(exchange)
                } else {
                    Err(TickerError::Exchange)
                }
            })
            .transpose()?;
        let symbol = symbol.trim().to_ascii_uppercase();
        if !is_symbol(&symbol) {
            return Err(TickerError::Symbol);
        }
        Ok(Self { exchange, symbol })
    }

    /// Parses `EXCHANGE:SYMBOL` or a bare `SYMBOL`, case-insensitively,
    /// ignoring surrounding whitespace and a leading `$` or `#` (cashtags).
    pub fn parse(s: &str) -> Result<Self, TickerError> {
        let s = s.trim().trim_start_matches(['$', '#']);
        if s.is_empty() {
            return Err(TickerError::Empty);
        }
        match s.split_once(':') {
            Some((exchange, symbol)) => Self::new(Some(exchange), symbol),
            None => Self::new(None, s),
        }
    }

    /// The exchange, if known (`BINANCE`).
    pub fn exchange(&self) -> Option<&str> {
        self.exchange.as_deref()
    }

    /// The symbol (`BTCUSDT`).
    pub fn symbol(&self) -> &str {
        &self.symbol
    }

    /// Adds an exchange given separately (a JSON `exchange` field next to a
    /// bare `symbol`). A ticker that already names its exchange keeps it.
    pub fn with_exchange(self, exchange: &str) -> Result<Self, TickerError> {
        if self.exchange.is_some() {
            return Ok(self);
        }
        Self::new(Some(exchange), &self.symbol)
    }
}

impl fmt::Display for Ticker {
    /// `EXCHANGE:SYMBOL`, or `SYMBOL` when the exchange is unknown: the form
    /// stored in `signals.ticker`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.exchange {
            Some(exchange) => write!(f, "{exchange}:{}", self.symbol),
            None => f.write_str(&self.symbol),
        }
    }
}

impl FromStr for Ticker {
    type Err = TickerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Exchange names: `[A-Z][A-Z0-9_]{0,31}`.
pub(crate) fn is_exchange(s: &str) -> bool {
    let bytes = s.as_bytes();
    (1..=MAX_EXCHANGE_LEN).contains(&bytes.len())
        && bytes[0].is_ascii_uppercase()
        && bytes.iter().all(|&b| is_exchange_byte(b))
}

pub(crate) fn is_exchange_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'
}

/// Bytes that may appear inside a symbol (the final `!` is checked apart).
pub(crate) fn is_symbol_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'/' | b'-' | b'!')
}

/// Symbols: see [`Ticker`]'s invariants.
pub(crate) fn is_symbol(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some((&last, body)) = bytes.split_last() else {
        return false;
    };
    if bytes.len() > MAX_SYMBOL_LEN || !bytes[0].is_ascii_alphanumeric() {
        return false;
    }
    let body_ok = body.iter().all(|&b| is_symbol_byte(b) && b != b'!');
    let last_ok = last.is_ascii_alphanumeric()
        || (last == b'!' && body.last().is_some_and(u8::is_ascii_digit));
    body_ok && last_ok
}

/// The longest valid symbol at the start of `bytes` (a run of symbol bytes
/// with trailing punctuation such as a full stop trimmed), as a length.
pub(crate) fn symbol_prefix_len(bytes: &[u8]) -> usize {
    let run = bytes.iter().take_while(|&&b| is_symbol_byte(b)).count();
    let mut end = run;
    while end > 0 {
        let last = bytes[end - 1];
        let keep = last.is_ascii_alphanumeric()
            || (last == b'!' && end >= 2 && bytes[end - 2].is_ascii_digit());
        if keep {
            break;
        }
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::{Ticker, TickerError};

    #[test]
    fn splits_exchange_and_symbol() {
        for (input, exchange, symbol) in [
            ("BINANCE:BTCUSDT", Some("BINANCE"), "BTCUSDT"),
            ("CME_MINI:ES1!", Some("CME_MINI"), "ES1!"),
            ("BYBIT:BTCUSDT.P", Some("BYBIT"), "BTCUSDT.P"),
            ("NYSE:BRK.B", Some("NYSE"), "BRK.B"),
            ("CME:6E1!", Some("CME"), "6E1!"),
            ("OANDA:EURUSD", Some("OANDA"), "EURUSD"),
            ("nq1!", None, "NQ1!"),
            (" binance:btcusdt ", Some("BINANCE"), "BTCUSDT"),
            ("$AAPL", None, "AAPL"),
            ("HKEX:700", Some("HKEX"), "700"),
        ] {
            let ticker = Ticker::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(ticker.exchange(), exchange, "{input}");
            assert_eq!(ticker.symbol(), symbol, "{input}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_ticker() {
        assert_eq!(Ticker::parse("  "), Err(TickerError::Empty));
        assert_eq!(Ticker::parse("1BAD:X"), Err(TickerError::Exchange));
        assert_eq!(Ticker::parse("BTC USDT"), Err(TickerError::Symbol));
        assert_eq!(Ticker::parse("AAPL!"), Err(TickerError::Symbol));
        assert_eq!(Ticker::parse("BTCUSDT."), Err(TickerError::Symbol));
        assert_eq!(Ticker::parse("ÑANDU"), Err(TickerError::Symbol));
        assert_eq!(Ticker::parse(&"A".repeat(41)), Err(TickerError::Symbol));
    }

    #[test]
    fn display_is_the_stored_form() {
        assert_eq!(
            Ticker::parse("binance:btcusdt").unwrap().to_string(),
            "BINANCE:BTCUSDT"
        );
        let joined = Ticker::parse("SOLUSDT")
            .unwrap()
            .with_exchange("binance")
            .unwrap();
        assert_eq!(joined.to_string(), "BINANCE:SOLUSDT");
        let kept = Ticker::parse("BYBIT:SOLUSDT")
            .unwrap()
            .with_exchange("BINANCE")
            .unwrap();
        assert_eq!(kept.to_string(), "BYBIT:SOLUSDT");
    }
}

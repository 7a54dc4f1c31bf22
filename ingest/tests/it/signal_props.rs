//! Properties of `Signal::parse` that must hold for every input, not just
//! the ones someone thought of.

use ingest::signal::{ParseError, Signal, Ticker};
use proptest::prelude::*;
use rust_decimal::Decimal;

/// Pieces of real alert syntax, so random bodies reach deep into the
/// readers (labels, order fills, placeholders, numbers) instead of failing
/// the first check.
const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    "：",
    ",",
    ";",
    "=",
    " ",
    "\n",
    "\r\n",
    "\r",
    "\t",
    "\\",
    "\u{feff}",
    "ticker",
    "Ticker",
    "symbol",
    "exchange",
    "price",
    "close",
    "side",
    "action",
    "tf",
    "time",
    "chart",
    "Señal",
    "Símbolo",
    "Precio",
    "Temporalidad",
    "Dirección",
    "Cambio",
    "Hora",
    "**",
    "🚨",
    "•",
    "BINANCE",
    "BINANCE:BTCUSDT",
    "CME_MINI:ES1!",
    "NYSE:BRK.B",
    "BTCUSDT.P",
    "HKEX:700",
    "RSI:70",
    "buy",
    "sell",
    "COMPRA",
    "venta",
    "long",
    "short",
    "exit",
    "order ",
    " @ ",
    "@",
    "$",
    "€",
    " filled on ",
    ". New strategy position is ",
    "Crossing",
    "Greater Than",
    "1h",
    "15",
    "4H",
    "1D",
    "M15",
    "67,890.50",
    "1.234,56",
    "1,0842",
    "-1",
    "0",
    "1e-5",
    "99999999999999999999",
    "{{close}}",
    "{{ticker}}",
    "}}",
    "{{",
    "2024-01-15T14:30:00Z",
    "1705329000000",
    "null",
    "true",
    "\\u0000",
    "https://www.tradingview.com/chart/aBcD1234/",
    "ñ",
    "\u{303}",
    "\u{a0}",
    "\u{202f}",
    "\u{2212}",
    "\u{3000}",
];

fn fragment_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|parts| parts.concat())
}

/// Exchange names as TradingView writes them.
fn exchange() -> impl Strategy<Value = String> {
    "[A-Z][A-Z0-9_]{0,15}"
}

/// Valid symbols: letters and digits with inner `.` `_` `/` `-`, or a
/// continuous future ending in digit + `!`.
fn symbol() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Z0-9]{1,10}",
        "[A-Z0-9]{1,8}[._/-][A-Z0-9]{1,4}",
        "[A-Z0-9]{1,5}[0-9]!",
    ]
}

/// Prose around the ticker: lower-case words, no colons or digits.
fn prose() -> impl Strategy<Value = String> {
    "[a-zñé ]{0,30}"
}

/// Inputs the fuzzer once crashed the parser with, kept so they never do
/// again (see `ingest/fuzz/README.md`).
#[test]
fn fuzz_regressions() {
    let crashes: &[&[u8]] = &[
        // A no-break space (two bytes) before the order-fill action was
        // sliced as if it were one byte.
        b"T}:\xc2\xa0:\xc2\xa0\xc2\xa0}Tnic67888A@ filled on PL\rer}gm",
    ];
    for body in crashes {
        let _ = Signal::parse(body);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Signal::parse(&body);
    }

    #[test]
    fn never_panics_on_text(body in "\\PC{0,300}") {
        let _ = Signal::parse(body.as_bytes());
    }

    #[test]
    fn never_panics_on_alert_like_text(body in fragment_soup()) {
        let _ = Signal::parse(body.as_bytes());
    }

    /// Whatever parses keeps the body byte for byte, and its fields obey
    /// the column limits.
    #[test]
    fn accepted_signals_keep_the_body_and_fit_the_columns(body in fragment_soup()) {
        if let Ok(signal) = Signal::parse(body.as_bytes()) {
            prop_assert_eq!(signal.raw_message(), body.as_str());
            prop_assert!(signal.ticker().to_string().len() <= 80);
            prop_assert!(signal.indicator().is_none_or(|s| s.chars().count() <= 200 && !s.contains('\0')));
            prop_assert!(signal.signal_type().is_none_or(|s| s.chars().count() <= 100 && !s.contains('\0')));
            prop_assert!(signal.interval().is_none_or(|i| i.to_string().len() <= 20));
            if let Some(price) = signal.price() {
                prop_assert!(price.as_decimal() >= Decimal::ZERO);
            }
        }
    }

    /// Any valid `EXCHANGE:SYMBOL` in prose comes back exactly.
    #[test]
    fn exchange_symbol_in_text_round_trips(
        before in prose(),
        exchange in exchange(),
        symbol in symbol(),
        separator in prop::sample::select(&[" ", ". ", ", ", ") ", "\n", "\r\n", ""][..]),
        after in prose(),
    ) {
        let expected = Ticker::new(Some(&exchange), &symbol);
        prop_assume!(expected.is_ok());
        // Nothing may follow the symbol directly but a boundary: with no
        // separator, the ticker ends the text.
        let after = if separator.is_empty() { "" } else { after.as_str() };
        let body = format!("{before} {exchange}:{symbol}{separator}{after}");
        let signal = Signal::parse(body.as_bytes());
        prop_assert!(signal.is_ok(), "{body:?}: {signal:?}");
        let signal = signal.unwrap();
        prop_assert_eq!(signal.ticker().exchange(), Some(exchange.as_str()), "{:?}", body);
        prop_assert_eq!(signal.ticker().symbol(), symbol.as_str(), "{:?}", body);
    }

    /// The same ticker survives in every shape a trader might send it.
    #[test]
    fn exchange_symbol_round_trips_in_every_format(exchange in exchange(), symbol in symbol()) {
        prop_assume!(Ticker::new(Some(&exchange), &symbol).is_ok());
        for body in [
            format!(r#"{{"ticker":"{exchange}:{symbol}"}}"#),
            format!(r#"{{"symbol":"{symbol}","exchange":"{exchange}"}}"#),
            format!("Símbolo: {exchange}:{symbol}\nPrecio: 1"),
            format!("{exchange}:{symbol}, 1h Crossing 1"),
            format!("S: order buy @ 1 filled on {exchange}:{symbol}. New strategy position is 1"),
        ] {
            let signal = Signal::parse(body.as_bytes());
            prop_assert!(signal.is_ok(), "{body:?}: {signal:?}");
            let signal = signal.unwrap();
            prop_assert_eq!(signal.ticker().exchange(), Some(exchange.as_str()), "{:?}", body);
            prop_assert_eq!(signal.ticker().symbol(), symbol.as_str(), "{:?}", body);
        }
    }

    /// A price written with US or European grouping reads back exactly.
    #[test]
    fn grouped_prices_read_back_exactly(whole in 1_000u64..1_000_000_000, cents in 0u32..100) {
        let us = format!("{}.{cents:02}", group(whole, ','));
        let european = format!("{},{cents:02}", group(whole, '.'));
        let expected: Decimal = format!("{whole}.{cents:02}").parse().unwrap();
        for body in [
            format!("Ticker: BINANCE:BTCUSDT\nPrice: ${us}"),
            format!("Ticker: BINANCE:BTCUSDT\nPrecio: {european} €"),
            format!(r#"{{"ticker":"BINANCE:BTCUSDT","price":"{us} USDT"}}"#),
        ] {
            let signal = Signal::parse(body.as_bytes());
            prop_assert!(signal.is_ok(), "{body:?}");
            prop_assert_eq!(signal.unwrap().price().map(ingest::signal::Price::as_decimal), Some(expected), "{:?}", body);
        }
    }

    /// Text without an upper-case `EXCHANGE:SYMBOL`, labels or JSON never
    /// yields a ticker.
    #[test]
    fn prose_alone_has_no_ticker(body in "[a-z ,.!?]{1,80}") {
        prop_assume!(!body.trim().is_empty());
        prop_assert_eq!(Signal::parse(body.as_bytes()).err(), Some(ParseError::NoTicker));
    }
}

/// `1234567` → `1,234,567`.
fn group(mut n: u64, separator: char) -> String {
    let mut groups = Vec::new();
    while n >= 1000 {
        groups.push(format!("{:03}", n % 1000));
        n /= 1000;
    }
    groups.push(n.to_string());
    groups.reverse();
    groups.join(&separator.to_string())
}

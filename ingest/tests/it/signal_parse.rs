//! Table-driven tests of `Signal::parse` over the alert shapes traders and
//! TradingView really send: JSON variants, English and Spanish labelled
//! messages, TradingView's default strategy and indicator texts, European
//! numbers, unfilled placeholders, CRLF. Every expected field is checked,
//! including the ones that must stay empty, so the parser never invents.

use ingest::signal::{BodyFormat, Direction, ParseError, Signal};
use serde_json::json;

/// What one body must parse to. `None` means "must be absent".
#[derive(Debug)]
struct Case {
    body: &'static str,
    ticker: &'static str,
    price: Option<&'static str>,
    direction: Option<Direction>,
    interval: Option<&'static str>,
    indicator: Option<&'static str>,
    signal_type: Option<&'static str>,
    time: Option<&'static str>,
    format: BodyFormat,
}

fn json(body: &'static str, ticker: &'static str) -> Case {
    Case {
        body,
        ticker,
        price: None,
        direction: None,
        interval: None,
        indicator: None,
        signal_type: None,
        time: None,
        format: BodyFormat::Json,
    }
}

fn text(body: &'static str, ticker: &'static str) -> Case {
    Case {
        format: BodyFormat::Text,
        ..json(body, ticker)
    }
}

impl Case {
    fn price(mut self, price: &'static str) -> Self {
        self.price = Some(price);
        self
    }
    fn long(mut self) -> Self {
        self.direction = Some(Direction::Long);
        self
    }
    fn short(mut self) -> Self {
        self.direction = Some(Direction::Short);
        self
    }
    fn interval(mut self, interval: &'static str) -> Self {
        self.interval = Some(interval);
        self
    }
    fn indicator(mut self, indicator: &'static str) -> Self {
        self.indicator = Some(indicator);
        self
    }
    fn kind(mut self, signal_type: &'static str) -> Self {
        self.signal_type = Some(signal_type);
        self
    }
    fn time(mut self, time: &'static str) -> Self {
        self.time = Some(time);
        self
    }
}

/// JSON bodies, with the aliases traders use.
fn json_cases() -> Vec<Case> {
    vec![
        json(
            r#"{"ticker": "BINANCE:BTCUSDT", "price": "67890.50", "action": "buy", "interval": "60", "indicator": "Trend Pro"}"#,
            "BINANCE:BTCUSDT",
        )
        .price("67890.50")
        .long()
        .interval("1h")
        .indicator("Trend Pro"),
        json(
            r#"{"symbol": "SOLUSDT", "exchange": "BINANCE", "close": 152.3, "side": "long", "tf": "15m", "strategy": "Scalper"}"#,
            "BINANCE:SOLUSDT",
        )
        .price("152.3")
        .long()
        .interval("15m")
        .indicator("Scalper"),
        json(
            r#"{"ticker":"BTCUSDT","exchange":"BINANCE","close":67890.50,"time":"2024-01-15T14:30:00Z","interval":"240"}"#,
            "BINANCE:BTCUSDT",
        )
        .price("67890.50")
        .interval("4h")
        .time("2024-01-15T14:30:00Z"),
        json(
            r#"{"Ticker":"NASDAQ:AAPL","PRICE":189.42,"Direction":"SELL"}"#,
            "NASDAQ:AAPL",
        )
        .price("189.42")
        .short(),
        json(
            "{\"ticker\":\"BINANCE:ETHUSDT\",\"price\":3412.75}\n",
            "BINANCE:ETHUSDT",
        )
        .price("3412.75"),
        json(
            r#"{"tickerid":"BYBIT:BTCUSDT.P","signal":"Long Entry","timenow":"2024-01-15T14:30:00Z"}"#,
            "BYBIT:BTCUSDT.P",
        )
        .long()
        .kind("Long Entry")
        .time("2024-01-15T14:30:00Z"),
        json(
            r#"{"ticker":"CME_MINI:ES1!","action":"{{strategy.order.action}}","price":"{{close}}","interval":"{{interval}}"}"#,
            "CME_MINI:ES1!",
        ),
        json(
            r#"{"symbol":"EURUSD","exchange":"OANDA","price":"1,0842","direction":"venta"}"#,
            "OANDA:EURUSD",
        )
        .price("1.0842")
        .short(),
        json(
            r#"{"ticker":"BINANCE:BTCUSDT","timestamp":1705329000000}"#,
            "BINANCE:BTCUSDT",
        )
        .time("2024-01-15T14:30:00Z"),
        json(
            r#"{"ticker":"BINANCE:BTCUSDT","time":"1705329000","side":"COMPRA"}"#,
            "BINANCE:BTCUSDT",
        )
        .long()
        .time("2024-01-15T14:30:00Z"),
        json(r#"{"ticker":"BINANCE:BTCUSDT","direction":-1}"#, "BINANCE:BTCUSDT").short(),
        json(
            r#"{"Ticker": "NYSE:BRK.B", "Signal Type": "SELL", "Price": "$412.50"}"#,
            "NYSE:BRK.B",
        )
        .price("412.50")
        .short()
        .kind("SELL"),
        json(
            r#"{"symbol":"btcusdt","exchange":"binance","price":"67.890,50 USDT","market_position":"short"}"#,
            "BINANCE:BTCUSDT",
        )
        .price("67890.50")
        .short(),
        json(
            r#"{"message":"BINANCE:BTCUSDT crossed the upper band"}"#,
            "BINANCE:BTCUSDT",
        ),
        json(
            r#"{"symbol":"BTCUSDT","tickerid":"BINANCE:BTCUSDT","type":"alert","tf":"1D"}"#,
            "BINANCE:BTCUSDT",
        )
        .kind("alert")
        .interval("1D"),
        json(
            "\u{feff}{\"ticker\":\"BINANCE:BTCUSDT\",\"price\":1.5e-5}",
            "BINANCE:BTCUSDT",
        )
        .price("0.000015"),
    ]
}

/// Bodies that look like JSON but are not a JSON object: read as text.
fn almost_json_cases() -> Vec<Case> {
    vec![
        // A JSON string body is unwrapped and read as text.
        text(r#""BINANCE:BTCUSDT buy @ 67890""#, "BINANCE:BTCUSDT")
            .price("67890")
            .long(),
        // Not an object: read as text.
        text(r#"["BINANCE:BTCUSDT", "sell"]"#, "BINANCE:BTCUSDT").short(),
        // Almost JSON: TradingView does not quote placeholders for you.
        text(
            r#"{"ticker": BTCUSDT, "exchange": BINANCE, "price": 67890.5, "action": buy}"#,
            "BINANCE:BTCUSDT",
        )
        .price("67890.5")
        .long(),
        text(
            r#"{"ticker": "BINANCE:BTCUSDT", "price": {{close}}, "side": "sell"}"#,
            "BINANCE:BTCUSDT",
        )
        .short(),
    ]
}

/// `Label: value` lines, in English and Spanish.
fn labelled_cases() -> Vec<Case> {
    vec![
        text(
            "🚨 Señal: COMPRA\nSímbolo: BINANCE:BTCUSDT\nPrecio: $67,890.50\nTemporalidad: 1h",
            "BINANCE:BTCUSDT",
        )
        .price("67890.50")
        .long()
        .interval("1h")
        .kind("COMPRA"),
        text(
            "🚨 Señal: COMPRA\nSímbolo: BINANCE:ETHUSDT\nPrecio: $3,412.75\nTemporalidad: 1h\nIndicador: Momentum X",
            "BINANCE:ETHUSDT",
        )
        .price("3412.75")
        .long()
        .interval("1h")
        .indicator("Momentum X")
        .kind("COMPRA"),
        text(
            "Ticker: NASDAQ:AAPL\nPrice: 189.42\nDirection: short\nTimeframe: 15",
            "NASDAQ:AAPL",
        )
        .price("189.42")
        .short()
        .interval("15m"),
        text(
            "📈 Signal: SELL\nSymbol: OANDA:EURUSD\nPrice: 1,0842\nInterval: 5",
            "OANDA:EURUSD",
        )
        .price("1.0842")
        .short()
        .interval("5m")
        .kind("SELL"),
        text(
            "Indicador: Trend Pro\nSímbolo: BINANCE:BTCUSDT\nDirección: venta\nPrecio: 1.234,56 USDT",
            "BINANCE:BTCUSDT",
        )
        .price("1234.56")
        .short()
        .indicator("Trend Pro"),
        text(
            "Ticker: BINANCE:BTCUSDT\r\nPrice: 67890.5\r\nSignal: BUY\r\n",
            "BINANCE:BTCUSDT",
        )
        .price("67890.5")
        .long()
        .kind("BUY"),
        text(
            "SENAL: VENTA\nSIMBOLO: BINANCE:SOLUSDT\nPRECIO: 152,30\nDIRECCION: venta",
            "BINANCE:SOLUSDT",
        )
        .price("152.30")
        .short()
        .kind("VENTA"),
        text(
            "**Ticker:** BINANCE:BTCUSDT\n**Price:** $67,890.50\n**Signal:** Long",
            "BINANCE:BTCUSDT",
        )
        .price("67890.50")
        .long()
        .kind("Long"),
        text(
            "• Símbolo: BINANCE:BTCUSDT\n• Precio: 67890\n• Hora: 2024-01-15T14:30:00Z\n⏰ Temporalidad: 4H",
            "BINANCE:BTCUSDT",
        )
        .price("67890")
        .interval("4h")
        .time("2024-01-15T14:30:00Z"),
        text("Exchange: BINANCE\nSymbol: BTCUSDT\nSide: sell", "BINANCE:BTCUSDT").short(),
        text(
            "Ticker: BINANCE:BTCUSDT\nPrice: {{close}}\nSignal: {{strategy.order.action}}",
            "BINANCE:BTCUSDT",
        ),
        text("Símbolo: XETR:SAP\nPrecio: 1.234,56 €\nSeñal: compra", "XETR:SAP")
            .price("1234.56")
            .long()
            .kind("compra"),
        text("Par: BTC/USDT\nEntrada: 67.890,50\nOperación: Compra", "BTC/USDT")
            .price("67890.50")
            .long(),
        text("Ticker: BINANCE:BTCUSDT\nTime: 1705329000", "BINANCE:BTCUSDT")
            .time("2024-01-15T14:30:00Z"),
        text(
            "Senal: Venta\rSimbolo: BINANCE:ADAUSDT\rTemporalidad: 15 min",
            "BINANCE:ADAUSDT",
        )
        .short()
        .interval("15m")
        .kind("Venta"),
        text("ticker:binance:btcusdt\nprecio:67890", "BINANCE:BTCUSDT").price("67890"),
    ]
}

/// TradingView's default strategy order-fill messages.
fn order_fill_cases() -> Vec<Case> {
    vec![
        text(
            "Trend Pro Strategy: order sell @ 1 filled on CME_MINI:ES1!. New strategy position is -1",
            "CME_MINI:ES1!",
        )
        .short()
        .indicator("Trend Pro Strategy")
        .kind("sell"),
        text(
            "My Strategy: order buy @ 1 filled on BINANCE:BTCUSDT. New strategy position is 1",
            "BINANCE:BTCUSDT",
        )
        .long()
        .indicator("My Strategy")
        .kind("buy"),
        text(
            "MACD Strategy (12, 26, 9): order buy @ 0.5 filled on BTCUSDT. New strategy position is 0.5",
            "BTCUSDT",
        )
        .long()
        .indicator("MACD Strategy (12, 26, 9)")
        .kind("buy"),
        text(
            "sell @ 100 filled on NASDAQ:AAPL. New strategy position is -100",
            "NASDAQ:AAPL",
        )
        .short()
        .kind("sell"),
        text(
            "Supertrend: order Long Entry @ 2 filled on BYBIT:ETHUSDT.P. New strategy position is 2",
            "BYBIT:ETHUSDT.P",
        )
        .long()
        .indicator("Supertrend")
        .kind("Long Entry"),
        text(
            "Strat: order {{strategy.order.action}} @ 1 filled on CME:6E1!. New strategy position is 1",
            "CME:6E1!",
        )
        .indicator("Strat"),
    ]
}

/// TradingView's default indicator alert texts.
fn indicator_text_cases() -> Vec<Case> {
    vec![
        text("BINANCE:BTCUSDT, 1h Crossing 67,890.50", "BINANCE:BTCUSDT")
            .price("67890.50")
            .interval("1h")
            .kind("Crossing"),
        text(
            "BINANCE:BTCUSDT.P, 4h Crossing 68,120.00",
            "BINANCE:BTCUSDT.P",
        )
        .price("68120.00")
        .interval("4h")
        .kind("Crossing"),
        text("BTCUSDT Crossing Up 67890.5", "BTCUSDT")
            .price("67890.5")
            .kind("Crossing Up"),
        text("NASDAQ:AAPL, 1D Greater Than 190", "NASDAQ:AAPL")
            .price("190")
            .interval("1D")
            .kind("Greater Than"),
        text("FX:EURUSD, 15 Crossing Down 1.0842\n", "FX:EURUSD")
            .price("1.0842")
            .interval("15m")
            .kind("Crossing Down"),
    ]
}

/// Free text naming an `EXCHANGE:SYMBOL`.
fn free_text_cases() -> Vec<Case> {
    vec![
        text("BUY BINANCE:BTCUSDT at $67,890.50", "BINANCE:BTCUSDT")
            .price("67890.50")
            .long(),
        text(
            "Venta en BINANCE:ETHUSDT @ 3412.75 — RSI sobrecomprado",
            "BINANCE:ETHUSDT",
        )
        .price("3412.75")
        .short(),
        text("Alert on NYSE:BRK.B price 412.5, sell now", "NYSE:BRK.B")
            .price("412.5")
            .short(),
        text("CME_MINI:NQ1! short 18250", "CME_MINI:NQ1!").short(),
        text("COINBASE:BTCUSD compra €61.234,50", "COINBASE:BTCUSD")
            .price("61234.50")
            .long(),
        text("Exit long BINANCE:BTCUSDT now", "BINANCE:BTCUSDT"),
        text("precio 67890 en BINANCE:BTCUSDT", "BINANCE:BTCUSDT").price("67890"),
        text(
            "nueva señal de compra 🚀 en BITSTAMP:BTCUSD, mira https://www.tradingview.com/chart/aBcD1234/",
            "BITSTAMP:BTCUSD",
        )
        .long(),
        // A symbol with letters beats an all-digit one; an all-digit one
        // alone is still a ticker (Hong Kong, Tokyo and Seoul listings).
        text("RSI:70 alcanzado en BINANCE:BTCUSDT", "BINANCE:BTCUSDT"),
        text("Compra HKEX:700", "HKEX:700").long(),
    ]
}

/// Every case, one table per kind of message.
fn cases() -> Vec<Case> {
    [
        json_cases(),
        almost_json_cases(),
        labelled_cases(),
        order_fill_cases(),
        indicator_text_cases(),
        free_text_cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[test]
fn real_world_alerts() {
    let cases = cases();
    assert!(
        cases.len() >= 40,
        "keep the table broad: {} cases",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let signal = match Signal::parse(case.body.as_bytes()) {
            Ok(signal) => signal,
            Err(error) => {
                failures.push(format!("{:?}: {error}", case.body));
                continue;
            }
        };
        let got = (
            signal.ticker().to_string(),
            signal.price().map(|p| p.to_string()),
            signal.direction(),
            signal.interval().map(|i| i.to_string()),
            signal.indicator().map(str::to_owned),
            signal.signal_type().map(str::to_owned),
            signal
                .time()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            signal.format(),
        );
        let want = (
            case.ticker.to_owned(),
            case.price.map(str::to_owned),
            case.direction,
            case.interval.map(str::to_owned),
            case.indicator.map(str::to_owned),
            case.signal_type.map(str::to_owned),
            case.time.map(str::to_owned),
            case.format,
        );
        if got != want {
            failures.push(format!("{:?}\n   got {got:?}\n  want {want:?}", case.body));
        }
        assert_eq!(
            signal.raw_message(),
            case.body,
            "raw message kept untouched"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn exchange_and_symbol_are_split() {
    let signal = Signal::parse(b"Symbol: CME_MINI:ES1!").unwrap();
    assert_eq!(signal.ticker().exchange(), Some("CME_MINI"));
    assert_eq!(signal.ticker().symbol(), "ES1!");
    let bare = Signal::parse(br#"{"ticker":"NQ1!"}"#).unwrap();
    assert_eq!(bare.ticker().exchange(), None);
    assert_eq!(bare.ticker().symbol(), "NQ1!");
}

#[test]
fn rejected_bodies() {
    let cases: &[(&[u8], ParseError)] = &[
        (b"", ParseError::Empty),
        (b"  \r\n\t ", ParseError::Empty),
        ("\u{feff}\n".as_bytes(), ParseError::Empty),
        (
            b"Ticker: BINANCE:BTCUSDT\0",
            ParseError::NulByte { offset: 23 },
        ),
        (b"buy now!", ParseError::NoTicker),
        (br#"{"price": 1, "side": "buy"}"#, ParseError::NoTicker),
        (
            b"Ticker: {{ticker}}\nPrice: {{close}}",
            ParseError::NoTicker,
        ),
        (b"{{exchange}}:{{ticker}} buy", ParseError::NoTicker),
        (b"binance:btcusdt buy", ParseError::NoTicker),
        (b"Hora: 14:30", ParseError::NoTicker),
        (b"[1, 2, 3]", ParseError::NoTicker),
        (b"null", ParseError::NoTicker),
    ];
    for (body, expected) in cases {
        assert_eq!(
            Signal::parse(body).as_ref().err(),
            Some(expected),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    assert!(matches!(
        Signal::parse(&[b'B', 0xff, 0xfe]),
        Err(ParseError::NotUtf8(_))
    ));
}

#[test]
fn no_ticker_says_what_was_expected() {
    let message = ParseError::NoTicker.to_string();
    assert!(message.contains("\"ticker\""), "{message}");
    assert!(message.contains("Ticker: BINANCE:BTCUSDT"), "{message}");
    assert!(message.contains("EXCHANGE:SYMBOL"), "{message}");
}

#[test]
fn unknown_json_keys_and_unreadable_values_are_kept() {
    let signal = Signal::parse(
        br#"{"ticker":"BINANCE:BTCUSDT","price":"n/a","rsi":28.5,"meta":{"bar":1,"note":"a\u0000b"},"Comment":"first","comment":"second"}"#,
    )
    .unwrap();
    assert_eq!(signal.price(), None);
    assert_eq!(
        serde_json::Value::Object(signal.extra().clone()),
        json!({
            "price": "n/a",
            "rsi": 28.5,
            "meta": { "bar": 1, "note": "ab" },
            "Comment": "first",
            "comment": "second",
        })
    );
}

#[test]
fn labelled_extras_and_order_fill_details_are_kept() {
    let labelled =
        Signal::parse("Símbolo: BINANCE:BTCUSDT\nCambio: +2.5%\nRSI (14): 28".as_bytes()).unwrap();
    assert_eq!(
        serde_json::Value::Object(labelled.extra().clone()),
        json!({ "change": "+2.5%", "RSI (14)": "28" })
    );
    let fill =
        Signal::parse(b"S: order sell @ 2 filled on BINANCE:BTCUSDT. New strategy position is -2")
            .unwrap();
    assert_eq!(
        serde_json::Value::Object(fill.extra().clone()),
        json!({ "contracts": "2", "position_size": "-2" })
    );
    // Prose is not a labelled message: its colons make no extras.
    let prose = Signal::parse(b"Heads up: BINANCE:BTCUSDT looks strong").unwrap();
    assert!(prose.extra().is_empty(), "{:?}", prose.extra());
}

#[test]
fn chart_id_from_the_body() {
    let signal = Signal::parse(br#"{"ticker":"BINANCE:BTCUSDT","chart":"aBcD1234"}"#).unwrap();
    assert_eq!(
        signal.chart_id().map(ingest::signal::ChartId::as_str),
        Some("aBcD1234")
    );
    let from_url = Signal::parse(
        b"Ticker: BINANCE:BTCUSDT\nChart: https://www.tradingview.com/chart/xY12zW34/",
    )
    .unwrap();
    assert_eq!(
        from_url.chart_id().map(ingest::signal::ChartId::as_str),
        Some("xY12zW34")
    );
}

#[test]
fn prices_are_exact_decimals() {
    let signal = Signal::parse(br#"{"ticker":"BINANCE:BTCUSDT","price":67890.50}"#).unwrap();
    let price = signal.price().unwrap().as_decimal();
    assert_eq!(price.to_string(), "67890.50");
    assert_eq!(price.scale(), 2);
    let tiny = Signal::parse(br#"{"ticker":"BINANCE:PEPEUSDT","price":"0.000001234"}"#).unwrap();
    assert_eq!(tiny.price().unwrap().to_string(), "0.000001234");
}

#[test]
fn long_free_text_fields_are_cut_to_the_column_limits() {
    let long_name = "x".repeat(500);
    let body = format!(
        r#"{{"ticker":"BINANCE:BTCUSDT","indicator":"{long_name}","signal":"{long_name}"}}"#
    );
    let signal = Signal::parse(body.as_bytes()).unwrap();
    assert_eq!(signal.indicator().unwrap().chars().count(), 200);
    assert_eq!(signal.signal_type().unwrap().chars().count(), 100);
}

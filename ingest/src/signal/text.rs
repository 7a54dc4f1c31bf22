//! Reading a body that is not a JSON object: labelled lines, TradingView's
//! default messages, and free text.
//!
//! Readers run in this order, each filling only what is still missing:
//!
//! 1. TradingView's strategy order-fill message,
//!    `<strategy>: order buy @ 1 filled on BINANCE:BTCUSDT. New strategy
//!    position is 1` (with or without `order`, exchange, or strategy name):
//!    direction from the action, ticker after `filled on`, the strategy name
//!    as indicator. `@ 1` is the order size, never a price.
//! 2. TradingView's indicator alert text on the first line,
//!    `BINANCE:BTCUSDT, 1h Crossing 67,890.50` or `BTCUSDT Crossing 67890`:
//!    ticker, interval, the condition as signal type, the level as price.
//! 3. Labelled lines, `Label: value`, one per line (LF, CRLF or CR), English
//!    or Spanish labels (see [`Field::from_label`]), accents and case
//!    optional, emoji, bullets or markdown around the label allowed.
//! 4. Free text: the first `EXCHANGE:SYMBOL` anywhere, a price after `$`,
//!    `€`, `£`, `@` or the word price/precio/close, a buy/sell word.
//!
//! A body that starts with `{` but is not valid JSON (TradingView does not
//! quote `{{ticker}}` for you, so `{"ticker": {{ticker}}}` arrives as
//! `{"ticker": BTCUSDT}`) is read as loose `key: value` pairs with the JSON
//! aliases instead of step 3.

use super::direction;
use super::draft::{Draft, Field, MAX_SIGNAL_TYPE_CHARS, Offered};
use super::interval::Interval;
use super::price::{Price, number_at};
use super::ticker::{Ticker, is_exchange, is_exchange_byte, is_symbol_byte, symbol_prefix_len};
use super::words::clean_text;

/// Fills `draft` from a text body.
pub(crate) fn fill(text: &str, draft: &mut Draft) {
    let strategy = strategy_fill(text, draft);
    if !strategy {
        indicator_alert(text, draft);
    }
    if text.trim_start().starts_with('{') {
        loose_pairs(text, draft);
    } else {
        labelled_lines(text, draft, strategy);
    }
    fill_gaps(text, draft, !strategy);
}

/// Step 4 alone: what free text can add to a draft.
pub(crate) fn fill_gaps(text: &str, draft: &mut Draft, look_for_price: bool) {
    if draft.ticker.is_none() {
        draft.ticker = find_exchange_symbol(text).map(|(ticker, _)| ticker);
    }
    if draft.price.is_none() && look_for_price {
        draft.price = find_price(text);
    }
    if draft.direction.is_none() {
        draft.direction = direction::from_text(text);
    }
}

// ---------------------------------------------------------------------------
// 1. Strategy order fills

const FILLED_ON: &str = " filled on ";
const NEW_POSITION: &str = "new strategy position is ";

fn strategy_fill(text: &str, draft: &mut Draft) -> bool {
    let lower = text.to_ascii_lowercase();
    let Some(at) = lower.find(FILLED_ON) else {
        return false;
    };
    let before = &text[..at];
    let Some(at_sign) = before.rfind('@') else {
        return false;
    };
    let Some(ticker) = text[at + FILLED_ON.len()..]
        .split_whitespace()
        .next()
        .and_then(ticker_token)
    else {
        return false;
    };
    let size = before[at_sign + 1..].trim();
    let head = before[..at_sign].trim_end();
    let head_lower = &lower[..head.len()];
    let (name, action) = match head_lower.rfind("order ") {
        Some(i) if i == 0 || !head[..i].ends_with(|c: char| c.is_alphanumeric()) => {
            (&head[..i], &head[i + "order ".len()..])
        }
        _ => {
            // After the last whitespace character (which may be wider
            // than one byte, e.g. a no-break space).
            let i = head
                .char_indices()
                .rfind(|&(_, c)| c.is_whitespace())
                .map_or(0, |(i, c)| i + c.len_utf8());
            (&head[..i], &head[i..])
        }
    };
    let action = action.trim();
    // Drop the line prefix (emoji, bullets) and the colon after the name.
    let name = name
        .rsplit(['\n', '\r'])
        .next()
        .unwrap_or_default()
        .trim()
        .trim_end_matches(':')
        .trim();

    draft.ticker = Some(ticker);
    if draft.direction.is_none() {
        draft.direction = direction::from_field(action);
    }
    if draft.signal_type.is_none() {
        draft.signal_type = clean_text(action, MAX_SIGNAL_TYPE_CHARS);
    }
    if !name.is_empty() {
        draft.offer(Field::Indicator, "strategy", Offered::Text(name));
    }
    draft.keep("contracts", size);
    if let Some(p) = lower.find(NEW_POSITION) {
        let position = text[p + NEW_POSITION.len()..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_end_matches(['.', ',']);
        draft.keep("position_size", position);
    }
    true
}

/// A ticker written as one token in running text (`BINANCE:BTCUSDT.`,
/// `CME_MINI:ES1!,`, `BTCUSDT`): sentence punctuation after it is dropped.
fn ticker_token(token: &str) -> Option<Ticker> {
    let token = token.to_ascii_uppercase();
    let (exchange, symbol) = match token.split_once(':') {
        Some((exchange, symbol)) => (Some(exchange), symbol),
        None => (None, token.as_str()),
    };
    let len = symbol_prefix_len(symbol.as_bytes());
    let tail_is_punctuation = symbol[len..]
        .chars()
        .all(|c| matches!(c, '.' | ',' | ';' | ')' | '!'));
    if !tail_is_punctuation {
        return None;
    }
    Ticker::new(exchange, &symbol[..len]).ok()
}

// ---------------------------------------------------------------------------
// 2. Indicator alert text

/// How TradingView words its built-in alert conditions.
const CONDITIONS: &[&str] = &[
    "crossing",
    "greater than",
    "less than",
    "entering channel",
    "exiting channel",
    "inside channel",
    "outside channel",
    "moving up",
    "moving down",
];

fn indicator_alert(text: &str, draft: &mut Draft) -> bool {
    let Some(line) = text.lines().map(str::trim).find(|line| !line.is_empty()) else {
        return false;
    };
    let token_end = line
        .find(|c: char| c.is_whitespace() || c == ',')
        .unwrap_or(line.len());
    let token = &line[..token_end];
    // TradingView prints tickers upper-case; a lower-case first word is prose.
    if token.bytes().any(|b| b.is_ascii_lowercase()) {
        return false;
    }
    let Ok(ticker) = Ticker::parse(token) else {
        return false;
    };
    let mut rest = line[token_end..].trim_start();
    let mut interval = None;
    if let Some(after_comma) = rest.strip_prefix(',') {
        let after_comma = after_comma.trim_start();
        let end = after_comma
            .find(char::is_whitespace)
            .unwrap_or(after_comma.len());
        if let Ok(parsed) = Interval::parse(&after_comma[..end]) {
            interval = Some(parsed);
            rest = after_comma[end..].trim_start();
        }
    }
    let lower = rest.to_ascii_lowercase();
    let condition = CONDITIONS.iter().any(|c| lower.starts_with(c));
    let qualifies = condition || (ticker.exchange().is_some() && interval.is_some());
    if !qualifies {
        return false;
    }

    draft.ticker = Some(ticker);
    if draft.interval.is_none() {
        draft.interval = interval;
    }
    // A trailing number is the level that was crossed: the price then.
    let (kind, level) = match rest.rsplit_once(char::is_whitespace) {
        Some((kind, last)) if last.starts_with(|c: char| c.is_ascii_digit()) => {
            (kind, number_at(last).and_then(|n| Price::new(n).ok()))
        }
        _ if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            ("", number_at(rest).and_then(|n| Price::new(n).ok()))
        }
        _ => (rest, None),
    };
    if draft.price.is_none() {
        draft.price = level;
    }
    if draft.signal_type.is_none() {
        draft.signal_type = clean_text(kind, MAX_SIGNAL_TYPE_CHARS);
    }
    true
}

// ---------------------------------------------------------------------------
// 3. Labelled lines and loose pairs

fn labelled_lines(text: &str, draft: &mut Draft, skip_order_fill: bool) {
    let mut known = 0_usize;
    let mut unknown = Vec::new();
    for line in text.split(['\n', '\r']) {
        if skip_order_fill && line.to_ascii_lowercase().contains(FILLED_ON) {
            continue;
        }
        let Some(label) = split_label(line) else {
            continue;
        };
        match Field::from_label(label.name) {
            Some(field) if label.is_label() => {
                known += 1;
                draft.offer(field, label.name, Offered::Text(label.value));
            }
            None if label.spaced && plausible_label(label.name) => {
                unknown.push((label.name, label.value));
            }
            Some(_) | None => {}
        }
    }
    // Unknown labels are worth keeping only in a message that is labelled.
    if known > 0 {
        for (name, value) in unknown {
            draft.keep(name, value);
        }
    }
}

/// A `Label: value` line taken apart.
struct Label<'a> {
    name: &'a str,
    value: &'a str,
    /// Whether whitespace follows the colon, as in prose labels (and not in
    /// `BINANCE:BTCUSDT` or `https://`).
    spaced: bool,
}

impl Label<'_> {
    /// Whether a known label word really is a label here. `TF:BTCUSDT` with
    /// no space is TradingView's `EXCHANGE:SYMBOL` notation, which wins;
    /// `TF: 1h`, `Tf:1h` and `TICKER:BINANCE:BTCUSDT` are labels.
    fn is_label(&self) -> bool {
        self.spaced || !is_exchange(self.name) || self.value.contains(':')
    }
}

fn split_label(line: &str) -> Option<Label<'_>> {
    let (sep, sep_char) = line.char_indices().find(|&(_, c)| c == ':' || c == '：')?;
    let name = line[..sep]
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .trim_end_matches(|c: char| c.is_whitespace() || matches!(c, '*' | '_'));
    if name.is_empty() || name.chars().count() > 40 {
        return None;
    }
    let rest = &line[sep + sep_char.len_utf8()..];
    let value = rest
        .trim()
        .trim_matches(|c: char| matches!(c, '*' | '_' | '`'))
        .trim();
    Some(Label {
        name,
        value,
        spaced: rest.is_empty() || rest.starts_with(char::is_whitespace),
    })
}

/// Short, word-like labels only (`Cambio`, `RSI (14)`), not sentences.
fn plausible_label(name: &str) -> bool {
    name.len() <= 32
        && name.split_whitespace().count() <= 4
        && name.starts_with(char::is_alphabetic)
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '(' | ')' | '.' | '/'))
}

/// Reads `key: value` pairs from almost-JSON: split on commas, newlines and
/// braces outside double quotes, quotes removed.
fn loose_pairs(text: &str, draft: &mut Draft) {
    for piece in split_outside_quotes(text) {
        let Some((key, value)) = split_once_outside_quotes(piece, ':') else {
            continue;
        };
        let key = unquote(key);
        let value = unquote(value);
        if key.is_empty() {
            continue;
        }
        match Field::from_json_key(key) {
            Some(field) => {
                draft.offer(field, key, Offered::Text(value));
            }
            None => draft.keep(key, value),
        }
    }
}

fn split_outside_quotes(text: &str) -> impl Iterator<Item = &str> {
    let mut in_quotes = false;
    let mut escaped = false;
    text.split(move |c: char| {
        if escaped {
            escaped = false;
            return false;
        }
        match c {
            '\\' => {
                escaped = true;
                false
            }
            '"' => {
                in_quotes = !in_quotes;
                false
            }
            ',' | '\n' | '\r' | '{' | '}' => !in_quotes,
            _ => false,
        }
    })
}

fn split_once_outside_quotes(text: &str, separator: char) -> Option<(&str, &str)> {
    let mut in_quotes = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c == separator && !in_quotes => return Some((&text[..i], &text[i + 1..])),
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .trim()
}

// ---------------------------------------------------------------------------
// 4. Free text

/// Finds the first `EXCHANGE:SYMBOL` in `text`, returning it and the byte
/// offset just past it. Both parts must be upper-case as TradingView writes
/// them, start at a word boundary, and be followed by a boundary. A symbol
/// with a letter is preferred over an all-digit one (`RSI:70` is more often
/// an indicator reading than a Hong Kong listing), which is taken only when
/// nothing better appears.
pub(crate) fn find_exchange_symbol(text: &str) -> Option<(Ticker, usize)> {
    let bytes = text.as_bytes();
    let mut numeric = None;
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || is_boundary(bytes[i - 1]);
        if !(bytes[i].is_ascii_uppercase() && starts_word) {
            i += 1;
            continue;
        }
        let exchange_len = bytes[i..]
            .iter()
            .take_while(|&&b| is_exchange_byte(b))
            .count();
        let colon = i + exchange_len;
        i = colon.max(i + 1);
        if bytes.get(colon) != Some(&b':') {
            continue;
        }
        let exchange = &text[colon - exchange_len..colon];
        let symbol_start = colon + 1;
        let run = bytes[symbol_start..]
            .iter()
            .take_while(|&&b| is_symbol_byte(b))
            .count();
        let len = symbol_prefix_len(&bytes[symbol_start..symbol_start + run]);
        let end = symbol_start + len;
        let followed_ok = match bytes.get(symbol_start + run) {
            None => true,
            Some(&b) => !(b.is_ascii_alphanumeric() || b == b':'),
        };
        if len == 0 || !followed_ok || !is_exchange(exchange) {
            continue;
        }
        let Ok(ticker) = Ticker::new(Some(exchange), &text[symbol_start..end]) else {
            continue;
        };
        if ticker.symbol().bytes().any(|b| b.is_ascii_alphabetic()) {
            return Some((ticker, end));
        }
        numeric.get_or_insert((ticker, end));
    }
    numeric
}

/// Characters that may directly precede an exchange name. Letters, digits
/// and the characters of URLs, paths and e-mail addresses may not.
fn is_boundary(b: u8) -> bool {
    !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'/' | b'-' | b'@'))
}

/// Words after which a number is a price.
const PRICE_WORDS: &[&str] = &["price", "precio", "close"];

/// The first number after `$`, `€`, `£`, `@` or a price word.
fn find_price(text: &str) -> Option<Price> {
    let lower = text.to_ascii_lowercase();
    for (i, c) in text.char_indices() {
        let after = match c {
            '$' | '€' | '£' | '@' => i + c.len_utf8(),
            'p' | 'P' | 'c' | 'C' => {
                let starts_word = !text[..i].ends_with(|c: char| c.is_alphanumeric());
                let Some(word) = PRICE_WORDS.iter().find(|w| lower[i..].starts_with(**w)) else {
                    continue;
                };
                let end = i + word.len();
                if !starts_word || text[end..].starts_with(|c: char| c.is_alphanumeric()) {
                    continue;
                }
                end
            }
            _ => continue,
        };
        let rest = text[after..]
            .trim_start_matches([' ', '\t', ':', '=', '\u{a0}'])
            .trim_start_matches(['$', '€', '£'])
            .trim_start();
        if rest.starts_with(|c: char| c.is_ascii_digit())
            && let Some(price) = number_at(rest).and_then(|n| Price::new(n).ok())
        {
            return Some(price);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::find_exchange_symbol;

    fn found(text: &str) -> Option<String> {
        find_exchange_symbol(text).map(|(ticker, _)| ticker.to_string())
    }

    #[test]
    fn exchange_symbol_in_prose() {
        assert_eq!(
            found("Buy BINANCE:BTCUSDT now").as_deref(),
            Some("BINANCE:BTCUSDT")
        );
        assert_eq!(
            found("filled on CME_MINI:ES1!. New").as_deref(),
            Some("CME_MINI:ES1!")
        );
        assert_eq!(found("(NYSE:BRK.B)").as_deref(), Some("NYSE:BRK.B"));
        assert_eq!(found("RSI:70 on HKEX:700").as_deref(), Some("RSI:70"));
        assert_eq!(
            found("RSI:70 then BYBIT:BTCUSDT.P").as_deref(),
            Some("BYBIT:BTCUSDT.P")
        );
    }

    #[test]
    fn not_tickers() {
        for text in [
            "at 14:30:00",
            "see https://www.tradingview.com/x",
            "2024-01-15T14:30:00Z",
            "Note: nothing here",
            "mail me@HOST:BAD",
            "binance:btcusdt",
            "ABC:DEFghi",
        ] {
            assert_eq!(found(text), None, "{text}");
        }
    }
}

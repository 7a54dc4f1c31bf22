//! [`Price`] and the reading of numbers as people and TradingView write them.
//!
//! Prices arrive as JSON numbers (`67890.5`), as TradingView's `{{close}}`
//! (`67890.5`), and as humans format them: `$67,890.50`, `67.890,50 €`,
//! `1,0842`, `1.234,56 USDT`. They are kept as exact decimals, never floats:
//! `67890.50` stays `67890.50`.
//!
//! Which mark is the decimal separator:
//! - both `.` and `,` present: the last one is the decimal mark
//!   (`67,890.50`, `1.234,56`);
//! - only `.`: one dot is a decimal mark (`1.234` is one point two three
//!   four, as `{{close}}` would print it); several dots are thousands
//!   groups (`1.234.567`);
//! - only `,`: several commas are thousands groups; a single comma is a
//!   thousands separator when exactly three digits follow and one to three
//!   non-zero-led digits precede it (`67,890`), else a decimal comma
//!   (`1,0842`, `0,123`, `67,89`).
//!
//! Thousands groups must have three digits, so `1,23,4` is not a number.
//! Apostrophes and non-breaking spaces are thousands separators (`1'234.56`,
//! `67 890,50` typed with a no-break space).

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

/// The largest price accepted, exclusive: the `price` column's check.
const PRICE_CEILING: Decimal = Decimal::from_parts(0xA4C6_8000, 0x0003_8D7E, 0, false, 0);

/// Currency signs that may stand between a minus sign and the digits.
const CURRENCY_SIGNS: &[char] = &['$', '€', '£', '¥', '₿'];

/// A non-negative exact decimal price below 10^15.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Price(Decimal);

/// Why a value is not a price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// No number could be read.
    #[error("not a number")]
    NotANumber,
    /// A number, but negative.
    #[error("price must not be negative")]
    Negative,
    /// A number, but 10^15 or more.
    #[error("price must be below 10^15")]
    TooLarge,
}

impl Price {
    /// Wraps a decimal, checking the bounds.
    pub fn new(value: Decimal) -> Result<Self, PriceError> {
        if value.is_sign_negative() && !value.is_zero() {
            Err(PriceError::Negative)
        } else if value >= PRICE_CEILING {
            Err(PriceError::TooLarge)
        } else {
            Ok(Self(value))
        }
    }

    /// Reads the first number in `value`, ignoring currency signs and codes
    /// around it (`$67,890.50`, `67890.5 USDT`, `€ 1.234,56`) and anything
    /// after it (`67890.50 (+2.1%)`).
    pub fn parse(value: &str) -> Result<Self, PriceError> {
        let start = value
            .find(|c: char| c.is_ascii_digit())
            .ok_or(PriceError::NotANumber)?;
        // A minus sign directly before the number, perhaps with a currency
        // sign or spaces between (`-5`, `-$5`, `- 5`), makes it negative.
        let negative = value[..start]
            .trim_end_matches(|c: char| c.is_whitespace() || CURRENCY_SIGNS.contains(&c))
            .ends_with(['-', '\u{2212}']);
        let number = number_at(&value[start..]).ok_or(PriceError::NotANumber)?;
        if negative && !number.is_zero() {
            return Err(PriceError::Negative);
        }
        Self::new(number)
    }

    /// A JSON number literal exactly as written (`67890.50`, `1.5e-5`).
    pub(crate) fn from_json_number(literal: &str) -> Result<Self, PriceError> {
        let value = if literal.contains(['e', 'E']) {
            Decimal::from_scientific(literal)
        } else {
            Decimal::from_str_exact(literal)
        }
        .map_err(|_| PriceError::NotANumber)?;
        Self::new(value)
    }

    /// The exact value.
    pub fn as_decimal(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Price {
    type Err = PriceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Longest number token considered; anything longer is not a price.
const MAX_TOKEN_LEN: usize = 64;

/// Reads the number at the very start of `s` (which starts with a digit):
/// digits with `.` `,` `'` and no-break spaces, trailing punctuation (a
/// sentence's full stop) dropped.
pub(crate) fn number_at(s: &str) -> Option<Decimal> {
    let end = s
        .char_indices()
        .find(|&(_, c)| {
            !(c.is_ascii_digit() || matches!(c, '.' | ',' | '\'' | '\u{a0}' | '\u{202f}'))
        })
        .map_or(s.len(), |(i, _)| i);
    let token = s[..end].trim_end_matches(|c: char| !c.is_ascii_digit());
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return None;
    }
    parse_number(token)
}

/// Parses one number token made only of digits and separators, starting and
/// ending with a digit, by the rules in the module docs.
pub(crate) fn parse_number(token: &str) -> Option<Decimal> {
    let token: String = token
        .chars()
        .filter(|c| !matches!(c, '\'' | '\u{a0}' | '\u{202f}'))
        .collect();
    let dots = token.matches('.').count();
    let commas = token.matches(',').count();
    let decimal_mark = match (dots, commas) {
        (1, 0) => Some('.'),
        (0, 1) if !is_thousands_comma(&token) => Some(','),
        (_, 0) | (0, _) => None,
        _ => {
            let last_dot = token.rfind('.');
            let last_comma = token.rfind(',');
            Some(if last_dot > last_comma { '.' } else { ',' })
        }
    };
    let (integer, fraction) = match decimal_mark {
        Some(mark) => {
            let at = token.rfind(mark)?;
            (&token[..at], &token[at + 1..])
        }
        None => (token.as_str(), ""),
    };
    if fraction.contains(['.', ',']) || (decimal_mark.is_some() && fraction.is_empty()) {
        return None;
    }
    let digits = ungroup(integer)?;
    let literal = if fraction.is_empty() {
        digits
    } else {
        format!("{digits}.{fraction}")
    };
    Decimal::from_str_exact(&literal).ok()
}

/// A lone comma with three digits after it and a 1..=3 digit, non-zero-led
/// group before it reads as thousands (`67,890`).
fn is_thousands_comma(token: &str) -> bool {
    let Some((before, after)) = token.split_once(',') else {
        return false;
    };
    after.len() == 3 && (1..=3).contains(&before.len()) && !before.starts_with('0')
}

/// Removes thousands separators from the integer part, checking that every
/// group after the first has exactly three digits.
fn ungroup(integer: &str) -> Option<String> {
    let mut groups = integer.split(['.', ',']);
    let first = groups.next()?;
    if first.is_empty() || first.len() > 3 && integer.contains(['.', ',']) {
        return None;
    }
    let mut digits = first.to_owned();
    for group in groups {
        if group.len() != 3 {
            return None;
        }
        digits.push_str(group);
    }
    digits.bytes().all(|b| b.is_ascii_digit()).then_some(digits)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use rust_decimal::Decimal;

    use super::{PRICE_CEILING, Price, PriceError, parse_number};

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn ceiling_is_ten_to_the_fifteenth() {
        assert_eq!(PRICE_CEILING, dec("1000000000000000"));
    }

    #[test]
    fn number_formats() {
        for (token, expected) in [
            ("67890.5", "67890.5"),
            ("67890.50", "67890.50"),
            ("67,890.50", "67890.50"),
            ("1.234,56", "1234.56"),
            ("1,0842", "1.0842"),
            ("67,890", "67890"),
            ("0,123", "0.123"),
            ("67,89", "67.89"),
            ("1.234", "1.234"),
            ("1.234.567", "1234567"),
            ("1,234,567.5", "1234567.5"),
            ("1.234.567,5", "1234567.5"),
            ("1'234.56", "1234.56"),
            ("67\u{a0}890,50", "67890.50"),
            ("0.00001234", "0.00001234"),
            ("42", "42"),
        ] {
            assert_eq!(parse_number(token), Some(dec(expected)), "{token}");
        }
    }

    #[test]
    fn malformed_numbers() {
        for token in [
            "1,23,4",
            "1.23.4",
            "1234,567.8",
            "1,2.3,4",
            "99999999999999999999999999999999",
        ] {
            assert_eq!(parse_number(token), None, "{token}");
        }
    }

    #[test]
    fn prices_with_currency_and_context() {
        for (value, expected) in [
            ("$67,890.50", "67890.50"),
            ("67890.5 USDT", "67890.5"),
            ("€ 1.234,56", "1234.56"),
            ("1.234,56 EUR", "1234.56"),
            ("USD 189.42", "189.42"),
            ("67890.50 (+2.1%)", "67890.50"),
            ("at 3,412.75.", "3412.75"),
        ] {
            assert_eq!(
                Price::parse(value).map(Price::as_decimal),
                Ok(dec(expected)),
                "{value}"
            );
        }
    }

    #[test]
    fn bounds() {
        assert_eq!(Price::parse("-5"), Err(PriceError::Negative));
        assert_eq!(Price::parse("$-5"), Err(PriceError::Negative));
        assert_eq!(Price::parse("- 5"), Err(PriceError::Negative));
        assert_eq!(Price::parse("1000000000000000"), Err(PriceError::TooLarge));
        assert_eq!(Price::parse("n/a"), Err(PriceError::NotANumber));
        assert_eq!(Price::parse("0").map(Price::as_decimal), Ok(Decimal::ZERO));
        assert_eq!(
            Price::from_json_number("1.5e-5").map(Price::as_decimal),
            Ok(dec("0.000015"))
        );
        assert_eq!(
            Price::from_json_number("67890.50").map(|p| p.to_string()),
            Ok("67890.50".to_owned())
        );
    }
}

//! [`ChartId`]: which saved TradingView chart layout to screenshot.
//!
//! A layout's URL is `https://www.tradingview.com/chart/{id}/`; the id is a
//! short alphanumeric string (8 characters today). Traders pass it as
//! `?chart={id}` on the webhook URL or as a `chart` field in the body, and
//! sometimes paste the whole chart URL instead: both are accepted.

use std::fmt;
use std::str::FromStr;

/// Longest id accepted; matches the `chart_id` column's check.
pub const MAX_CHART_ID_LEN: usize = 32;

/// A TradingView chart layout id: 1..=32 ASCII letters and digits, case kept
/// (ids are case-sensitive).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChartId(String);

/// Why a string is not a chart id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "chart id must be 1 to {MAX_CHART_ID_LEN} letters and digits, the part after /chart/ in a TradingView chart URL"
)]
pub struct ChartIdError;

impl ChartId {
    /// Parses a bare id (`aBcD1234`) or a TradingView chart URL
    /// (`https://www.tradingview.com/chart/aBcD1234/?symbol=...`).
    pub fn parse(s: &str) -> Result<Self, ChartIdError> {
        let s = s.trim();
        let id = match s.find("/chart/") {
            Some(at) => {
                let rest = &s[at + "/chart/".len()..];
                rest.split(['/', '?', '#']).next().unwrap_or_default()
            }
            None => s,
        };
        if (1..=MAX_CHART_ID_LEN).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            Ok(Self(id.to_owned()))
        } else {
            Err(ChartIdError)
        }
    }

    /// The id as stored and as used in the chart URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChartId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ChartId {
    type Err = ChartIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::ChartId;

    #[test]
    fn bare_ids_and_urls() {
        assert_eq!(ChartId::parse("aBcD1234").unwrap().as_str(), "aBcD1234");
        assert_eq!(
            ChartId::parse("https://www.tradingview.com/chart/xY12zW34/?symbol=BINANCE%3ABTCUSDT")
                .unwrap()
                .as_str(),
            "xY12zW34"
        );
        assert_eq!(
            ChartId::parse("https://es.tradingview.com/chart/Q1w2E3r4")
                .unwrap()
                .as_str(),
            "Q1w2E3r4"
        );
    }

    #[test]
    fn rejects_anything_else() {
        for bad in [
            "",
            "abc-123",
            "a b",
            "{{chart}}",
            &"a".repeat(33),
            "https://example.com/x",
        ] {
            assert!(ChartId::parse(bad).is_err(), "{bad:?}");
        }
    }
}

//! When the alert says it fired.
//!
//! TradingView's `{{time}}` and `{{timenow}}` print RFC 3339 in UTC
//! (`2024-01-15T14:30:00Z`); scripts also send unix seconds or milliseconds,
//! and people write `2024-01-15 14:30:00`. A time without a zone is UTC, the
//! zone TradingView uses. A time of day alone (`Hora: 14:30`) is not a
//! timestamp and is left out.

use chrono::{DateTime, NaiveDateTime, Utc};

/// Unix times at or above this many seconds are read as milliseconds
/// (10^11 s is the year 5138; 10^11 ms is March 1973).
const MILLIS_THRESHOLD: u64 = 100_000_000_000;

/// Reads a timestamp in any of the forms above.
pub(crate) fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if value.is_empty() || value.len() > 64 {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return from_unix(value);
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(value) {
        return Some(time.with_timezone(&Utc));
    }
    if let Ok(time) = DateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(time.with_timezone(&Utc));
    }
    let naive = value
        .strip_suffix(" UTC")
        .or_else(|| value.strip_suffix('Z'))
        .unwrap_or(value);
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(naive, format).ok())
    .map(|naive| naive.and_utc())
}

/// Unix seconds or milliseconds, optionally with a fraction.
pub(crate) fn from_unix(value: &str) -> Option<DateTime<Utc>> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if whole.is_empty() || whole.len() > 16 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let millis = if whole >= MILLIS_THRESHOLD {
        whole
    } else {
        let fraction_millis: u64 = format!("{fraction:0<3}").get(..3)?.parse().ok()?;
        whole.checked_mul(1000)?.checked_add(fraction_millis)?
    };
    DateTime::from_timestamp_millis(i64::try_from(millis).ok()?)
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn formats() {
        let expected = "2024-01-15T14:30:00Z";
        for input in [
            "2024-01-15T14:30:00Z",
            "2024-01-15T15:30:00+01:00",
            "2024-01-15T14:30:00.000Z",
            "2024-01-15T14:30:00+0000",
            "2024-01-15 14:30:00",
            "2024-01-15 14:30:00 UTC",
            "2024-01-15T14:30",
            "1705329000",
            "1705329000000",
            "1705329000.0",
        ] {
            let time = parse_time(input).unwrap_or_else(|| panic!("{input}"));
            assert_eq!(
                time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn non_timestamps() {
        for input in [
            "14:30",
            "",
            "{{timenow}}",
            "yesterday",
            "99999999999999999999",
            "1.2.3",
        ] {
            assert_eq!(parse_time(input), None, "{input:?}");
        }
    }
}

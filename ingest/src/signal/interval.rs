//! [`Interval`]: the chart timeframe an alert fired on.
//!
//! TradingView's `{{interval}}` prints minutes as a bare number (`1`, `60`,
//! `240`) and other units with a suffix (`30S`, `1D`, `1W`, `1M` for one
//! month); people write `1h`, `15m`, `15 min`, `4 horas`, `H1`, `M15`. All of
//! them become one normalised value, shown the way TradingView's interval
//! menu shows it (`1m`, `15m`, `1h`, `4h`, `1D`, `1W`, `1M`), and convertible
//! back to the resolution a chart URL takes ([`Interval::tradingview`]).
//!
//! One ambiguity: upper-case `M` is a month in TradingView's notation but a
//! minute to many traders. `1M`..`12M` that TradingView offers as monthly
//! resolutions (1, 2, 3, 4, 6, 12) are months; any other count with `M`
//! (`15M`, `30M`) is minutes. Lower-case `m` is always minutes.

use std::fmt;
use std::str::FromStr;

use super::words::fold;

/// Largest count accepted for any unit; beyond it, it is not a timeframe.
const MAX_COUNT: u32 = 10_000;

/// The unit of an [`Interval`]. Hours are stored as minutes (TradingView
/// has no hour unit: `1h` is `60`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntervalUnit {
    /// Seconds.
    Second,
    /// Minutes (and hours, as multiples of 60).
    Minute,
    /// Days.
    Day,
    /// Weeks.
    Week,
    /// Months.
    Month,
}

/// A chart timeframe: a positive count of a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interval {
    count: u32,
    unit: IntervalUnit,
}

/// Why a value is not a timeframe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("interval must look like 1, 15, 60, 15m, 1h, 4h, 1D, 1W, 1M or H1")]
pub struct IntervalError;

impl Interval {
    /// Builds an interval; the count must be 1..=10000.
    pub fn new(count: u32, unit: IntervalUnit) -> Result<Self, IntervalError> {
        if (1..=MAX_COUNT).contains(&count) {
            Ok(Self { count, unit })
        } else {
            Err(IntervalError)
        }
    }

    /// Parses any of the spellings in the module docs.
    pub fn parse(s: &str) -> Result<Self, IntervalError> {
        let s: String = s.split_whitespace().collect();
        if s.is_empty() || s.len() > 24 {
            return Err(IntervalError);
        }
        if let Some(interval) = metatrader(&s) {
            return Ok(interval);
        }
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let (count, suffix) = s.split_at(digits);
        let count = if count.is_empty() {
            1
        } else {
            count.parse::<u32>().map_err(|_| IntervalError)?
        };
        let (count, unit) = match suffix {
            "M" if is_monthly(count) => (count, IntervalUnit::Month),
            "" | "M" | "m" => (count, IntervalUnit::Minute),
            _ => match fold(suffix).as_str() {
                "s" | "sec" | "secs" | "second" | "seconds" | "seg" | "segundo" | "segundos" => {
                    (count, IntervalUnit::Second)
                }
                "min" | "mins" | "minute" | "minutes" | "minuto" | "minutos" => {
                    (count, IntervalUnit::Minute)
                }
                "h" | "hr" | "hrs" | "hour" | "hours" | "hora" | "horas" => (
                    count.checked_mul(60).ok_or(IntervalError)?,
                    IntervalUnit::Minute,
                ),
                "d" | "day" | "days" | "dia" | "dias" => (count, IntervalUnit::Day),
                "w" | "wk" | "week" | "weeks" | "semana" | "semanas" => (count, IntervalUnit::Week),
                "mo" | "mon" | "month" | "months" | "mes" | "meses" => (count, IntervalUnit::Month),
                _ => return Err(IntervalError),
            },
        };
        Self::new(count, unit)
    }

    /// How many units.
    pub fn count(self) -> u32 {
        self.count
    }

    /// Which unit.
    pub fn unit(self) -> IntervalUnit {
        self.unit
    }

    /// The resolution TradingView's chart URLs and `{{interval}}` use:
    /// `30S`, `15`, `60`, `1D`, `1W`, `1M`.
    pub fn tradingview(self) -> String {
        let count = self.count;
        match self.unit {
            IntervalUnit::Second => format!("{count}S"),
            IntervalUnit::Minute => count.to_string(),
            IntervalUnit::Day => format!("{count}D"),
            IntervalUnit::Week => format!("{count}W"),
            IntervalUnit::Month => format!("{count}M"),
        }
    }
}

/// TradingView's monthly resolutions.
fn is_monthly(count: u32) -> bool {
    matches!(count, 1 | 2 | 3 | 4 | 6 | 12)
}

/// MetaTrader-style names: `M1`, `M15`, `H1`, `H4`, `D1`, `W1`, `MN`, `MN1`.
fn metatrader(s: &str) -> Option<Interval> {
    let (unit, count) = if let Some(count) = s.strip_prefix("MN") {
        (IntervalUnit::Month, count)
    } else {
        let (letter, count) = s.split_at_checked(1)?;
        let unit = match letter {
            // Hours are minutes times 60, applied below.
            "M" | "H" => IntervalUnit::Minute,
            "D" => IntervalUnit::Day,
            "W" => IntervalUnit::Week,
            _ => return None,
        };
        if count.is_empty() {
            return None;
        }
        (unit, count)
    };
    let count = if count.is_empty() && unit == IntervalUnit::Month {
        1
    } else if count.bytes().all(|b| b.is_ascii_digit()) {
        count.parse::<u32>().ok()?
    } else {
        return None;
    };
    let count = if s.starts_with('H') {
        count.checked_mul(60)?
    } else {
        count
    };
    Interval::new(count, unit).ok()
}

impl fmt::Display for Interval {
    /// The label TradingView's interval menu uses: `30s`, `15m`, `1h`,
    /// `4h`, `1D`, `1W`, `1M`. This is the form stored in `signals.interval`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.count;
        match self.unit {
            IntervalUnit::Second => write!(f, "{count}s"),
            IntervalUnit::Minute if count.is_multiple_of(60) => write!(f, "{}h", count / 60),
            IntervalUnit::Minute => write!(f, "{count}m"),
            IntervalUnit::Day => write!(f, "{count}D"),
            IntervalUnit::Week => write!(f, "{count}W"),
            IntervalUnit::Month => write!(f, "{count}M"),
        }
    }
}

impl FromStr for Interval {
    type Err = IntervalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::Interval;

    #[test]
    fn spellings_normalise() {
        for (input, shown, resolution) in [
            ("1", "1m", "1"),
            ("15", "15m", "15"),
            ("60", "1h", "60"),
            ("240", "4h", "240"),
            ("90", "90m", "90"),
            ("15m", "15m", "15"),
            ("15 min", "15m", "15"),
            ("1h", "1h", "60"),
            ("4H", "4h", "240"),
            ("4 horas", "4h", "240"),
            ("1D", "1D", "1D"),
            ("D", "1D", "1D"),
            ("1d", "1D", "1D"),
            ("2 días", "2D", "2D"),
            ("1W", "1W", "1W"),
            ("W", "1W", "1W"),
            ("1M", "1M", "1M"),
            ("M", "1M", "1M"),
            ("15M", "15m", "15"),
            ("3M", "3M", "3M"),
            ("30S", "30s", "30S"),
            ("H1", "1h", "60"),
            ("H4", "4h", "240"),
            ("M15", "15m", "15"),
            ("D1", "1D", "1D"),
            ("MN", "1M", "1M"),
            ("1 week", "1W", "1W"),
        ] {
            let interval = Interval::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(interval.to_string(), shown, "{input}");
            assert_eq!(interval.tradingview(), resolution, "{input}");
        }
    }

    #[test]
    fn rejects_non_intervals() {
        for bad in [
            "",
            "0",
            "abc",
            "1x",
            "{{interval}}",
            "99999999999",
            "-5",
            "1.5h",
            "M0",
        ] {
            assert!(Interval::parse(bad).is_err(), "{bad:?}");
        }
    }
}

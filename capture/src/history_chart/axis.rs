//! The history chart's price axis: fitted to the prices shown, with round
//! ticks, labelled at the instrument's precision.
//!
//! Why it works this way: a trader reads the built-in chart like any chart,
//! so the axis must look like one. An axis from zero squeezes a day's moves
//! into a few pixels; labels such as `79932.82` say nothing. So:
//!
//! - **Fitted.** The axis spans the lowest to the highest price shown plus a
//!   margin (8 % of the range, at least one price unit), so no marker sits
//!   on the frame's edge; it never goes below zero when no price does. A
//!   single price (or several equal ones) gets 1 % either side, so it sits
//!   in the middle of a readable scale instead of on a zero-height one.
//! - **Round ticks.** The step is the smallest of 1, 2 or 5 times a power of
//!   ten that keeps the ticks within the frame's room (`max_ticks`), and
//!   never finer than the instrument's precision (labels would repeat).
//!   Ticks are integer multiples of the step, computed and labelled from
//!   integers, so a label is never `1.0839999999`.
//! - **The instrument's precision.** Alerts carry prices as TradingView
//!   prints them, so the most decimals seen among the prices is the
//!   instrument's precision (`EURUSD` 5, `USDJPY` 3, `ES` 2), capped at
//!   [`MAX_DECIMALS`]; every label shows exactly that many, as TradingView's
//!   own price scale does.
//!
//! Pure: no I/O, tested directly.

/// The most decimals a label shows (crypto quoted in satoshi-like units).
pub const MAX_DECIMALS: u32 = 8;

/// The margin above and below the prices, as a share of their range.
const MARGIN: f64 = 0.08;
/// The room either side of a single price, as a share of it.
const SINGLE_PRICE_ROOM: f64 = 0.01;
/// The steps' mantissas, in increasing order.
const MANTISSAS: [i64; 3] = [1, 2, 5];

/// A step of `mantissa` × 10^`exponent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Step {
    mantissa: i64,
    exponent: i32,
}

impl Step {
    fn value(self) -> f64 {
        #[expect(
            clippy::cast_precision_loss,
            reason = "the mantissa is 1, 2 or 5: exact in f64"
        )]
        let mantissa = self.mantissa as f64;
        mantissa * 10f64.powi(self.exponent)
    }

    /// The integer multiples of this step within `[low, high]`.
    fn multiples(self, low: f64, high: f64) -> std::ops::RangeInclusive<i64> {
        let step = self.value();
        // A hair of tolerance: 1.084 / 0.002 may land just below 542.
        let tolerance = 1e-9;
        #[expect(
            clippy::cast_possible_truncation,
            reason = "prices below 1e15 over a step of at least 1e-8: far inside i64"
        )]
        let (first, last) = (
            (low / step - tolerance).ceil() as i64,
            (high / step + tolerance).floor() as i64,
        );
        first..=last
    }
}

/// The fitted axis: the price range the frame shows, and its ticks.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The price at the frame's bottom edge.
    pub low: f64,
    /// The price at the frame's top edge.
    pub high: f64,
    /// Decimals every label shows.
    pub precision: u32,
    step: Step,
    multiples: std::ops::RangeInclusive<i64>,
}

/// One tick: where it is, and what it says.
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    pub price: f64,
    pub label: String,
}

impl Axis {
    /// Fits an axis to `prices` (finite, not empty; `None` otherwise),
    /// labelled with `precision` decimals (capped at [`MAX_DECIMALS`]),
    /// with at most `max_ticks` ticks (at least 2).
    pub fn fit(prices: &[f64], precision: u32, max_ticks: usize) -> Option<Self> {
        if prices.is_empty() || prices.iter().any(|p| !p.is_finite()) {
            return None;
        }
        let precision = precision.min(MAX_DECIMALS);
        let max_ticks = i64::try_from(max_ticks.max(2)).unwrap_or(i64::MAX);
        let unit = 10f64.powi(-i32::try_from(precision).unwrap_or(0));
        let (min, max) = prices
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &p| (a.min(p), b.max(p)));
        let (mut low, high) = if max - min < unit / 2.0 {
            let room = (max.abs() * SINGLE_PRICE_ROOM).max(unit * 5.0);
            (min - room, max + room)
        } else {
            let margin = ((max - min) * MARGIN).max(unit);
            (min - margin, max + margin)
        };
        if min >= 0.0 {
            low = low.max(0.0);
        }
        let step = Self::step(low, high, precision, max_ticks);
        Some(Self {
            low,
            high,
            precision,
            step,
            multiples: step.multiples(low, high),
        })
    }

    /// The smallest 1-2-5 step, no finer than one price unit, that gives at
    /// most `max_ticks` ticks between `low` and `high`.
    fn step(low: f64, high: f64, precision: u32, max_ticks: i64) -> Step {
        let finest = -i32::try_from(precision).unwrap_or(0);
        // Start a decade below the step that would give exactly max_ticks.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_precision_loss,
            reason = "log10 of a price range: a small integer; max_ticks is a few dozen"
        )]
        let start = ((high - low) / max_ticks as f64).log10().floor() as i32 - 1;
        let mut exponent = start.max(finest);
        loop {
            for mantissa in MANTISSAS {
                let step = Step { mantissa, exponent };
                let ticks = step.multiples(low, high);
                if ticks.end() - ticks.start() < max_ticks {
                    return step;
                }
            }
            exponent += 1;
        }
    }

    /// The ticks, bottom to top.
    pub fn ticks(&self) -> Vec<Tick> {
        self.multiples
            .clone()
            .map(|k| {
                let units = k * self.step.mantissa;
                #[expect(clippy::cast_precision_loss, reason = "tick units stay far below 2^53")]
                let price = units as f64 * 10f64.powi(self.step.exponent);
                Tick {
                    price,
                    label: decimal(units, self.step.exponent, self.precision),
                }
            })
            .collect()
    }

    /// `price` as the axis labels it (for the header's price).
    pub fn format(&self, price: f64) -> String {
        format_price(price, self.precision)
    }
}

/// `price` with exactly `precision` decimals.
pub fn format_price(price: f64, precision: u32) -> String {
    let precision = precision.min(MAX_DECIMALS) as usize;
    format!("{price:.precision$}")
}

/// The decimals `price` is written with (its shortest exact form), capped
/// at [`MAX_DECIMALS`]: `1.0842` has 4, `97000.5` has 1, `150` none.
pub fn decimals_of(price: f64) -> u32 {
    let text = format!("{price}");
    let decimals = text.split_once('.').map_or(0, |(_, frac)| frac.len());
    u32::try_from(decimals)
        .unwrap_or(MAX_DECIMALS)
        .min(MAX_DECIMALS)
}

/// `units` × 10^`exponent` written with `precision` decimals, exactly (no
/// floating point): `decimal(108400, -5, 5)` is `1.08400`.
fn decimal(units: i64, exponent: i32, precision: u32) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let digits = units.unsigned_abs().to_string();
    let (whole, fraction) = if exponent >= 0 {
        let zeros = "0".repeat(usize::try_from(exponent).unwrap_or(0));
        (format!("{digits}{zeros}"), String::new())
    } else {
        let places = usize::try_from(-exponent).unwrap_or(0);
        let padded = format!("{digits:0>width$}", width = places + 1);
        let (whole, fraction) = padded.split_at(padded.len() - places);
        (whole.to_owned(), fraction.to_owned())
    };
    let precision = precision as usize;
    let mut fraction = fraction;
    // The step is never finer than the precision, so only zeros are added.
    while fraction.len() < precision {
        fraction.push('0');
    }
    fraction.truncate(precision);
    if fraction.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(prices: &[f64], precision: u32, max_ticks: usize) -> Vec<String> {
        Axis::fit(prices, precision, max_ticks)
            .expect("an axis")
            .ticks()
            .into_iter()
            .map(|t| t.label)
            .collect()
    }

    #[test]
    fn bitcoin_near_a_hundred_thousand_gets_round_thousands() {
        let prices = [97_000.5, 98_250.0, 101_234.56];
        let axis = Axis::fit(&prices, 2, 8).expect("an axis");
        // 97000.5 - 8 % of the 4234.06 range .. 101234.56 + 8 %.
        assert!((axis.low - 96_661.775_2).abs() < 1e-6, "{}", axis.low);
        assert!((axis.high - 101_573.284_8).abs() < 1e-6, "{}", axis.high);
        assert_eq!(
            labels(&prices, 2, 8),
            ["97000.00", "98000.00", "99000.00", "100000.00", "101000.00"]
        );
        // More room, finer steps: 500, still round.
        assert_eq!(
            labels(&prices, 2, 10),
            [
                "97000.00",
                "97500.00",
                "98000.00",
                "98500.00",
                "99000.00",
                "99500.00",
                "100000.00",
                "100500.00",
                "101000.00",
                "101500.00"
            ]
        );
    }

    #[test]
    fn euro_dollar_ticks_in_pips_at_five_decimals() {
        let prices = [1.084_23, 1.085_17, 1.083_91];
        assert_eq!(
            labels(&prices, 5, 8),
            [
                "1.08400", "1.08420", "1.08440", "1.08460", "1.08480", "1.08500", "1.08520"
            ]
        );
        // Quoted with four decimals: pip steps at four decimals.
        assert_eq!(
            labels(&[1.0842, 1.0851, 1.0839], 4, 8),
            [
                "1.0838", "1.0840", "1.0842", "1.0844", "1.0846", "1.0848", "1.0850", "1.0852"
            ]
        );
    }

    #[test]
    fn dollar_yen_ticks_at_three_decimals() {
        let prices = [150.123, 150.456, 149.987];
        assert_eq!(
            labels(&prices, 3, 8),
            ["150.000", "150.100", "150.200", "150.300", "150.400"]
        );
    }

    #[test]
    fn index_futures_tick_in_fifties() {
        let prices = [5_123.25, 5_250.5, 5_088.75];
        assert_eq!(
            labels(&prices, 2, 8),
            ["5100.00", "5150.00", "5200.00", "5250.00"]
        );
        assert_eq!(
            labels(&prices, 2, 10),
            [
                "5080.00", "5100.00", "5120.00", "5140.00", "5160.00", "5180.00", "5200.00",
                "5220.00", "5240.00", "5260.00"
            ]
        );
    }

    #[test]
    fn a_single_price_sits_mid_axis() {
        let axis = Axis::fit(&[97_000.5], 1, 8).expect("an axis");
        assert!((axis.low - 96_030.495).abs() < 1e-6);
        assert!((axis.high - 97_970.505).abs() < 1e-6);
        let ticks: Vec<String> = axis.ticks().into_iter().map(|t| t.label).collect();
        // Steps of 200 would need 9 ticks.
        assert_eq!(ticks, ["96500.0", "97000.0", "97500.0"]);
        // Equal prices are a single price too.
        assert_eq!(Axis::fit(&[1.25, 1.25], 2, 8), Axis::fit(&[1.25], 2, 8));
    }

    #[test]
    fn the_axis_stays_above_zero_and_steps_stay_above_the_precision() {
        let axis = Axis::fit(&[0.5, 10.0], 1, 8).expect("an axis");
        assert!(axis.low.abs() < f64::EPSILON, "{}", axis.low);
        // Two prices one cent apart at two decimals: cent steps, not finer.
        assert_eq!(
            labels(&[100.0, 100.01], 2, 8),
            ["99.99", "100.00", "100.01", "100.02"]
        );
        // A price of zero still gets a scale, from zero up.
        assert_eq!(
            labels(&[0.0], 2, 8),
            ["0.00", "0.01", "0.02", "0.03", "0.04", "0.05"]
        );
    }

    #[test]
    fn precision_comes_from_the_prices_and_is_capped() {
        assert_eq!(decimals_of(1.0842), 4);
        assert_eq!(decimals_of(1.084_23), 5);
        assert_eq!(decimals_of(97_000.5), 1);
        assert_eq!(decimals_of(150.0), 0);
        assert_eq!(decimals_of(0.000_012_34), 8);
        assert_eq!(decimals_of(0.1 + 0.2), MAX_DECIMALS);
        assert_eq!(format_price(0.1 + 0.2, 2), "0.30");
        assert_eq!(format_price(1.0842, 5), "1.08420");
    }

    #[test]
    fn labels_are_exact_decimals() {
        assert_eq!(decimal(108_400, -5, 5), "1.08400");
        assert_eq!(decimal(5, -3, 3), "0.005");
        assert_eq!(decimal(97, 3, 2), "97000.00");
        assert_eq!(decimal(15, 1, 0), "150");
        assert_eq!(decimal(-2, -1, 2), "-0.20");
    }

    #[test]
    fn nothing_to_fit_is_no_axis() {
        assert_eq!(Axis::fit(&[], 2, 8), None);
        assert_eq!(Axis::fit(&[1.0, f64::NAN], 2, 8), None);
    }
}

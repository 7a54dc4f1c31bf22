//! The built-in history chart: a picture for signals that cannot show the
//! trader's own TradingView chart (no chart id, or no valid session).
//!
//! A self-contained HTML page with one inline SVG, generated here and loaded
//! through a `data:` URL, so it needs no network and no script: the trader's
//! recent signals on the same ticker as a price line, long and short markers,
//! the new signal ringed, and a header with ticker, price, direction and time.
//! Pure (no I/O), so it is tested directly. [`page`] reads top to bottom as
//! the picture is drawn: header, then either the grid at the price axis'
//! ticks ([`axis`]: fitted to the prices, round steps, the instrument's
//! precision), the line and the markers, or a plain grid and a note that
//! there is no history yet. (Its metric label stays `fallback`, the name
//! dashboards already chart.)

pub mod axis;

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use signal_vocabulary::{ChartTheme, Direction, Resolution};
use uuid::Uuid;

use crate::queue::HistoryPoint;

use self::axis::Axis;

/// The page's readiness check: the page is static, so "loaded" is "drawn".
pub const READY_CHECK: &str =
    "document.readyState === 'complete' && !!document.querySelector('svg#chart')";

/// What the header shows about the new signal.
#[derive(Debug)]
pub struct Headline<'a> {
    pub signal_id: Uuid,
    pub ticker: &'a str,
    pub price: Option<f64>,
    pub direction: Option<Direction>,
    pub time: DateTime<Utc>,
    pub indicator: Option<&'a str>,
}

struct Palette {
    background: &'static str,
    text: &'static str,
    muted: &'static str,
    grid: &'static str,
    line: &'static str,
}

const DARK: Palette = Palette {
    background: "#131722",
    text: "#d1d4dc",
    muted: "#787b86",
    grid: "#2a2e39",
    line: "#2962ff",
};
const LIGHT: Palette = Palette {
    background: "#ffffff",
    text: "#131722",
    muted: "#787b86",
    grid: "#e0e3eb",
    line: "#2962ff",
};
const LONG: &str = "#26a69a";
const SHORT: &str = "#ef5350";

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn is_short(direction: Option<Direction>) -> bool {
    direction == Some(Direction::Short)
}

/// The chart's drawing area inside a `width` x `height` viewport, below the
/// header and left of the price axis.
#[derive(Clone, Copy)]
struct Frame {
    width: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    const HEADER_HEIGHT: f64 = 72.0;
    /// The least room between two price ticks, in pixels.
    const TICK_SPACING: f64 = 64.0;

    fn new(width: u32, height: u32) -> Self {
        let (width, height) = (f64::from(width), f64::from(height));
        Self {
            width,
            left: 24.0,
            right: width - 96.0,
            top: Self::HEADER_HEIGHT + 16.0,
            bottom: height - 40.0,
        }
    }

    /// The y of the `i`th of the five grid lines, top to bottom.
    fn grid_y(&self, i: u8) -> f64 {
        self.top + (self.bottom - self.top) * f64::from(i) / 4.0
    }

    /// How many price ticks fit on the frame's height.
    fn max_ticks(&self) -> usize {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a viewport's height over the spacing: a small positive number"
        )]
        let ticks = ((self.bottom - self.top) / Self::TICK_SPACING)
            .floor()
            .max(2.0) as usize;
        ticks
    }
}

/// One signal on the chart.
#[derive(Clone, Copy)]
struct Point {
    /// Milliseconds since the epoch.
    time: f64,
    price: f64,
    /// The decimals the price was sent with.
    decimals: u32,
    direction: Option<Direction>,
    /// The signal being captured (ringed).
    current: bool,
}

/// The signals to draw: the history, plus the new signal when the history
/// does not hold it yet (it always should; the page must not depend on it).
#[expect(
    clippy::cast_precision_loss,
    reason = "millisecond timestamps fit f64 comfortably"
)]
fn points(headline: &Headline<'_>, history: &[HistoryPoint]) -> Vec<Point> {
    let mut points: Vec<Point> = history
        .iter()
        .map(|p| Point {
            time: p.time.timestamp_millis() as f64,
            price: p.price,
            decimals: p.decimals.max(axis::decimals_of(p.price)),
            direction: p.direction,
            current: p.signal_id == headline.signal_id,
        })
        .collect();
    if !points.iter().any(|p| p.current)
        && let Some(price) = headline.price
    {
        points.push(Point {
            time: headline.time.timestamp_millis() as f64,
            price,
            decimals: axis::decimals_of(price),
            direction: headline.direction,
            current: true,
        });
    }
    points
}

/// The instrument's precision: the most decimals any price was sent with.
fn precision(points: &[Point]) -> u32 {
    points.iter().map(|p| p.decimals).max().unwrap_or(0)
}

/// Maps times and prices onto the frame.
struct Scale {
    frame: Frame,
    t_min: f64,
    t_max: f64,
    axis: Axis,
}

impl Scale {
    /// Fits `points` into `frame`: times across, the price axis
    /// ([`Axis::fit`]) up; `None` without points.
    fn fit(points: &[Point], frame: Frame) -> Option<Self> {
        let prices: Vec<f64> = points.iter().map(|p| p.price).collect();
        let axis = Axis::fit(&prices, precision(points), frame.max_ticks())?;
        let (t_min, t_max) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
            (a.min(p.time), b.max(p.time))
        });
        Some(Self {
            frame,
            t_min,
            t_max,
            axis,
        })
    }

    fn x(&self, t: f64) -> f64 {
        let Frame { left, right, .. } = self.frame;
        if self.t_max > self.t_min {
            left + 16.0 + (right - left - 32.0) * (t - self.t_min) / (self.t_max - self.t_min)
        } else {
            f64::midpoint(left, right)
        }
    }

    fn y(&self, p: f64) -> f64 {
        let Frame { top, bottom, .. } = self.frame;
        bottom - (bottom - top) * (p - self.axis.low) / (self.axis.high - self.axis.low)
    }
}

/// Renders the page for the trader's resolution and theme.
pub fn page(
    headline: &Headline<'_>,
    history: &[HistoryPoint],
    resolution: Resolution,
    theme: ChartTheme,
) -> String {
    let palette = if theme.is_dark() { &DARK } else { &LIGHT };
    let (width, height) = resolution.viewport();
    let frame = Frame::new(width, height);
    let points = points(headline, history);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#
    );
    let _ = write!(
        svg,
        r#"<rect width="100%" height="100%" fill="{}"/>"#,
        palette.background
    );
    if let Some(scale) = Scale::fit(&points, frame) {
        let price = headline.price.map(|p| scale.axis.format(p));
        header(&mut svg, headline, price, &frame, palette);
        price_axis(&mut svg, &scale, palette);
        line(&mut svg, &scale, &points, palette);
        markers(&mut svg, &scale, &points);
    } else {
        let price = headline
            .price
            .map(|p| axis::format_price(p, axis::decimals_of(p)));
        header(&mut svg, headline, price, &frame, palette);
        grid(&mut svg, &frame, palette);
        no_history(&mut svg, &frame, palette);
    }
    svg.push_str("</svg>");

    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>html,body{{margin:0;padding:0;overflow:hidden;background:{}}}</style></head>\
         <body>{svg}</body></html>",
        escape(headline.ticker),
        palette.background
    )
}

/// Ticker, time and indicator on the left; price (as the axis writes it)
/// and a LONG / SHORT / SIGNAL badge on the right.
fn header(
    svg: &mut String,
    headline: &Headline<'_>,
    price: Option<String>,
    frame: &Frame,
    palette: &Palette,
) {
    let w = frame.width;
    let (label, colour) = if is_short(headline.direction) {
        ("SHORT", SHORT)
    } else if headline.direction.is_some() {
        ("LONG", LONG)
    } else {
        ("SIGNAL", palette.line)
    };
    let price = price.unwrap_or_default();
    let _ = write!(
        svg,
        r#"<text x="24" y="34" font-family="sans-serif" font-size="24" font-weight="bold" fill="{}">{}</text>"#,
        palette.text,
        escape(headline.ticker)
    );
    let _ = write!(
        svg,
        r#"<text x="24" y="60" font-family="sans-serif" font-size="16" fill="{}">{} · {}</text>"#,
        palette.muted,
        escape(&headline.time.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
        escape(headline.indicator.unwrap_or("signal history"))
    );
    let _ = write!(
        svg,
        r##"<rect x="{}" y="16" width="96" height="32" rx="4" fill="{colour}"/><text x="{}" y="38" font-family="sans-serif" font-size="16" font-weight="bold" fill="#ffffff" text-anchor="middle">{label}</text>"##,
        w - 120.0,
        w - 72.0
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="38" font-family="sans-serif" font-size="22" fill="{}" text-anchor="end">{}</text>"#,
        w - 136.0,
        palette.text,
        escape(&price)
    );
}

/// Five horizontal lines across the frame (when there is no price axis).
fn grid(svg: &mut String, frame: &Frame, palette: &Palette) {
    let Frame { left, right, .. } = *frame;
    for i in 0..=4 {
        let y = frame.grid_y(i);
        let _ = write!(
            svg,
            r#"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="{}" stroke-width="1"/>"#,
            palette.grid
        );
    }
}

/// What a ticker without priced signals shows instead of a line.
fn no_history(svg: &mut String, frame: &Frame, palette: &Palette) {
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="18" fill="{}" text-anchor="middle">No price history for this ticker yet</text>"#,
        frame.width / 2.0,
        f64::midpoint(frame.top, frame.bottom),
        palette.muted
    );
}

/// A grid line across the frame and a label beside it at each tick.
fn price_axis(svg: &mut String, scale: &Scale, palette: &Palette) {
    let Frame { left, right, .. } = scale.frame;
    for tick in scale.axis.ticks() {
        let y = scale.y(tick.price);
        let _ = write!(
            svg,
            r#"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="{}" stroke-width="1"/>"#,
            palette.grid
        );
        let _ = write!(
            svg,
            r#"<text class="tick" x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="12" fill="{}">{}</text>"#,
            right + 8.0,
            y + 4.0,
            palette.muted,
            escape(&tick.label)
        );
    }
}

/// The price line through every signal, oldest first.
fn line(svg: &mut String, scale: &Scale, points: &[Point], palette: &Palette) {
    let path: Vec<String> = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", scale.x(p.time), scale.y(p.price)))
        .collect();
    let _ = write!(
        svg,
        r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
        path.join(" "),
        palette.line
    );
}

/// A triangle per signal (up and green for long, down and red for short),
/// the new one ringed.
fn markers(svg: &mut String, scale: &Scale, points: &[Point]) {
    for point in points {
        let (cx, cy) = (scale.x(point.time), scale.y(point.price));
        if point.current {
            let _ = write!(
                svg,
                r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="14" fill="none" stroke="#ffeb3b" stroke-width="3"/>"##
            );
        }
        // Base 6 px on one side of the price, tip 7 px on the other.
        let (base, tip, fill) = if is_short(point.direction) {
            (cy - 6.0, cy + 7.0, SHORT)
        } else {
            (cy + 6.0, cy - 7.0, LONG)
        };
        let _ = write!(
            svg,
            r#"<path d="M{:.1},{base:.1} L{:.1},{base:.1} L{cx:.1},{tip:.1} Z" fill="{fill}"/>"#,
            cx - 7.0,
            cx + 7.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(minutes: i64, price: f64, direction: Direction) -> HistoryPoint {
        HistoryPoint {
            signal_id: Uuid::new_v4(),
            time: DateTime::from_timestamp(1_700_000_000 + minutes * 60, 0).unwrap(),
            price,
            decimals: 0,
            direction: Some(direction),
        }
    }

    /// The tick labels the page draws, in the order drawn (bottom up).
    fn tick_labels(html: &str) -> Vec<&str> {
        html.split(r#"<text class="tick""#)
            .skip(1)
            .map(|t| {
                t.split('>')
                    .nth(1)
                    .and_then(|l| l.split('<').next())
                    .unwrap()
            })
            .collect()
    }

    /// The y of every marker's tip, from the triangles' paths.
    fn marker_ys(html: &str) -> Vec<f64> {
        html.split("<path d=\"M")
            .skip(1)
            .map(|p| {
                let tip = p.split(" L").nth(2).unwrap();
                tip.split(['Z', ' '])
                    .next()
                    .unwrap()
                    .split(',')
                    .nth(1)
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn the_demo_traders_bitcoin_history_gets_a_fitted_axis() {
        let mut history = vec![
            point(0, 67_890.5, Direction::Long),
            point(420, 68_234.56, Direction::Short),
            point(600, 68_512.5, Direction::Long),
        ];
        history[1].decimals = 2;
        let headline = Headline {
            signal_id: history[2].signal_id,
            ticker: "BINANCE:BTCUSDT",
            price: Some(68_512.5),
            direction: Some(Direction::Long),
            time: history[2].time,
            indicator: Some("Demo indicator"),
        };
        let html = page(&headline, &history, Resolution::Hd, ChartTheme::Dark);
        // 67890.5 - 8 % of the range .. 68512.5 + 8 %, in steps of 100, at
        // the two decimals one of the prices was sent with: drawn bottom up.
        assert_eq!(
            tick_labels(&html),
            [
                "67900.00", "68000.00", "68100.00", "68200.00", "68300.00", "68400.00", "68500.00"
            ]
        );
        assert!(
            html.contains(">68512.50</text>"),
            "header price at the precision"
        );
        // Every marker inside the frame, none at its edges: the lowest price
        // near the bottom, the highest near the top, with the margin.
        let frame = Frame::new(1280, 720);
        let ys = marker_ys(&html);
        assert_eq!(ys.len(), 3);
        for y in &ys {
            assert!(
                *y > frame.top + 20.0 && *y < frame.bottom - 20.0,
                "{y} in {ys:?}"
            );
        }
    }

    #[test]
    fn a_single_price_is_drawn_mid_frame() {
        let history = vec![point(0, 1.0842, Direction::Short)];
        let headline = Headline {
            signal_id: history[0].signal_id,
            ticker: "OANDA:EURUSD",
            price: Some(1.0842),
            direction: Some(Direction::Short),
            time: history[0].time,
            indicator: None,
        };
        let html = page(&headline, &history, Resolution::Hd, ChartTheme::Light);
        let labels = tick_labels(&html);
        assert!(labels.len() >= 2, "{labels:?}");
        assert!(
            labels.iter().all(|l| l.len() == "1.0842".len()),
            "{labels:?}"
        );
        let frame = Frame::new(1280, 720);
        let middle = f64::midpoint(frame.top, frame.bottom);
        // The short marker's tip is 7 px below the price.
        let tip = marker_ys(&html)[0];
        assert!((tip - 7.0 - middle).abs() < 1.0, "{tip} vs {middle}");
    }

    #[test]
    fn marks_each_signal_and_rings_the_new_one() {
        let history = vec![
            point(0, 100.0, Direction::Long),
            point(5, 105.0, Direction::Short),
            point(9, 102.0, Direction::Long),
        ];
        let headline = Headline {
            signal_id: history[2].signal_id,
            ticker: "BTC<USDT>",
            price: Some(102.0),
            direction: Some(Direction::Long),
            time: history[2].time,
            indicator: None,
        };
        let html = page(&headline, &history, Resolution::Hd, ChartTheme::Dark);
        assert_eq!(html.matches("<path ").count(), 3);
        assert_eq!(html.matches(SHORT).count(), 1, "one short marker");
        assert_eq!(html.matches("<circle").count(), 1);
        assert!(html.contains("BTC&lt;USDT&gt;"), "ticker escaped");
        assert!(!html.contains("BTC<USDT>"));
        assert!(html.contains(r#"width="1280" height="720""#));
    }

    #[test]
    fn a_signal_without_history_still_gets_a_picture() {
        let headline = Headline {
            signal_id: Uuid::new_v4(),
            ticker: "ETHUSDT",
            price: None,
            direction: Some(Direction::Short),
            time: Utc::now(),
            indicator: Some("My Indicator"),
        };
        let html = page(&headline, &[], Resolution::FullHd, ChartTheme::Light);
        assert!(html.contains("No price history"));
        assert!(html.contains("SHORT"));
    }
}

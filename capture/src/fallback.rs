//! The built-in chart: a picture for signals that cannot show the trader's
//! own TradingView chart (no chart id, or no valid session).
//!
//! A self-contained HTML page with one inline SVG, generated here and loaded
//! through a `data:` URL, so it needs no network and no script: the trader's
//! recent signals on the same ticker as a price line, long and short markers,
//! the new signal ringed, and a header with ticker, price, direction and time.
//! Pure (no I/O), so it is tested directly.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use signal_vocabulary::Direction;
use uuid::Uuid;

use crate::queue::HistoryPoint;

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

fn format_price(price: f64) -> String {
    if price.abs() >= 1000.0 {
        format!("{price:.2}")
    } else if price.abs() >= 1.0 {
        format!("{price:.4}")
    } else {
        format!("{price:.8}")
    }
}

/// Renders the page for a `width` x `height` viewport.
#[expect(
    clippy::cast_precision_loss,
    reason = "pixel coordinates and millisecond timestamps fit f64 comfortably"
)]
#[expect(
    clippy::too_many_lines,
    reason = "one linear drawing routine: header, grid, axis, line, markers"
)]
pub fn page(
    headline: &Headline<'_>,
    history: &[HistoryPoint],
    width: u32,
    height: u32,
    dark: bool,
) -> String {
    let palette = if dark { &DARK } else { &LIGHT };
    let (w, h) = (f64::from(width), f64::from(height));
    let header_h = 72.0;
    let (left, right, top, bottom) = (24.0, w - 96.0, header_h + 16.0, h - 40.0);

    let mut points: Vec<(f64, f64, Option<Direction>, bool)> = history
        .iter()
        .map(|p| {
            (
                p.time.timestamp_millis() as f64,
                p.price,
                p.direction,
                p.signal_id == headline.signal_id,
            )
        })
        .collect();
    if !points.iter().any(|p| p.3)
        && let Some(price) = headline.price
    {
        points.push((
            headline.time.timestamp_millis() as f64,
            price,
            headline.direction,
            true,
        ));
    }

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

    // Header.
    let (label, colour) = if is_short(headline.direction) {
        ("SHORT", SHORT)
    } else if headline.direction.is_some() {
        ("LONG", LONG)
    } else {
        ("SIGNAL", palette.line)
    };
    let price = headline.price.map(format_price).unwrap_or_default();
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

    // Grid.
    for i in 0..=4 {
        let y = top + (bottom - top) * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r#"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="{}" stroke-width="1"/>"#,
            palette.grid
        );
    }

    if points.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="18" fill="{}" text-anchor="middle">No price history for this ticker yet</text>"#,
            w / 2.0,
            f64::midpoint(top, bottom),
            palette.muted
        );
    } else {
        let (t_min, t_max) = points
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (p_min, p_max) = points
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let pad = ((p_max - p_min) * 0.1).max(p_max.abs() * 0.001).max(1e-9);
        // Prices are never negative: keep the axis from dipping below zero.
        let (p_min, p_max) = ((p_min - pad).max(0.0_f64.min(p_min)), p_max + pad);
        let x = |t: f64| {
            if t_max > t_min {
                left + 16.0 + (right - left - 32.0) * (t - t_min) / (t_max - t_min)
            } else {
                f64::midpoint(left, right)
            }
        };
        let y = |p: f64| bottom - (bottom - top) * (p - p_min) / (p_max - p_min);

        for i in 0..=4 {
            let value = p_max - (p_max - p_min) * f64::from(i) / 4.0;
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="12" fill="{}">{}</text>"#,
                right + 8.0,
                top + (bottom - top) * f64::from(i) / 4.0 + 4.0,
                palette.muted,
                escape(&format_price(value))
            );
        }
        let path: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            path.join(" "),
            palette.line
        );
        for &(t, p, direction, current) in &points {
            let (cx, cy) = (x(t), y(p));
            if current {
                let _ = write!(
                    svg,
                    r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="14" fill="none" stroke="#ffeb3b" stroke-width="3"/>"##
                );
            }
            let _ = if is_short(direction) {
                write!(
                    svg,
                    r#"<path d="M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z" fill="{SHORT}"/>"#,
                    cx - 7.0,
                    cy - 6.0,
                    cx + 7.0,
                    cy - 6.0,
                    cx,
                    cy + 7.0
                )
            } else {
                write!(
                    svg,
                    r#"<path d="M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z" fill="{LONG}"/>"#,
                    cx - 7.0,
                    cy + 6.0,
                    cx + 7.0,
                    cy + 6.0,
                    cx,
                    cy - 7.0
                )
            };
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn point(minutes: i64, price: f64, direction: Direction) -> HistoryPoint {
        HistoryPoint {
            signal_id: Uuid::new_v4(),
            time: DateTime::from_timestamp(1_700_000_000 + minutes * 60, 0).unwrap(),
            price,
            direction: Some(direction),
        }
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
        let html = page(&headline, &history, 1280, 720, true);
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
        let html = page(&headline, &[], 1920, 1080, false);
        assert!(html.contains("No price history"));
        assert!(html.contains("SHORT"));
    }
}

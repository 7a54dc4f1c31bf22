//! A TradingView-shaped chart page of our own, served by the tests.
//!
//! Written from the structure `capture/src/page.rs` documents (nothing
//! copied from TradingView): a header (`.layout__area--top`), the drawing
//! toolbar (`.layout__area--left`) and the chart area
//! (`.layout__area--center`) holding `table.chart-markup-table.pane` with a
//! `.chart-gui-wrapper` and its `canvas`, a legend
//! (`[data-name="legend-source-item"]`), TradingView's spinner
//! (`.tv-spinner`, shown with `.tv-spinner--shown`), `window.is_authenticated`
//! and a chart API (`window.TradingViewApi.activeChart()` with `symbol()`,
//! `resolution()`, `setSymbol()`, `setResolution()`). Each chart id is served
//! in a [`PageState`]; a request without a session the server accepts for
//! that chart gets the "Access Denied" page TradingView shows for a private
//! layout at the same URL. Without the `cookiePrivacyPreferenceBannerProduction`
//! cookie the page shows a cookie banner over the chart.
//!
//! Every part has a colour of its own, so a test reads the PNG to tell what
//! was on screen: [`CHART_RGB`] the alert's symbol drawn, [`OTHER_RGB`]
//! another symbol, [`LEGEND_RGB`], [`OVERLAY_RGB`] (toasts, dialogs,
//! toolbars and notices over the chart), [`BANNER_RGB`], [`HEADER_RGB`],
//! [`TOOLBAR_RGB`] (outside the chart area).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cookie_seal::TradingViewSession;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// The chart drawn for the symbol the URL asked for.
pub(crate) const CHART_RGB: [u8; 3] = [12, 200, 90];
/// The chart drawn for any other symbol.
pub(crate) const OTHER_RGB: [u8; 3] = [200, 60, 30];
pub(crate) const LEGEND_RGB: [u8; 3] = [250, 200, 0];
pub(crate) const OVERLAY_RGB: [u8; 3] = [255, 0, 255];
pub(crate) const BANNER_RGB: [u8; 3] = [30, 30, 200];
pub(crate) const HEADER_RGB: [u8; 3] = [60, 60, 60];
pub(crate) const TOOLBAR_RGB: [u8; 3] = [90, 90, 90];
/// Where the chart area starts in the viewport (the toolbar's width, the
/// header's height): the clipped PNG's origin.
pub(crate) const CHART_AREA_X: u32 = 52;
pub(crate) const CHART_AREA_Y: u32 = 38;

/// What a chart's page does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageState {
    /// The chart of the asked symbol, drawn after the server's delay.
    Drawn,
    /// Only TradingView's spinner for `ms`, then the app starts and draws.
    SlowStart { ms: u64 },
    /// Drawn, with a loading indicator and a loader item that stay in the
    /// page, hidden by their class.
    HiddenSpinner,
    /// Drawn, the legend only `ms` later.
    LateLegend { ms: u64 },
    /// Drawn, then toasts, a fired-alert dialog, the floating toolbar and
    /// the reconnect notice over it.
    Overlays,
    /// Drawn with another symbol and interval (`NASDAQ:AAPL`, `1D`) than the
    /// URL asked for; the chart API switches it, or refuses to.
    OtherSymbol { switchable: bool },
    /// The spinner for ever.
    Never,
    /// Drawn behind TradingView's sign-in dialog, with a sign-in link.
    SignInWall,
    /// Drawn, but `window.is_authenticated === false`.
    SignedOutFlag,
}

/// One request the chart page server saw.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) cookies: String,
}

/// The chart page server: `/chart/{id}/?symbol=..&interval=..` (`never=1`
/// in the query: [`PageState::Never`]). Sets a `visited` cookie (a page in
/// a reused browser context would send it back).
#[derive(Clone, Debug)]
pub(crate) struct ChartServer {
    pub(crate) base: String,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    /// sessionid -> the chart it may open, in which state.
    valid_sessions: Arc<Mutex<HashMap<String, (String, PageState)>>>,
    delay_ms: u64,
}

impl ChartServer {
    /// A server whose charts draw `delay_ms` after the app started.
    pub(crate) async fn start(delay_ms: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = Self {
            base,
            seen: Arc::default(),
            valid_sessions: Arc::default(),
            delay_ms,
        };
        let state = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buffer).to_string();
                    let path = head
                        .lines()
                        .next()
                        .and_then(|l| l.split(' ').nth(1))
                        .unwrap_or("/")
                        .to_owned();
                    let cookies = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("Cookie: ")
                                .or_else(|| l.strip_prefix("cookie: "))
                        })
                        .unwrap_or("")
                        .to_owned();
                    let (status, body) = if path.starts_with("/chart/") {
                        state.seen.lock().unwrap().push(Seen {
                            path: path.clone(),
                            cookies: cookies.clone(),
                        });
                        ("200 OK", state.page(&path, &cookies))
                    } else {
                        ("404 Not Found", String::new())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        server
    }

    /// Its `host:port`, as `CAPTURE_EGRESS_ALLOW` names it: Chromium may
    /// reach it although it is on loopback.
    pub(crate) fn egress_entry(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// Accepts `session` for chart `chart_id`, drawn normally.
    pub(crate) fn accept(&self, session: &TradingViewSession, chart_id: &str) {
        self.accept_in(session, chart_id, PageState::Drawn);
    }

    /// Accepts `session` for chart `chart_id`, served in `state`.
    pub(crate) fn accept_in(&self, session: &TradingViewSession, chart_id: &str, state: PageState) {
        self.valid_sessions
            .lock()
            .unwrap()
            .insert(session.sessionid.clone(), (chart_id.to_owned(), state));
    }

    fn page(&self, path: &str, cookies: &str) -> String {
        let cookie = |name: &str| {
            cookies
                .split(';')
                .map(str::trim)
                .find_map(|c| c.strip_prefix(name)?.strip_prefix('='))
        };
        let chart_id = path
            .strip_prefix("/chart/")
            .and_then(|p| p.split('/').next())
            .unwrap_or_default();
        let allowed = cookie("sessionid").and_then(|s| {
            self.valid_sessions
                .lock()
                .unwrap()
                .get(s)
                .filter(|(chart, _)| chart == chart_id)
                .map(|(_, state)| *state)
        });
        let Some(mut state) = allowed else {
            return ACCESS_DENIED.into();
        };
        if path.contains("never=1") {
            state = PageState::Never;
        }
        let query = |name: &str| {
            path.split_once('?')
                .map(|(_, q)| q)
                .unwrap_or_default()
                .split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(|v| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .to_string()
                })
                .unwrap_or_default()
        };
        page_html(
            state,
            &query("symbol"),
            &query("interval"),
            self.delay_ms,
            cookie("cookiePrivacyPreferenceBannerProduction").is_none(),
        )
    }
}

/// What TradingView shows for a private layout opened without a session
/// it accepts: at the chart's own URL, no redirect.
const ACCESS_DENIED: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Access Denied — TradingView</title></head>\
<body><h1>Access Denied</h1><p>This chart layout is private.</p></body></html>";

fn rgb([r, g, b]: [u8; 3]) -> String {
    format!("rgb({r},{g},{b})")
}

/// The page for one state. The JavaScript plays TradingView's app: it
/// starts, lays out the chart area, draws the canvas, shows the legend, and
/// answers the chart API.
fn page_html(
    state: PageState,
    symbol: &str,
    interval: &str,
    delay_ms: u64,
    banner: bool,
) -> String {
    let (start_ms, legend_ms, initial_symbol, initial_interval) = match state {
        PageState::SlowStart { ms } => (ms, 0, symbol, interval),
        PageState::LateLegend { ms } => (0, ms, symbol, interval),
        PageState::OtherSymbol { .. } => (0, 0, "NASDAQ:AAPL", "1D"),
        _ => (0, 0, symbol, interval),
    };
    let config = serde_json::json!({
        "asked": symbol,
        "symbol": initial_symbol,
        "interval": initial_interval,
        "start_ms": start_ms,
        "draw_ms": delay_ms,
        "legend_ms": legend_ms,
        "never": state == PageState::Never,
        "overlays": state == PageState::Overlays,
        "hidden_busy": state == PageState::HiddenSpinner,
        "sign_in_wall": state == PageState::SignInWall,
        "authenticated": state != PageState::SignedOutFlag,
        "switchable": !matches!(state, PageState::OtherSymbol { switchable: false }),
        "banner": banner,
        "chart": rgb(CHART_RGB),
        "other": rgb(OTHER_RGB),
    });
    let (legend, overlay, banner_rgb, header, toolbar) = (
        rgb(LEGEND_RGB),
        rgb(OVERLAY_RGB),
        rgb(BANNER_RGB),
        rgb(HEADER_RGB),
        rgb(TOOLBAR_RGB),
    );
    let (x, y) = (CHART_AREA_X, CHART_AREA_Y);
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>{symbol} — TradingView</title><style>
html, body {{ margin: 0; overflow: hidden; background: #fff; font: 12px sans-serif; }}
.layout__area--top {{ position: fixed; left: 0; top: 0; right: 0; height: {y}px; background: {header}; }}
.layout__area--left {{ position: fixed; left: 0; top: {y}px; width: {x}px; bottom: 0; background: {toolbar}; }}
.layout__area--center {{ position: fixed; left: {x}px; top: {y}px; right: 0; bottom: 0; background: #fff; }}
.chart-markup-table {{ border-collapse: collapse; width: 100%; height: 100%; }}
.chart-markup-table td {{ padding: 0; }}
.chart-gui-wrapper {{ position: relative; width: 100%; height: 100%; }}
.chart-gui-wrapper canvas {{ position: absolute; left: 0; top: 0; }}
.legend {{ position: absolute; left: 8px; top: 8px; width: 200px; height: 24px; background: {legend}; z-index: 2; overflow: hidden; }}
.tv-spinner {{ display: none; position: fixed; left: 45%; top: 45%; width: 40px; height: 40px; background: #888; z-index: 5; }}
.tv-spinner--shown {{ display: block; }}
.is-hidden {{ display: none; }}
.overlay {{ position: fixed; background: {overlay}; z-index: 10; }}
.cookie-banner {{ position: fixed; left: 0; right: 0; bottom: 0; height: 60px; background: {banner_rgb}; z-index: 20; }}
</style></head><body>
<div class="tv-spinner tv-spinner--shown" id="spinner"></div>
<div id="app"></div>
<script>
const cfg = {config};
{APP_SCRIPT}
</script></body></html>"#
    )
}

/// The test page's app: plays TradingView's (starts, lays out the chart
/// area, draws, shows the legend, answers the chart API), driven by `cfg`.
const APP_SCRIPT: &str = r#"document.cookie = 'visited=1; path=/';
window.is_authenticated = cfg.authenticated;
const shown = { symbol: cfg.symbol, resolution: cfg.interval };
const spinner = document.getElementById('spinner');
const busy = (on) => spinner.classList.toggle('tv-spinner--shown', on);
let canvas = null;
const draw = () => {
  const x = canvas.getContext('2d');
  x.fillStyle = shown.symbol === cfg.asked ? cfg.chart : cfg.other;
  x.fillRect(0, 0, canvas.width, canvas.height);
  x.fillStyle = '#000';
  x.fillRect(10, canvas.height - 60, 200, 50);
  const title = document.querySelector('[data-name="legend-source-title"]');
  if (title) title.textContent = shown.symbol + ' · ' + shown.resolution;
};
const showLegend = () => {
  document.querySelector('.layout__area--center').insertAdjacentHTML('beforeend',
    '<div class="legend"><div data-name="legend-source-item"><div data-name="legend-source-title">' + shown.symbol + ' · ' + shown.resolution + '</div></div></div>');
};
const overlays = () => {
  document.body.insertAdjacentHTML('beforeend',
    '<div data-role="toast-container" class="overlay" style="right: 20px; bottom: 80px; width: 300px; height: 80px"><div data-name="base-toast">Alert on BTCUSDT</div></div>' +
    '<div class="tv-floating-toolbar overlay" style="left: 400px; top: 60px; width: 200px; height: 40px"></div>' +
    '<div id="overlap-manager-root"><div data-qa-dialog-name="alerts-fired" class="overlay" style="left: 500px; top: 250px; width: 300px; height: 150px">Alert fired</div></div>' +
    '<div data-name="reconnect" class="overlay" style="left: 80px; top: 580px; width: 250px; height: 40px">Reconnecting…</div>');
};
const start = () => {
  const app = document.getElementById('app');
  app.innerHTML =
    '<div class="layout__area--top">' + (cfg.sign_in_wall ? '<a href="/accounts/signin/?source=header_menu" style="color: #fff">Sign in</a>' : '') + '</div>' +
    '<div class="layout__area--left"></div>' +
    '<div class="layout__area--center"><table class="chart-markup-table pane"><tr><td><div class="chart-gui-wrapper"><canvas></canvas></div></td></tr></table></div>' +
    (cfg.hidden_busy ? '<div data-name="loading" class="is-hidden">Loading…</div><div class="loaderItem-a1b2 is-hidden"></div>' : '') +
    (cfg.banner ? '<div class="cookie-banner">We use cookies</div>' : '');
  const area = document.querySelector('.layout__area--center');
  canvas = area.querySelector('canvas');
  canvas.width = area.clientWidth;
  canvas.height = area.clientHeight;
  if (cfg.never) return;
  setTimeout(() => {
    draw();
    busy(false);
    if (cfg.legend_ms > 0) setTimeout(showLegend, cfg.legend_ms); else showLegend();
    if (cfg.overlays) overlays();
    if (cfg.sign_in_wall) document.body.insertAdjacentHTML('beforeend',
      '<div id="overlap-manager-root"><div data-dialog-name="sign-in" class="overlay" style="left: 400px; top: 200px; width: 400px; height: 300px">Sign in to continue</div></div>');
  }, cfg.draw_ms);
};
setTimeout(start, cfg.start_ms);
window.TradingViewApi = {
  activeChart: () => ({
    symbol: () => shown.symbol,
    resolution: () => shown.resolution,
    setSymbol: (symbol, done) => {
      if (!cfg.switchable) throw new Error('symbol switching is not available here');
      busy(true);
      setTimeout(() => { shown.symbol = symbol; draw(); busy(false); if (done) done(); }, 300);
    },
    setResolution: (resolution, done) => {
      if (!cfg.switchable) throw new Error('interval switching is not available here');
      shown.resolution = resolution; draw(); if (done) done();
    },
  }),
};
"#;

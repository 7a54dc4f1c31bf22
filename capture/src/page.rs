//! TradingView's chart page as a capture meets it: when the chart is drawn,
//! when the page says the trader's session is not accepted, which part of
//! it is the chart, what covers it, and which symbol it shows.
//!
//! Nothing here could be tried against the live site (this project cannot
//! reach it); every default comes from what public TradingView screenshot
//! tools and TradingView's own page code show, and each names its evidence
//! in [`PageRules`]. All of them are settings, so an operator can follow a
//! changed page without a release. `capture/tests/it/support/chart_server.rs`
//! serves a page of our own with that structure, in every state the tests
//! run capture against.
//!
//! - **Drawn** ([`wait_until_drawn`]): a chart canvas and a legend item are
//!   visible and no busy indicator is, judged by the browser's computed
//!   style and layout (`checkVisibility`, the element's box), never by an
//!   inline `style` attribute (a spinner hidden by its class is hidden). It
//!   must hold at two polls in a row and then through a settle time (slow
//!   indicators draw after the price). The wait runs inside the page (one
//!   `Runtime.evaluate` per slice of up to a second), so it costs no round
//!   trips.
//! - **Signed out**: TradingView shows "Access Denied" at the same URL for a
//!   private layout opened without a valid session (no redirect), its page
//!   code sets `window.is_authenticated`, and signed-out pages show sign-in
//!   links or the sign-in dialog. Any of these ends the capture at once as
//!   an expired session.
//! - **The shot** ([`prepare_shot`]): the overlays' CSS is added only now
//!   (so the checks above see the page as TradingView shows it: the sign-in
//!   dialog lives in the overlay root this CSS hides), then the picture is
//!   clipped to the chart area when the page has one.
//! - **The symbol** ([`chart_state`], [`switch`]): TradingView's internal
//!   chart API (`window.TradingViewApi.activeChart()`, used by several
//!   tools) tells which symbol and interval the chart shows; when they are
//!   not the alert's, the capture switches them through that API, and says
//!   so in the signal when that fails.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cdp::{self, CdpError};
use crate::render::RenderError;

/// The longest one readiness `Runtime.evaluate` waits inside the page before
/// answering "not yet": between two, cancellation is checked.
const READY_SLICE: Duration = Duration::from_secs(1);
/// Pause before evaluating again after the page navigated away under the
/// evaluation or the expression threw outright.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long a switch of symbol or interval may take to show, at most.
const SWITCH_WAIT: Duration = Duration::from_secs(5);
/// Where the overlays' CSS goes in the page.
const HIDE_STYLE_ID: &str = "signal-capture-hide";

/// How the daemon reads TradingView's chart page. Every default names its
/// evidence: public TradingView screenshot tools (four to six independent
/// ones agree on the chart and legend selectors) and TradingView's own page
/// code.
#[derive(Clone, Debug, clap::Args)]
pub struct PageRules {
    /// CSS selector: the drawn chart. Evidence: the chart's panes are
    /// `.chart-markup-table` (often `.chart-markup-table.pane`) or
    /// `.chart-gui-wrapper`, each with its `canvas`, in 4-6 tools.
    #[arg(
        long = "chart-selector",
        env = "CAPTURE_CHART_SELECTOR",
        default_value = ".chart-markup-table canvas, .chart-gui-wrapper canvas"
    )]
    pub chart: String,

    /// CSS selector: a legend item, there once the series and indicators
    /// are loaded (empty: not required). Evidence:
    /// `[data-name="legend-source-item"]` and `legend-source-title` in 4
    /// tools.
    #[arg(
        long = "legend-selector",
        env = "CAPTURE_LEGEND_SELECTOR",
        default_value = "[data-name=\"legend-source-item\"], [data-name=\"legend-source-title\"], .legend-source-title"
    )]
    pub legend: String,

    /// CSS selector: busy indicators; none may be visible. Evidence:
    /// `.tv-spinner--shown`, `[data-name="loading"]` and
    /// `[class^="loaderItem"]` in TradingView's page and the tools.
    #[arg(
        long = "busy-selector",
        env = "CAPTURE_BUSY_SELECTOR",
        default_value = ".tv-spinner--shown, [data-name=\"loading\"], [class^=\"loaderItem\"]"
    )]
    pub busy: String,

    /// How often the page is checked while it loads. The chart counts as
    /// drawn once it is at two polls in a row.
    #[arg(long = "ready-poll", env = "CAPTURE_READY_POLL", default_value = "100ms",
          value_parser = humantime::parse_duration)]
    pub poll: Duration,

    /// How long the chart must stay drawn after that before the shot:
    /// indicators draw after the price (the tools wait and then let the
    /// chart settle for the same reason).
    #[arg(long = "settle", env = "CAPTURE_SETTLE", default_value = "500ms",
          value_parser = humantime::parse_duration)]
    pub settle: Duration,

    /// Extra JavaScript expression that must also be true before the shot
    /// (empty: none).
    #[arg(long = "ready-check", env = "CAPTURE_READY_CHECK", default_value = "")]
    pub ready_check: String,

    /// Part of the page title that means the session was refused (empty:
    /// not checked). Evidence: a private layout opened without a valid
    /// session shows "Access Denied — TradingView" at the same URL.
    #[arg(
        long = "signed-out-title",
        env = "CAPTURE_SIGNED_OUT_TITLE",
        default_value = "Access Denied"
    )]
    pub signed_out_title: String,

    /// A global the page sets to `false` when nobody is signed in (empty:
    /// not checked). Evidence: TradingView's page code sets
    /// `window.is_authenticated`.
    #[arg(
        long = "auth-flag",
        env = "CAPTURE_AUTH_FLAG",
        default_value = "is_authenticated"
    )]
    pub auth_flag: String,

    /// CSS selector: a visible sign-in dialog or link means signed out
    /// (empty: not checked). Evidence: signed-out pages show the sign-in
    /// dialog or sign-in links to `/accounts/signin`.
    #[arg(
        long = "signed-out-selector",
        env = "CAPTURE_SIGNED_OUT_SELECTOR",
        default_value = "[data-dialog-name=\"sign-in\"], .tv-signin-dialog, .js-signin-dialog, a[href^=\"/accounts/signin\"], [data-name=\"header-user-menu-sign-in\"]"
    )]
    pub signed_out_selector: String,

    /// A path prefix that means the page sent the trader to sign in (empty:
    /// not checked).
    #[arg(
        long = "signin-path",
        env = "CAPTURE_SIGNIN_PATH",
        default_value = "/accounts/signin"
    )]
    pub signin_path: String,

    /// Extra JavaScript expression that, when true, also means signed out
    /// (empty: none).
    #[arg(long = "login-check", env = "CAPTURE_LOGIN_CHECK", default_value = "")]
    pub login_check: String,

    /// CSS selector: the chart area the screenshot is clipped to when the
    /// page has one (empty: the whole viewport). Evidence: many tools clip
    /// to `.layout__area--center` instead of hiding the toolbars.
    #[arg(
        long = "clip-selector",
        env = "CAPTURE_CLIP_SELECTOR",
        default_value = ".layout__area--center"
    )]
    pub clip: String,

    /// CSS added just before the shot to hide what covers the chart.
    /// Evidence: TradingView's toasts (`[data-role="toast-container"]`,
    /// `[data-name="base-toast"]`), the floating drawing toolbar
    /// (`.tv-floating-toolbar`), dialogs and menus
    /// (`#overlap-manager-root`), fired-alert dialogs
    /// (`[data-qa-dialog-name="alerts-fired"]`) and the reconnect notice
    /// (`[data-name="reconnect"]`).
    #[arg(
        long = "hide-css",
        env = "CAPTURE_HIDE_CSS",
        default_value = "[data-role=\"toast-container\"], [data-name=\"base-toast\"], .tv-floating-toolbar, #overlap-manager-root, [data-qa-dialog-name=\"alerts-fired\"], [data-name=\"reconnect\"] { display: none !important; }"
    )]
    pub hide_css: String,
}

impl Default for PageRules {
    /// The documented defaults, as `capture` runs without settings.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            rules: PageRules,
        }
        let command = <Only as clap::CommandFactory>::command().mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(["capture"])
            .expect("the defaults parse");
        <Only as clap::FromArgMatches>::from_arg_matches(&matches)
            .expect("the defaults parse")
            .rules
    }
}

impl PageRules {
    /// The built-in history chart ([`crate::history_chart`]): a static page,
    /// drawn once loaded; nobody signs in to it.
    pub fn history_chart() -> Self {
        Self {
            chart: "svg#chart".into(),
            legend: String::new(),
            busy: String::new(),
            poll: Duration::from_millis(20),
            settle: Duration::ZERO,
            ready_check: "document.readyState === 'complete'".into(),
            signed_out_title: String::new(),
            auth_flag: String::new(),
            signed_out_selector: String::new(),
            signin_path: String::new(),
            login_check: String::new(),
            clip: String::new(),
            hide_css: String::new(),
        }
    }
}

/// Where the readiness wait stands between two slices.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Held {
    /// Polls in a row at which the chart was drawn.
    polls: u32,
    /// When (the page's `Date.now()`) it first was, in this run of polls.
    since: Option<f64>,
}

/// What one slice of the readiness wait found.
#[derive(Debug, Deserialize)]
struct Slice {
    state: String,
    #[serde(default)]
    why: Option<String>,
    #[serde(default)]
    held: u32,
    #[serde(default)]
    since: Option<f64>,
}

/// A JavaScript expression that is `false` when `code` is empty.
fn or_false(code: &str) -> &str {
    if code.trim().is_empty() {
        "false"
    } else {
        code
    }
}

/// The expression for one slice of the readiness wait: polls the page every
/// `rules.poll` for up to `slice` and resolves with `{state, why, held,
/// since}`, `state` being `signed_out`, `ready` or `pending`.
fn readiness_expression(rules: &PageRules, held: Held, slice: Duration) -> String {
    let settings = json!({
        "chart": rules.chart,
        "legend": rules.legend,
        "busy": rules.busy,
        "poll_ms": rules.poll.as_millis(),
        "settle_ms": rules.settle.as_millis(),
        "signed_out_title": rules.signed_out_title,
        "auth_flag": rules.auth_flag,
        "signed_out_selector": rules.signed_out_selector,
        "signin_path": rules.signin_path,
    });
    let ready_check = if rules.ready_check.trim().is_empty() {
        "true"
    } else {
        rules.ready_check.as_str()
    };
    let login_check = or_false(&rules.login_check);
    let since = held
        .since
        .map_or_else(|| "null".to_owned(), |s| s.to_string());
    let slice_ms = slice.as_millis();
    let polls = held.polls;
    format!(
        "new Promise((resolve) => {{\
           const r = {settings};\
           const until = Date.now() + {slice_ms};\
           let held = {polls}, since = {since};\
           const visible = (el) => {{\
             const b = el.getBoundingClientRect();\
             if (b.width <= 0 || b.height <= 0 || b.bottom <= 0 || b.right <= 0 || b.top >= innerHeight || b.left >= innerWidth) return false;\
             if (typeof el.checkVisibility === 'function') return el.checkVisibility({{ opacityProperty: true, visibilityProperty: true, checkOpacity: true, checkVisibilityCSS: true }});\
             const s = getComputedStyle(el); return s.visibility === 'visible' && Number(s.opacity) > 0;\
           }};\
           const anyVisible = (sel) => {{ if (!sel) return false; try {{ return Array.from(document.querySelectorAll(sel)).some(visible); }} catch (e) {{ return false; }} }};\
           const holds = (check) => {{ try {{ return !!check(); }} catch (e) {{ return false; }} }};\
           const signedOut = () => {{\
             if (r.signin_path && location.pathname.startsWith(r.signin_path)) return 'the sign-in page';\
             if (r.signed_out_title && document.title.includes(r.signed_out_title)) return 'a page titled ' + JSON.stringify(document.title);\
             if (r.auth_flag && window[r.auth_flag] === false) return 'window.' + r.auth_flag + ' === false';\
             if (anyVisible(r.signed_out_selector)) return 'a sign-in prompt';\
             if (holds(() => ({login_check}))) return 'CAPTURE_LOGIN_CHECK';\
             return null;\
           }};\
           const drawn = () => anyVisible(r.chart) && (!r.legend || anyVisible(r.legend)) && !anyVisible(r.busy) && holds(() => ({ready_check}));\
           const tick = () => {{\
             const why = signedOut();\
             if (why) return resolve({{ state: 'signed_out', why }});\
             if (drawn()) {{ held += 1; if (since === null) since = Date.now(); }} else {{ held = 0; since = null; }}\
             if (held >= 2 && Date.now() - since >= r.poll_ms + r.settle_ms) return resolve({{ state: 'ready', held, since }});\
             if (Date.now() >= until) return resolve({{ state: 'pending', held, since }});\
             setTimeout(tick, r.poll_ms);\
           }};\
           tick();\
         }})"
    )
}

/// Waits, inside the page, until it is drawn (held two polls, then the
/// settle time) or says the session is not accepted, the deadline passes,
/// or the capture is cancelled.
pub(crate) fn wait_until_drawn(
    cdp: &cdp::Connection,
    session: &str,
    rules: &PageRules,
    deadline: Instant,
    page_timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(), RenderError> {
    let mut held = Held::default();
    loop {
        if cancel.is_cancelled() {
            return Err(RenderError::Cancelled);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RenderError::NotReady(page_timeout));
        }
        let slice = left.min(READY_SLICE);
        let answer = cdp.call(
            Some(session),
            "Runtime.evaluate",
            json!({
                "expression": readiness_expression(rules, held, slice),
                "awaitPromise": true,
                "returnByValue": true,
            }),
            slice + READY_SLICE,
        );
        match answer {
            Ok(answer) => {
                match serde_json::from_value::<Slice>(answer["result"]["value"].clone()) {
                    Ok(found) => match found.state.as_str() {
                        "ready" => return Ok(()),
                        "signed_out" => {
                            return Err(RenderError::SessionExpired(
                                found.why.unwrap_or_else(|| "a sign-in prompt".into()),
                            ));
                        }
                        _ => {
                            held = Held {
                                polls: found.held,
                                since: found.since,
                            };
                        }
                    },
                    // The expression itself threw (an extra check that does not
                    // parse): like a check that never holds.
                    Err(_) => std::thread::sleep(RETRY_PAUSE),
                }
            }
            // The page navigated (or replaced its document) under the
            // evaluation: evaluate again in the new one, from scratch.
            Err(CdpError::Protocol { message, .. })
                if message.contains("context") || message.contains("navigat") =>
            {
                held = Held::default();
                std::thread::sleep(RETRY_PAUSE);
            }
            // A renderer too busy to answer: the deadline decides.
            Err(CdpError::Timeout { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
}

/// Evaluates `expression` (awaiting a promise) and returns its value.
fn evaluate(
    cdp: &cdp::Connection,
    session: &str,
    expression: &str,
    timeout: Duration,
) -> Result<serde_json::Value, RenderError> {
    let answer = cdp.call(
        Some(session),
        "Runtime.evaluate",
        json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
        timeout,
    )?;
    Ok(answer["result"]["value"].clone())
}

/// Hides the overlays (the CSS goes in only now, after the checks), lets
/// the page paint twice, and returns the chart area to clip to, when the
/// page has a visible one: `(x, y, width, height)` in CSS pixels.
pub(crate) fn prepare_shot(
    cdp: &cdp::Connection,
    session: &str,
    rules: &PageRules,
    timeout: Duration,
) -> Result<Option<(u32, u32, u32, u32)>, RenderError> {
    let css = serde_json::to_string(&rules.hide_css).expect("a string");
    let clip = serde_json::to_string(&rules.clip).expect("a string");
    let expression = format!(
        "new Promise((resolve) => {{\
           const css = {css}, sel = {clip};\
           if (css && !document.getElementById('{HIDE_STYLE_ID}')) {{\
             const s = document.createElement('style'); s.id = '{HIDE_STYLE_ID}'; s.textContent = css;\
             (document.head || document.documentElement).appendChild(s);\
           }}\
           let done = false;\
           const finish = () => {{\
             if (done) return; done = true;\
             let area = null;\
             const el = sel ? document.querySelector(sel) : null;\
             if (el) {{\
               const b = el.getBoundingClientRect();\
               const x = Math.max(0, Math.floor(b.left)), y = Math.max(0, Math.floor(b.top));\
               const w = Math.floor(Math.min(innerWidth, b.right)) - x, h = Math.floor(Math.min(innerHeight, b.bottom)) - y;\
               if (w >= 1 && h >= 1) area = [x, y, w, h];\
             }}\
             resolve(area);\
           }};\
           requestAnimationFrame(() => requestAnimationFrame(finish));\
           setTimeout(finish, 200);\
         }})"
    );
    let value = evaluate(cdp, session, &expression, timeout)?;
    Ok(serde_json::from_value::<Option<(u32, u32, u32, u32)>>(value).unwrap_or(None))
}

/// What the chart shows, from TradingView's chart API, when the page has it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ChartState {
    /// `EXCHANGE:SYMBOL` (or the bare symbol).
    pub symbol: String,
    /// TradingView's resolution: `60`, `1D`, `W`...
    pub resolution: String,
}

/// The symbol and interval the chart shows, or `None` when the page has no
/// chart API (or it failed).
pub(crate) fn chart_state(
    cdp: &cdp::Connection,
    session: &str,
    timeout: Duration,
) -> Result<Option<ChartState>, RenderError> {
    let value = evaluate(
        cdp,
        session,
        "(() => { try { const api = window.TradingViewApi; if (!api || typeof api.activeChart !== 'function') return null; \
           const c = api.activeChart(); return { symbol: String(c.symbol()), resolution: String(c.resolution()) }; } \
           catch (e) { return null; } })()",
        timeout,
    )?;
    Ok(serde_json::from_value(value).unwrap_or(None))
}

/// Asks the chart API to show `symbol` and `resolution` (either may be
/// `None`: left alone), waiting for each call's callback or promise, at most
/// [`SWITCH_WAIT`] each. `Err` with the page's words when a call threw.
fn request_switch(
    cdp: &cdp::Connection,
    session: &str,
    symbol: Option<&str>,
    resolution: Option<&str>,
) -> Result<Result<(), String>, RenderError> {
    let symbol = serde_json::to_string(&symbol).expect("a string");
    let resolution = serde_json::to_string(&resolution).expect("a string");
    let wait_ms = SWITCH_WAIT.as_millis();
    let expression = format!(
        "new Promise((resolve) => {{\
           const step = (call) => new Promise((ok, fail) => {{\
             let over = false; const done = () => {{ if (!over) {{ over = true; ok(); }} }};\
             try {{ const r = call(done); if (r && typeof r.then === 'function') r.then(done, (e) => fail(e)); }} catch (e) {{ fail(e); }}\
             setTimeout(done, {wait_ms});\
           }});\
           (async () => {{\
             try {{\
               const c = window.TradingViewApi.activeChart();\
               const symbol = {symbol}, resolution = {resolution};\
               if (symbol !== null) await step((done) => c.setSymbol(symbol, done));\
               if (resolution !== null) await step((done) => c.setResolution(resolution, done));\
               resolve('ok');\
             }} catch (e) {{ resolve('error: ' + String(e && e.message || e)); }}\
           }})();\
         }})"
    );
    let value = evaluate(cdp, session, &expression, SWITCH_WAIT * 2 + READY_SLICE)?;
    match value.as_str() {
        Some("ok") => Ok(Ok(())),
        Some(error) => Ok(Err(error.trim_start_matches("error: ").to_owned())),
        None => Ok(Err("the chart API gave no answer".into())),
    }
}

/// What the alert asked the chart to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// `EXCHANGE:SYMBOL`, or the bare ticker when the alert named no exchange.
    pub symbol: String,
    /// The alert's interval in TradingView's resolution form, if it had one.
    pub resolution: Option<String>,
}

impl Expect {
    /// From the alert's symbol and interval (as TradingView's `{{interval}}`
    /// writes it, or `1h`-style).
    pub fn new(symbol: &str, interval: Option<&str>) -> Self {
        Self {
            symbol: symbol.trim().to_owned(),
            resolution: interval.and_then(resolution),
        }
    }

    /// Whether `shown` is what the alert asked for.
    pub fn is_shown(&self, shown: &ChartState) -> bool {
        same_symbol(&self.symbol, &shown.symbol)
            && self
                .resolution
                .as_deref()
                .is_none_or(|want| resolution(&shown.resolution).as_deref() == Some(want))
    }
}

/// Two symbols name the same instrument: equal ignoring case, and when
/// only one names the exchange, the symbols after it are.
fn same_symbol(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim().to_uppercase(), b.trim().to_uppercase());
    match (a.split_once(':'), b.split_once(':')) {
        (Some(_), Some(_)) | (None, None) => a == b,
        (Some((_, a)), None) => a == b,
        (None, Some((_, b))) => a == b,
    }
}

/// An interval in TradingView's resolution form (what its chart URLs and
/// `activeChart().resolution()` use): minutes as a number (`60`), else a
/// count and a unit `S`, `D`, `W`, `M` (`1D`). Reads the form ingest stores
/// in `signals.interval` (`30s`, `15m`, `1h`, `1D`, `1W`, `1M`: a small `m`
/// is minutes, a capital `M` months) and TradingView's own (`60`, `D`,
/// `4H`); `None` for what is no interval.
pub fn resolution(interval: &str) -> Option<String> {
    let interval = interval.trim();
    let digits = interval.chars().take_while(char::is_ascii_digit).count();
    let (count, unit) = interval.split_at(digits);
    if interval.is_empty() || (count.is_empty() && unit.len() != 1) {
        return None;
    }
    let count: u32 = if count.is_empty() {
        1
    } else {
        count.parse().ok().filter(|n| *n > 0)?
    };
    match unit {
        "" | "m" => Some(count.to_string()),
        "h" | "H" => count.checked_mul(60).map(|m| m.to_string()),
        "s" | "S" => Some(format!("{count}S")),
        "d" | "D" => Some(format!("{count}D")),
        "w" | "W" => Some(format!("{count}W")),
        "M" => Some(format!("{count}M")),
        _ => None,
    }
}

/// Makes the chart show what the alert asked for when it shows something
/// else. `Ok(None)`: it does (or the page has no chart API to tell);
/// `Ok(Some(note))`: it still does not, and `note` tells the trader.
pub(crate) fn ensure_symbol(
    cdp: &cdp::Connection,
    session: &str,
    rules: &PageRules,
    expect: &Expect,
    deadline: Instant,
    page_timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Option<String>, RenderError> {
    let call = READY_SLICE;
    let Some(shown) = chart_state(cdp, session, call)? else {
        return Ok(None);
    };
    if expect.is_shown(&shown) {
        return Ok(None);
    }
    let symbol = (!same_symbol(&expect.symbol, &shown.symbol)).then_some(expect.symbol.as_str());
    let resolution = expect
        .resolution
        .as_deref()
        .filter(|want| resolution(&shown.resolution).as_deref() != Some(*want));
    tracing::info!(
        shown = %shown.symbol, shown_resolution = %shown.resolution,
        want = %expect.symbol, want_resolution = ?expect.resolution,
        "The chart shows another symbol or interval than the alert; switching"
    );
    let requested = request_switch(cdp, session, symbol, resolution)?;
    // Until the chart API reports the switch (or the wait is over), then
    // until the new data is drawn.
    let until = deadline.min(Instant::now() + SWITCH_WAIT);
    let mut now_shown = shown.clone();
    while requested.is_ok() && !expect.is_shown(&now_shown) && Instant::now() < until {
        if cancel.is_cancelled() {
            return Err(RenderError::Cancelled);
        }
        std::thread::sleep(rules.poll.min(Duration::from_millis(100)));
        now_shown = chart_state(cdp, session, call)?.unwrap_or_default();
    }
    wait_until_drawn(cdp, session, rules, deadline, page_timeout, cancel)?;
    let after = chart_state(cdp, session, call)?.unwrap_or_default();
    if expect.is_shown(&after) {
        return Ok(None);
    }
    let why = match requested {
        Err(error) => format!("switching it failed ({error})"),
        Ok(()) => "switching it did not take".to_owned(),
    };
    tracing::warn!(shown = %after.symbol, shown_resolution = %after.resolution, %why, "The chart still shows another symbol or interval");
    Ok(Some(mismatch_note(expect, &after, &why)))
}

/// What the trader reads when the picture shows another symbol or interval.
fn mismatch_note(expect: &Expect, shown: &ChartState, why: &str) -> String {
    let wanted = match &expect.resolution {
        Some(resolution) => format!("{} ({resolution})", expect.symbol),
        None => expect.symbol.clone(),
    };
    format!(
        "The chart showed {} ({}) instead of the alert's {wanted}, and {why}: the screenshot shows the chart as it was.",
        shown.symbol, shown.resolution
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_come_from_the_evidence() {
        let rules = PageRules::default();
        assert!(rules.chart.contains(".chart-markup-table canvas"));
        assert!(rules.legend.contains("[data-name=\"legend-source-item\"]"));
        assert!(rules.busy.contains(".tv-spinner--shown"));
        assert!(
            !rules.busy.contains("[class*=\"spinner\"]"),
            "a spinner hidden by class is hidden"
        );
        assert_eq!(rules.signed_out_title, "Access Denied");
        assert_eq!(rules.auth_flag, "is_authenticated");
        assert_eq!(rules.clip, ".layout__area--center");
        assert!(rules.hide_css.contains("#overlap-manager-root"));
        assert_eq!(
            (rules.poll, rules.settle),
            (Duration::from_millis(100), Duration::from_millis(500))
        );
    }

    #[test]
    fn the_readiness_expression_carries_the_rules_and_the_held_state() {
        let rules = PageRules {
            ready_check: "window.extra === 1".into(),
            ..PageRules::default()
        };
        let expression = readiness_expression(
            &rules,
            Held {
                polls: 1,
                since: Some(1234.5),
            },
            Duration::from_millis(750),
        );
        assert!(expression.contains("Date.now() + 750"));
        assert!(expression.contains("let held = 1, since = 1234.5;"));
        assert!(expression.contains("holds(() => (window.extra === 1))"));
        assert!(
            expression.contains("holds(() => (false))"),
            "no extra login check"
        );
        assert!(expression.contains(r#""signed_out_title":"Access Denied""#));
        let fresh = readiness_expression(&rules, Held::default(), READY_SLICE);
        assert!(fresh.contains("let held = 0, since = null;"));
    }

    #[test]
    fn intervals_are_compared_in_tradingviews_form() {
        for (given, want) in [
            ("60", Some("60")),
            ("1h", Some("60")),
            ("4H", Some("240")),
            ("D", Some("1D")),
            ("1d", Some("1D")),
            ("W", Some("1W")),
            ("3M", Some("3M")),
            ("15S", Some("15S")),
            ("30s", Some("30S")),
            ("15m", Some("15")),
            ("1M", Some("1M")),
            ("1W", Some("1W")),
            ("", None),
            ("0", None),
            ("abc", None),
            ("1.5", None),
        ] {
            assert_eq!(resolution(given).as_deref(), want, "{given}");
        }
    }

    #[test]
    fn the_shown_chart_matches_the_alert_or_says_how_not() {
        let expect = Expect::new("BINANCE:BTCUSDT", Some("60"));
        let shown = |symbol: &str, resolution: &str| ChartState {
            symbol: symbol.into(),
            resolution: resolution.into(),
        };
        assert!(expect.is_shown(&shown("BINANCE:BTCUSDT", "60")));
        assert!(expect.is_shown(&shown("binance:btcusdt", "60")));
        assert!(
            expect.is_shown(&shown("BTCUSDT", "60")),
            "no exchange shown"
        );
        assert!(!expect.is_shown(&shown("COINBASE:BTCUSDT", "60")));
        assert!(!expect.is_shown(&shown("BINANCE:BTCUSDT", "1D")));
        assert!(Expect::new("BTCUSDT", None).is_shown(&shown("BINANCE:BTCUSDT", "1D")));
        assert_eq!(
            mismatch_note(
                &expect,
                &shown("NASDAQ:AAPL", "1D"),
                "switching it failed (no)"
            ),
            "The chart showed NASDAQ:AAPL (1D) instead of the alert's BINANCE:BTCUSDT (60), and switching it failed (no): the screenshot shows the chart as it was."
        );
    }
}

//! The capture daemon against each state of the TradingView-shaped test page
//! (`support::chart_server`), with the daemon's default page rules: each
//! ends as a trader would expect. The drawn chart is clipped to the chart
//! area (`drain.rs`); a slow start, spinners hidden by their class and a
//! late legend are waited for, not failed; overlays and the cookie banner
//! are not in the PNG (their regions' pixels are the chart's); another
//! symbol is switched to the alert's, or the signal says it could not be;
//! signed-out pages fail at once as an expired session, and the trader is
//! told once.

use std::sync::Arc;
use std::time::Duration;

use capture::page::{Expect, PageRules};
use capture::render::{Chrome, RenderError, Request, Shot, Source};
use capture::telegram::{RetryPolicy, Telegram};
use cookie_seal::TradingViewSession;
use service_runtime::SecretString;
use stack_harness::{TestDb, Trader};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::support::chart_server::{
    BANNER_RGB, CHART_AREA_X, CHART_AREA_Y, CHART_RGB, LEGEND_RGB, OTHER_RGB, OVERLAY_RGB,
    PageState,
};
use crate::support::daemon::{Knobs, drain, render_settings_with, worker};
use crate::support::{
    ChartServer, Row, alert, decode, fs_storage, link_chat, pixels_near, region, row, session,
    share_of, sign_in, stack, telegram_stub, unlimited_trader,
};

/// A decoded PNG: width, height, RGBA pixels.
type Png = (u32, u32, Vec<u8>);

/// A trader whose chart `chart_id` the server serves in `state`.
async fn trader_with_page(
    db: &Client,
    charts: &ChartServer,
    chart_id: &str,
    state: PageState,
) -> (Trader, TradingViewSession) {
    let trader = unlimited_trader(db).await;
    let tv = session(chart_id);
    sign_in(db, &trader, &tv, chart_id).await;
    charts.accept_in(&tv, chart_id, state);
    (trader, tv)
}

/// One alert of a trader whose chart is served in `state`, captured in
/// drain mode: the signal's row and its stored PNG, if any.
async fn capture_in(state: PageState) -> (Row, Option<Png>, usize) {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let charts = ChartServer::start(200).await;
    let (trader, _) = trader_with_page(&db, &charts, "page", state).await;
    let signal = alert(&db, &trader, 101.5, "long").await;
    let (storage, dir) = fs_storage();
    drain(&test_db, worker(&test_db, &charts, Knobs::new(storage))).await;
    let r = row(&db, signal).await;
    let png = r
        .path
        .as_ref()
        .map(|path| decode(&std::fs::read(dir.join(path)).unwrap()));
    let loads = charts.seen.lock().unwrap().len();
    test_db.drop_db().await;
    (r, png, loads)
}

/// Renders the chart `chart_id` once, straight through [`Chrome`] (no
/// queue), with `rules` and the given extra cookies. Blocking on the pool.
async fn render_directly(
    charts: &ChartServer,
    tv: &TradingViewSession,
    chart_id: &str,
    rules: PageRules,
    extra_cookies: Vec<(String, String)>,
    page_timeout: Duration,
) -> Result<Shot, RenderError> {
    let mut settings =
        render_settings_with(page_timeout.mul_f64(1.25), &charts.egress_entry(), rules);
    settings.extra_cookies = extra_cookies;
    let request = Request {
        source: Source::Chart {
            url: format!(
                "{}/chart/{chart_id}/?symbol=BINANCE%3ABTCUSDT&interval=60",
                charts.base
            ),
            session: tv.clone(),
            expect: Some(Expect::new("BINANCE:BTCUSDT", Some("60"))),
        },
        width: 1280,
        height: 720,
        dark: true,
        cancel: CancellationToken::new(),
    };
    tokio::task::spawn_blocking(move || {
        let chrome = Chrome::new(settings).expect("the Chromium launcher");
        chrome.capture(&request)
    })
    .await
    .unwrap()
}

/// The clipped PNG's region for a rectangle given in viewport pixels.
fn in_png(png: &Png, x: u32, y: u32, w: u32, h: u32) -> Vec<u8> {
    region(&png.2, png.0, x - CHART_AREA_X, y - CHART_AREA_Y, w, h)
}

#[tokio::test]
async fn a_slow_app_start_is_waited_for_not_retried() {
    let (r, png, loads) = capture_in(PageState::SlowStart { ms: 2000 }).await;
    assert_eq!(r.status, "completed", "{r:?}");
    assert_eq!(loads, 1, "one page load: the first attempt waited");
    let png = png.unwrap();
    assert!(share_of(&png.2, CHART_RGB) > 0.8, "the chart was drawn");
}

#[tokio::test]
async fn spinners_hidden_by_their_class_do_not_block() {
    let (r, png, loads) = capture_in(PageState::HiddenSpinner).await;
    assert_eq!(r.status, "completed", "{r:?}");
    assert_eq!(loads, 1);
    assert!(share_of(&png.unwrap().2, CHART_RGB) > 0.8);

    // The page does exercise the difference: the check that went by the
    // inline style (the default before) never lets this page count as drawn.
    let charts = ChartServer::start(200).await;
    let tv = session("spinner");
    charts.accept_in(&tv, "spinner", PageState::HiddenSpinner);
    let old = PageRules {
        ready_check: "!document.querySelector('.tv-spinner--shown, [class*=\"spinner\"]:not([style*=\"display: none\"])')"
            .into(),
        ..PageRules::default()
    };
    let error = render_directly(
        &charts,
        &tv,
        "spinner",
        old,
        Vec::new(),
        Duration::from_secs(3),
    )
    .await
    .expect_err("the inline-style check waits for ever");
    assert!(matches!(error, RenderError::NotReady(_)), "{error:?}");
}

#[tokio::test]
async fn a_late_legend_is_waited_for() {
    let (r, png, _) = capture_in(PageState::LateLegend { ms: 1500 }).await;
    assert_eq!(r.status, "completed", "{r:?}");
    let png = png.unwrap();
    // The legend sits at (8, 8) in the chart area, 200 x 24.
    let legend = in_png(&png, CHART_AREA_X + 10, CHART_AREA_Y + 10, 190, 20);
    assert!(
        share_of(&legend, LEGEND_RGB) > 0.5,
        "the legend is in the picture"
    );
}

/// The overlays' rectangles on the test page, in viewport pixels (shrunk by
/// two pixels from their edges).
const OVERLAYS: [(u32, u32, u32, u32); 4] = [
    // The toast, bottom right of the 1280 x 720 viewport (above the banner).
    (1280 - 320 + 2, 720 - 160 + 2, 296, 76),
    // The floating toolbar.
    (402, 62, 196, 36),
    // The fired-alert dialog.
    (502, 252, 296, 146),
    // The reconnect notice.
    (82, 582, 246, 36),
];

#[tokio::test]
async fn overlays_and_the_cookie_banner_are_not_in_the_png() {
    let (r, png, _) = capture_in(PageState::Overlays).await;
    assert_eq!(r.status, "completed", "{r:?}");
    let png = png.unwrap();
    for (x, y, w, h) in OVERLAYS {
        let pixels = in_png(&png, x, y, w, h);
        assert!(
            share_of(&pixels, CHART_RGB) > 0.99,
            "the chart, not an overlay, at ({x}, {y})"
        );
    }
    assert_eq!(pixels_near(&png.2, OVERLAY_RGB), 0, "no overlay anywhere");
    assert_eq!(pixels_near(&png.2, BANNER_RGB), 0, "no cookie banner");

    // The same page without the CSS and without the banner's cookie: the
    // regions above do show the overlays, and the banner shows.
    let charts = ChartServer::start(200).await;
    let tv = session("overlays");
    charts.accept_in(&tv, "overlays", PageState::Overlays);
    let bare = PageRules {
        hide_css: String::new(),
        ..PageRules::default()
    };
    let shot = render_directly(
        &charts,
        &tv,
        "overlays",
        bare,
        Vec::new(),
        Duration::from_secs(8),
    )
    .await
    .expect("rendered");
    let bare = decode(&shot.png);
    for (x, y, w, h) in OVERLAYS {
        let pixels = in_png(&bare, x, y, w, h);
        assert!(
            share_of(&pixels, OVERLAY_RGB) > 0.9,
            "without the CSS the overlay at ({x}, {y}) is there"
        );
    }
    assert!(
        share_of(&bare.2, BANNER_RGB) > 0.01,
        "and the cookie banner"
    );
}

#[tokio::test]
async fn another_symbol_is_switched_to_the_alerts() {
    let (r, png, loads) = capture_in(PageState::OtherSymbol { switchable: true }).await;
    assert_eq!(r.status, "completed", "{r:?}");
    assert_eq!(r.error, None, "nothing to tell the trader");
    assert_eq!(loads, 1);
    let png = png.unwrap();
    assert!(
        share_of(&png.2, CHART_RGB) > 0.8,
        "the alert's symbol is drawn"
    );
    assert_eq!(pixels_near(&png.2, OTHER_RGB), 0, "not the other one");
}

#[tokio::test]
async fn a_symbol_that_cannot_be_switched_is_reported_on_the_signal() {
    let (r, png, _) = capture_in(PageState::OtherSymbol { switchable: false }).await;
    assert_eq!(r.status, "completed", "the picture is still stored: {r:?}");
    assert_eq!(
        r.error.as_deref(),
        Some(
            "The chart showed NASDAQ:AAPL (1D) instead of the alert's BINANCE:BTCUSDT (60), and switching it failed \
             (symbol switching is not available here): the screenshot shows the chart as it was."
        )
    );
    assert!(
        share_of(&png.unwrap().2, OTHER_RGB) > 0.8,
        "what the chart showed"
    );
}

async fn cookies_valid(db: &Client, trader: &Trader) -> bool {
    db.query_one(
        "select cookies_valid from public.user_config where user_id = $1",
        &[&trader.id],
    )
    .await
    .unwrap()
    .get(0)
}

async fn notices(db: &Client, trader: &Trader) -> Vec<String> {
    db.query(
        "select kind from public.trader_notices where user_id = $1",
        &[&trader.id],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn signed_out_pages_fail_at_once_as_an_expired_session_and_the_trader_is_told_once() {
    let test_db = TestDb::create(&stack()).await;
    let mut db = test_db.client().await;
    let charts = ChartServer::start(200).await;
    // Sealed and marked valid, but the server does not accept it: the
    // private layout's "Access Denied" page.
    let denied = unlimited_trader(&db).await;
    sign_in(&db, &denied, &session("denied"), "denied").await;
    let (wall, _) = trader_with_page(&db, &charts, "wall", PageState::SignInWall).await;
    let (flag, _) = trader_with_page(&db, &charts, "flag", PageState::SignedOutFlag).await;
    link_chat(&mut db, &denied, "-100777").await;
    db.execute(
        "update public.user_config set notify_on_failure = false where user_id = $1",
        &[&denied.id],
    )
    .await
    .unwrap();
    let mut signals = Vec::new();
    for trader in [&denied, &wall, &flag] {
        signals.push(alert(&db, trader, 1.0, "short").await);
    }
    // One answer: a second message would find none and fail the test.
    let (bot_api, api) = telegram_stub::Stub::start(&[(200, r#"{"ok":true,"result":{}}"#)]).await;
    let (storage, dir) = fs_storage();
    let mut knobs = Knobs::new(storage);
    knobs.telegram = Some(Arc::new(Telegram::new(
        api.parse().unwrap(),
        SecretString::from("42:bot-token"),
        RetryPolicy::default(),
    )));
    let worker = worker(&test_db, &charts, knobs);
    drain(&test_db, Arc::clone(&worker)).await;

    for (trader, signal) in [&denied, &wall, &flag].into_iter().zip(&signals) {
        let r = row(&db, *signal).await;
        assert_eq!(r.status, "failed", "{r:?}");
        assert_eq!(r.attempts, Some(1), "not retried: {r:?}");
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .contains("Paste fresh sessionid"),
            "{r:?}"
        );
        assert!(!cookies_valid(&db, trader).await, "cookies_valid is false");
        assert_eq!(notices(&db, trader).await, ["tradingview_session_expired"]);
    }
    assert!(!dir.exists(), "nothing stored");
    let metrics = worker.metrics.render();
    assert!(
        metrics.contains(r#"capture_outcomes_total{outcome="failed",reason="session_expired"} 3"#),
        "{metrics}"
    );

    // The next alert uses the built-in chart; nobody is told again.
    let next = alert(&db, &wall, 2.0, "long").await;
    drain(&test_db, worker).await;
    assert_eq!(row(&db, next).await.status, "completed");
    assert_eq!(notices(&db, &wall).await.len(), 1);

    // The message goes out in a task of its own, after the row is recorded.
    for _ in 0..100 {
        if !bot_api.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = bot_api.requests();
    assert_eq!(
        requests.len(),
        1,
        "one message, to the one trader who wants them"
    );
    assert_eq!(requests[0].path, "/bot42:bot-token/sendMessage");
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["chat_id"], "-100777");
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("Your TradingView session has expired"),
        "{body}"
    );
    test_db.drop_db().await;
}

//! The capture daemon end to end, in process: a test database of its own
//! (the queue is global), real Chromium, the TradingView-shaped chart page
//! served by the test (see `support::chart_server`; its states are
//! `page.rs`'s), and drain mode so tests never sleep and guess.

use std::sync::Arc;
use std::time::Duration;

use capture::render::Chrome;
use capture::storage::Storage;
use capture::telegram::{RetryPolicy, Telegram};
use service_runtime::SecretString;
use stack_harness::TestDb;

use crate::support::chart_server::{
    CHART_AREA_X, CHART_AREA_Y, CHART_RGB, HEADER_RGB, TOOLBAR_RGB,
};
use crate::support::daemon::{Knobs, drain, worker};
use crate::support::storage_stub::StorageStub;
use crate::support::telegram_stub;
use crate::support::{
    ChartServer, alert, decode, distinct_colours, fs_storage, link_chat, row, session, share_of,
    sign_in, stack, unlimited_trader,
};

/// The browser contexts Chromium holds besides the spares, once the
/// housekeeping thread has caught up: none when every capture's context was
/// disposed of. Blocking.
fn leftover_contexts(chrome: &Chrome) -> Vec<String> {
    chrome.settle();
    let spares = chrome.spare_contexts();
    chrome
        .open_contexts()
        .unwrap()
        .into_iter()
        .filter(|context| !spares.contains(context))
        .collect()
}

/// Asserts that Chromium holds no context but the spare's, and that the
/// check would catch one left behind. Blocking.
fn only_spares_are_left(chrome: &Chrome) {
    assert_eq!(
        leftover_contexts(chrome),
        Vec::<String>::new(),
        "every capture's browser context was disposed of, not left in Chromium"
    );
    assert_eq!(chrome.spare_contexts().len(), 1, "one spare waits ready");
    // The check above does catch a context left behind.
    let devtools = chrome.devtools().expect("Chromium runs");
    let leaked = devtools
        .call(
            None,
            "Target.createBrowserContext",
            serde_json::json!({}),
            Duration::from_secs(5),
        )
        .unwrap()["browserContextId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(leftover_contexts(chrome), vec![leaked.clone()]);
    devtools
        .call(
            None,
            "Target.disposeBrowserContext",
            serde_json::json!({ "browserContextId": leaked }),
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(leftover_contexts(chrome), Vec::<String>::new());
}

#[tokio::test]
async fn session_chart_and_fallback_chart_end_as_real_pngs() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let charts = ChartServer::start(400).await;

    let with_session = unlimited_trader(&db).await;
    let tv = session("a");
    sign_in(&db, &with_session, &tv, "chartA").await;
    charts.accept(&tv, "chartA");
    let without = unlimited_trader(&db).await;
    db.execute(
        "update public.user_config set screenshot_resolution = '1080p', chart_theme = 'light' where user_id = $1",
        &[&without.id],
    )
    .await
    .unwrap();

    let chart_signal = alert(&db, &with_session, 101.5, "long").await;
    alert(&db, &without, 100.0, "long").await;
    alert(&db, &without, 104.0, "short").await;
    let fallback_signal = alert(&db, &without, 102.0, "long").await;

    let (storage, dir) = fs_storage();
    let worker = worker(&test_db, &charts, Knobs::new(storage));
    drain(&test_db, Arc::clone(&worker)).await;

    let chart = row(&db, chart_signal).await;
    assert_eq!(chart.status, "completed", "{chart:?}");
    assert_eq!(chart.job_state, None, "the job is gone");
    let path = chart.path.unwrap();
    assert_eq!(path, format!("{}/{chart_signal}.png", with_session.id));
    assert_eq!(chart.url, None, "fs storage has no public URL");
    let (w, h, pixels) = decode(&std::fs::read(dir.join(&path)).unwrap());
    assert_eq!(
        (w, h),
        (1280 - CHART_AREA_X, 720 - CHART_AREA_Y),
        "clipped to the chart area of the 1280x720 viewport"
    );
    assert!(
        share_of(&pixels, CHART_RGB) > 0.8,
        "the chart was drawn before the screenshot"
    );
    assert!(
        share_of(&pixels, HEADER_RGB) + share_of(&pixels, TOOLBAR_RGB) < 0.001,
        "no header or toolbar"
    );

    let seen = charts.seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for request in &seen {
        assert!(
            request
                .path
                .starts_with("/chart/chartA/?symbol=BINANCE%3ABTCUSDT&interval=60"),
            "{request:?}"
        );
        assert!(
            request
                .cookies
                .contains(&format!("sessionid={}", tv.sessionid))
        );
        assert!(request.cookies.contains("sessionid_sign=sign-a"));
        assert!(
            request
                .cookies
                .contains("cookiePrivacyPreferenceBannerProduction=accepted")
        );
    }

    let fallback = row(&db, fallback_signal).await;
    assert_eq!(fallback.status, "completed", "{fallback:?}");
    let (w, h, pixels) = decode(&std::fs::read(dir.join(fallback.path.unwrap())).unwrap());
    assert_eq!((w, h), (1920, 1080), "1080p preference");
    assert!(
        share_of(&pixels, [255, 255, 255]) > 0.5,
        "light theme background"
    );
    assert!(
        distinct_colours(&pixels) > 5,
        "line, markers and text were drawn"
    );
    assert!(share_of(&pixels, [0x26, 0xa6, 0x9a]) > 0.0, "long markers");
    assert!(share_of(&pixels, [0xef, 0x53, 0x50]) > 0.0, "short marker");

    let metrics = worker.metrics.render();
    assert!(
        metrics.contains(r#"capture_outcomes_total{outcome="completed",reason="chart"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"capture_outcomes_total{outcome="completed",reason="fallback"} 3"#),
        "{metrics}"
    );
    let chrome = Arc::clone(&worker.chrome);
    tokio::task::spawn_blocking(move || only_spares_are_left(&chrome))
        .await
        .unwrap();
    test_db.drop_db().await;
}

#[tokio::test]
async fn two_traders_at_once_each_page_sees_only_its_own_cookies() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let charts = ChartServer::start(800).await;
    let mut traders = Vec::new();
    for name in ["one", "two"] {
        let trader = unlimited_trader(&db).await;
        let tv = session(name);
        let chart_id = format!("chart{name}");
        sign_in(&db, &trader, &tv, &chart_id).await;
        charts.accept(&tv, &chart_id);
        traders.push((trader, tv, chart_id));
    }
    let mut signals = Vec::new();
    for _ in 0..2 {
        for (trader, _, _) in &traders {
            signals.push(alert(&db, trader, 10.0, "long").await);
        }
    }
    let (storage, _dir) = fs_storage();
    let mut knobs = Knobs::new(storage);
    // Three pages at once on a loaded machine may outlast the default 10 s
    // and be retried, which would load a page twice: each page once is what
    // this test counts.
    knobs.job_timeout = Duration::from_secs(30);
    let worker = worker(&test_db, &charts, knobs);
    drain(&test_db, worker).await;

    for signal in signals {
        assert_eq!(row(&db, signal).await.status, "completed");
    }
    let seen = charts.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "each page loaded once: {seen:?}");
    for request in seen {
        let (_, tv, _) = traders
            .iter()
            .find(|(_, _, chart)| request.path.starts_with(&format!("/chart/{chart}/")))
            .expect("a known chart");
        let others = traders
            .iter()
            .filter(|(_, other, _)| other.sessionid != tv.sessionid);
        assert!(request.cookies.contains(&tv.sessionid), "{request:?}");
        for (_, other, _) in others {
            assert!(
                !request.cookies.contains(&other.sessionid),
                "cookies leaked: {request:?}"
            );
            assert!(
                !request.cookies.contains(&other.sessionid_sign),
                "cookies leaked: {request:?}"
            );
        }
    }
    test_db.drop_db().await;
}

#[tokio::test]
async fn a_page_that_never_gets_ready_is_retried_then_fails_with_a_reason() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let charts = ChartServer::start(50).await;
    let trader = unlimited_trader(&db).await;
    let tv = session("never");
    sign_in(&db, &trader, &tv, "never").await;
    charts.accept(&tv, "never");
    let signal = alert(&db, &trader, 1.0, "long").await;
    let (storage, _dir) = fs_storage();
    let mut knobs = Knobs::new(storage);
    knobs.job_timeout = Duration::from_secs(4);
    // The chart id travels in the path; `never=1` makes the page hang.
    knobs.chart_query = "&never=1";
    let worker = worker(&test_db, &charts, knobs);
    // As the binary does: Chromium's launch is not on the first job's clock.
    let chrome = Arc::clone(&worker.chrome);
    tokio::task::spawn_blocking(move || chrome.warm_up())
        .await
        .unwrap()
        .unwrap();
    drain(&test_db, Arc::clone(&worker)).await;

    let r = row(&db, signal).await;
    assert_eq!(r.status, "failed", "{r:?}");
    assert_eq!(r.job_state.as_deref(), Some("failed"));
    assert_eq!(r.attempts, Some(3), "retried twice");
    // The page's own deadline (80 % of the job timeout) normally wins; on a
    // loaded machine the job's hard timeout may come first. Both say why.
    let error = r.error.unwrap();
    assert!(
        error.contains("did not finish loading") || error.contains("took longer than"),
        "{error}"
    );
    assert_eq!(charts.seen.lock().unwrap().len(), 3);
    test_db.drop_db().await;
}

#[tokio::test]
async fn chromium_killed_mid_capture_is_relaunched_and_the_job_retried() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let charts = ChartServer::start(2500).await;
    let trader = unlimited_trader(&db).await;
    let tv = session("kill");
    sign_in(&db, &trader, &tv, "k").await;
    charts.accept(&tv, "k");
    let signal = alert(&db, &trader, 1.0, "long").await;
    let (storage, dir) = fs_storage();
    let worker = worker(&test_db, &charts, Knobs::new(storage));
    let chrome = Arc::clone(&worker.chrome);
    let seen = Arc::clone(&charts.seen);
    let killer = tokio::spawn(async move {
        // Wait until the page is loading, then kill the browser under it.
        while seen.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid = chrome.pid().expect("Chromium runs");
        let status = std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
        pid
    });
    drain(&test_db, Arc::clone(&worker)).await;
    let killed_pid = killer.await.unwrap();

    let r = row(&db, signal).await;
    assert_eq!(r.status, "completed", "{r:?}");
    assert_ne!(worker.chrome.pid(), Some(killed_pid), "a new Chromium");
    assert!(dir.join(r.path.unwrap()).exists());
    let metrics = worker.metrics.render();
    assert!(
        metrics.contains(r#"capture_outcomes_total{outcome="retry",reason="browser"} 1"#),
        "{metrics}"
    );
    test_db.drop_db().await;
}

#[tokio::test]
async fn storage_upload_contract() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let charts = ChartServer::start(10).await;
    let trader = unlimited_trader(&db).await;

    let stub = StorageStub::start(&[200]).await;
    let key = "eyJhbGciOiJIUzI1NiJ9.legacy.jwt";
    let storage = Storage::supabase(
        stub.url(),
        "screenshots".into(),
        SecretString::from(key.to_owned()),
        true,
    )
    .unwrap();
    let signal = alert(&db, &trader, 5.0, "long").await;
    drain(&test_db, worker(&test_db, &charts, Knobs::new(storage))).await;
    let r = row(&db, signal).await;
    assert_eq!(r.status, "completed", "{r:?}");
    let path = format!("{}/{signal}.png", trader.id);
    assert_eq!(r.path.as_deref(), Some(path.as_str()));
    assert_eq!(
        r.url,
        Some(format!(
            "{}/storage/v1/object/public/screenshots/{path}",
            stub.base
        )),
        "public bucket"
    );
    let uploads = stub.requests();
    assert_eq!(uploads.len(), 1);
    let upload = &uploads[0];
    assert_eq!(upload.method, "POST");
    assert_eq!(
        upload.path,
        format!("/storage/v1/object/screenshots/{path}")
    );
    assert_eq!(upload.header("apikey"), Some(key));
    assert_eq!(
        upload.header("authorization"),
        Some(format!("Bearer {key}").as_str())
    );
    assert_eq!(upload.header("x-upsert"), Some("true"));
    assert_eq!(upload.header("content-type"), Some("image/png"));
    assert_eq!(upload.header("cache-control"), Some("max-age=3600"));
    let (w, h, _) = decode(&upload.body);
    assert_eq!(
        (w, h),
        (1280, 720),
        "the body is the PNG (the built-in chart's, whole)"
    );
    test_db.drop_db().await;
}

/// Storage answers a refused key with HTTP 400 and `"statusCode":"403"` in
/// its body: no retry can fix that, so the job fails at once and says so;
/// a 503 from its gateway is retried on the queue's schedule (2 s, then 4 s)
/// and then fails as unavailable.
#[tokio::test]
async fn storage_errors_fail_at_once_or_are_retried_as_storage_means_them() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let charts = ChartServer::start(10).await;
    let trader = unlimited_trader(&db).await;
    let storage_at = |stub: &StorageStub| {
        Storage::supabase(
            stub.url(),
            "screenshots".into(),
            SecretString::from("sb_secret_new_style".to_owned()),
            false,
        )
        .unwrap()
    };

    let refusing = StorageStub::start(&[403]).await;
    let refused = alert(&db, &trader, 6.0, "short").await;
    let refusing_worker = worker(&test_db, &charts, Knobs::new(storage_at(&refusing)));
    drain(&test_db, Arc::clone(&refusing_worker)).await;
    let r = row(&db, refused).await;
    assert_eq!(r.status, "failed", "{r:?}");
    assert_eq!(r.attempts, Some(1), "not retried: {r:?}");
    assert_eq!(
        r.error.as_deref(),
        Some(
            "The screenshot could not be stored: storage refused the screenshot service's credentials (a problem on our side, not with your chart)."
        )
    );
    assert_eq!(refusing.requests().len(), 1);
    assert!(
        refusing
            .requests()
            .iter()
            .all(|u| u.header("authorization").is_none()),
        "new secret keys are not sent as a bearer"
    );
    let metrics = refusing_worker.metrics.render();
    assert!(
        metrics.contains(r#"capture_outcomes_total{outcome="failed",reason="storage"} 1"#),
        "{metrics}"
    );

    let unavailable = StorageStub::start(&[503]).await;
    let retried = alert(&db, &trader, 7.0, "long").await;
    drain(
        &test_db,
        worker(&test_db, &charts, Knobs::new(storage_at(&unavailable))),
    )
    .await;
    let r = row(&db, retried).await;
    assert_eq!(r.status, "failed", "{r:?}");
    assert_eq!(r.attempts, Some(3), "retried twice: {r:?}");
    assert_eq!(
        r.error.as_deref(),
        Some("The screenshot could not be stored: the storage service was unavailable.")
    );
    let uploads = unavailable.requests();
    assert_eq!(uploads.len(), 3);
    let gaps: Vec<Duration> = uploads.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps[0] >= Duration::from_secs(2) && gaps[1] >= Duration::from_secs(4),
        "on the queue's schedule (2 s, then 4 s): {gaps:?}"
    );
    let stuck: i64 = db
        .query_one(
            "select count(*) from public.signals where screenshot_status = 'processing'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stuck, 0, "nothing stuck in processing");
    test_db.drop_db().await;
}

/// A trader who switched Telegram on gets the screenshot in their chat once
/// the capture is recorded; the stub Bot API sees exactly that request.
#[tokio::test]
async fn a_completed_capture_is_sent_to_the_traders_telegram_chat() {
    let test_db = TestDb::create(&stack()).await;
    let mut db = test_db.client().await;
    let charts = ChartServer::start(100).await;
    let trader = unlimited_trader(&db).await;
    link_chat(&mut db, &trader, "-100123").await;
    let quiet = unlimited_trader(&db).await;
    let signal = alert(&db, &trader, 101.0, "long").await;
    alert(&db, &quiet, 99.0, "short").await;

    // One answer: a second message would find none and fail the test.
    let (bot_api, api) = telegram_stub::Stub::start(&[(200, r#"{"ok":true,"result":{}}"#)]).await;
    let (storage, dir) = fs_storage();
    let mut knobs = Knobs::new(storage);
    knobs.telegram = Some(Arc::new(Telegram::new(
        api.parse().unwrap(),
        SecretString::from("42:bot-token"),
        RetryPolicy::default(),
    )));
    drain(&test_db, worker(&test_db, &charts, knobs)).await;

    // The message is sent after the row is completed, in its own task.
    let mut requests = Vec::new();
    for _ in 0..100 {
        requests = bot_api.requests();
        if !requests.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        requests.len(),
        1,
        "one message, for the trader who asked only"
    );
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/bot42:bot-token/sendPhoto");
    let stored = std::fs::read(dir.join(format!("{}/{signal}.png", trader.id))).unwrap();
    assert!(
        request
            .body
            .windows(stored.len())
            .any(|w| w == stored.as_slice()),
        "the stored PNG is the photo sent"
    );
    assert!(
        request.body.windows(7).any(|w| w == b"-100123"),
        "to the trader's chat"
    );
    test_db.drop_db().await;
}

//! Pre-warmed spare pages: each serves exactly one capture in a context
//! nobody used before and is disposed of after it, and a relaunched
//! Chromium starts with spares of its own, never the dead one's.

use std::sync::Arc;
use std::time::Duration;

use capture::render::{Chrome, Request, Source};
use tokio_util::sync::CancellationToken;

use crate::support::daemon::render_settings;
use crate::support::{ChartServer, session};

fn chart(charts: &ChartServer, tv: &cookie_seal::TradingViewSession) -> Request {
    Request {
        source: Source::Chart {
            url: format!("{}/chart/spare/?symbol=X", charts.base),
            session: tv.clone(),
            expect: None,
        },
        width: 640,
        height: 360,
        dark: true,
        cancel: CancellationToken::new(),
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

#[tokio::test]
async fn a_spare_serves_one_capture_and_is_then_disposed_of() {
    let charts = ChartServer::start(50).await;
    let tv = session("spare");
    charts.accept(&tv, "spare");
    let chrome = Chrome::new(render_settings(
        Duration::from_secs(10),
        &charts.egress_entry(),
    ))
    .unwrap();
    let request = chart(&charts, &tv);
    let used = blocking({
        let chrome = Arc::clone(&chrome);
        move || {
            chrome.warm_up().unwrap();
            let mut used = Vec::new();
            for _ in 0..4 {
                let spares = chrome.spare_contexts();
                assert_eq!(spares.len(), 1, "one spare waits before each capture");
                let shot = chrome.capture(&request).unwrap();
                assert!(shot.png.starts_with(b"\x89PNG"));
                chrome.settle();
                let open = chrome.open_contexts().unwrap();
                assert!(
                    !open.contains(&spares[0]),
                    "the used spare's context is gone"
                );
                assert!(!chrome.spare_contexts().contains(&spares[0]));
                assert_eq!(open, chrome.spare_contexts(), "only the new spare is left");
                used.push(spares[0].clone());
            }
            used
        }
    })
    .await;
    let mut distinct = used.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        used.len(),
        "no context served twice: {used:?}"
    );

    // What the page saw: the chart sets a cookie; a reused context would
    // have sent it back.
    let seen = charts.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    for request in seen {
        assert!(
            request
                .cookies
                .contains(&format!("sessionid={}", tv.sessionid)),
            "{request:?}"
        );
        assert!(
            !request.cookies.contains("visited=1"),
            "a used context: {request:?}"
        );
    }
}

#[tokio::test]
async fn a_relaunched_chromium_gets_new_spares_and_the_old_ones_are_dropped() {
    let charts = ChartServer::start(50).await;
    let tv = session("relaunch");
    charts.accept(&tv, "spare");
    let chrome = Chrome::new(render_settings(
        Duration::from_secs(10),
        &charts.egress_entry(),
    ))
    .unwrap();
    let request = chart(&charts, &tv);
    blocking(move || {
        chrome.warm_up().unwrap();
        let old_spares = chrome.spare_contexts();
        assert_eq!(old_spares.len(), 1);
        let old_pid = chrome.pid().unwrap();
        assert!(
            std::process::Command::new("kill")
                .args(["-9", &old_pid.to_string()])
                .status()
                .unwrap()
                .success()
        );

        // Once the connection has noticed (a capture racing the kill fails
        // and is retried, as chromium_killed_mid_capture shows), the next
        // capture relaunches and renders on a new spare.
        let devtools = chrome.devtools().unwrap();
        let started = std::time::Instant::now();
        while !devtools.is_closed() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the socket closed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let shot = chrome.capture(&request).unwrap();
        assert!(shot.png.starts_with(b"\x89PNG"));
        let new_pid = chrome.pid().unwrap();
        assert_ne!(new_pid, old_pid, "a new Chromium");
        chrome.settle();
        let spares = chrome.spare_contexts();
        assert_eq!(spares.len(), 1, "the new Chromium has its spare");
        assert!(
            spares.iter().all(|s| !old_spares.contains(s)),
            "no spare of the dead Chromium survives: {spares:?} vs {old_spares:?}"
        );
        assert_eq!(chrome.open_contexts().unwrap(), spares);
    })
    .await;
    assert_eq!(charts.seen.lock().unwrap().len(), 1);
}

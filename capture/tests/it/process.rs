//! The `capture` binary as operators run it: woken by NOTIFY, stopped by
//! SIGTERM, killed with `kill -9`.

use std::path::Path;
use std::time::{Duration, Instant};

use stack_harness::TestDb;
use tokio_postgres::Client;

use crate::support::daemon::{Spawn, spawn_daemon};
use crate::support::{
    ChartServer, alert, fs_storage, row, session, sign_in, signed_in_trader, stack,
    unlimited_trader,
};

/// Process ids whose parent is `pid` (Chromium under the daemon).
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat"))
            && let Some((_, rest)) = stat.rsplit_once(") ")
            && rest.split(' ').nth(1) == Some(&pid.to_string())
        {
            found.push(child);
        }
    }
    found
}

/// Every process below `pid`: Chromium and its renderers under the daemon.
pub(crate) fn descendants(pid: u32) -> Vec<u32> {
    let mut found = children(pid);
    let mut i = 0;
    while i < found.len() {
        found.extend(children(found[i]));
        i += 1;
    }
    found
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

pub(crate) async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the daemon has raised the wake-up flag: it claimed everything due and sleeps.
async fn wait_until_idle(db: &Client) {
    wait_for(
        "the daemon to be idle",
        Duration::from_secs(20),
        async || {
            db.query_one("select daemon_waiting from private.capture_wakeup", &[])
                .await
                .is_ok_and(|r| r.get::<_, bool>(0))
        },
    )
    .await;
}

fn pngs(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    if let Ok(users) = std::fs::read_dir(dir) {
        for user in users.flatten() {
            for file in std::fs::read_dir(user.path()).unwrap().flatten() {
                files.push(file.file_name().to_string_lossy().into_owned());
            }
        }
    }
    files
}

#[tokio::test]
async fn a_notify_wakes_the_idle_daemon_and_health_reports_it() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let charts = ChartServer::start(100).await;
    let trader = signed_in_trader(&db, &charts, "wake").await;
    let (_, dir) = fs_storage();
    // A poll interval far longer than the test: only the NOTIFY can wake it.
    let daemon = spawn_daemon(
        &test_db,
        &dir,
        Spawn {
            charts: Some(&charts),
            env: &[("CAPTURE_POLL_INTERVAL", "10m")],
            ..Spawn::default()
        },
    );
    let port = daemon.health_port;

    // Idle means the daemon raised the wake-up flag.
    wait_until_idle(&db).await;
    let sent = Instant::now();
    let signal = alert(&db, &trader, 3.0, "long").await;
    wait_for("the capture", Duration::from_secs(20), async || {
        row(&db, signal).await.status == "completed"
    })
    .await;
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "woken by NOTIFY, not the poll ({took:?})"
    );

    let http = reqwest::Client::new();
    let health: serde_json::Value = serde_json::from_str(
        &http
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["queue_length"], 0);
    assert_eq!(health["active_workers"], 1);
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"capture_outcomes_total{outcome="completed",reason="chart"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("capture_duration_seconds_count 1"),
        "{metrics}"
    );

    daemon.signal("-TERM");
    let status = daemon.exit_status().await;
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let workers: i64 = db
        .query_one("select count(*) from private.capture_workers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(workers, 0, "deregistered on the way out");
    test_db.drop_db().await;
}

#[tokio::test]
async fn sigterm_gives_in_flight_jobs_back_within_the_grace_period() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let charts = ChartServer::start(100).await;
    let trader = signed_in_trader(&db, &charts, "term").await;
    let signal = alert(&db, &trader, 3.0, "long").await;
    let (_, dir) = fs_storage();
    let template = format!("{}/chart/{{chart_id}}/?never=1", charts.base);
    let daemon = spawn_daemon(
        &test_db,
        &dir,
        Spawn {
            charts: Some(&charts),
            env: &[
                ("CAPTURE_SHUTDOWN_GRACE", "1s"),
                ("CAPTURE_CHART_URL_TEMPLATE", &template),
            ],
            ..Spawn::default()
        },
    );
    wait_for(
        "the capture to start",
        Duration::from_secs(20),
        async || !charts.seen.lock().unwrap().is_empty(),
    )
    .await;
    let stopping = Instant::now();
    daemon.signal("-TERM");
    let status = daemon.exit_status().await;
    assert!(status.success(), "{status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped within the grace period"
    );

    let r = row(&db, signal).await;
    assert_eq!(r.job_state.as_deref(), Some("queued"), "given back: {r:?}");
    assert_eq!(r.attempts, Some(0), "the attempt is not counted");
    assert!(pngs(&dir).is_empty());
    test_db.drop_db().await;
}

#[tokio::test]
async fn after_kill_9_a_second_daemon_completes_the_job_once_the_lease_expires() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    // Slow enough that the first daemon dies mid-capture.
    let charts = ChartServer::start(3000).await;
    let trader = signed_in_trader(&db, &charts, "nine").await;
    let signal = alert(&db, &trader, 3.0, "long").await;
    let (_, dir) = fs_storage();
    let timing = [("CAPTURE_JOB_TIMEOUT", "8s"), ("CAPTURE_LEASE", "13s")];
    let spawn = |args: &'static [&'static str]| Spawn {
        charts: Some(&charts),
        env: &timing,
        args,
        ..Spawn::default()
    };
    let mut first = spawn_daemon(&test_db, &dir, spawn(&[]));
    wait_for(
        "the first capture to start",
        Duration::from_secs(20),
        async || !charts.seen.lock().unwrap().is_empty(),
    )
    .await;
    let chromium = descendants(first.pid());
    assert!(!chromium.is_empty(), "Chromium runs under the daemon");
    first.kill_9();
    // No orphaned browser holding hundreds of megabytes.
    wait_for(
        "Chromium to die with its daemon",
        Duration::from_secs(10),
        async || chromium.iter().all(|pid| !alive(*pid)),
    )
    .await;
    assert_eq!(row(&db, signal).await.status, "processing");

    let killed_at = Instant::now();
    let second = spawn_daemon(&test_db, &dir, spawn(&["--drain"]));
    assert!(second.exit_status().await.success());
    assert!(
        killed_at.elapsed() >= Duration::from_secs(5),
        "the job waited for its lease to expire"
    );

    let r = row(&db, signal).await;
    assert_eq!(r.status, "completed", "{r:?}");
    assert_eq!(r.job_state, None);
    assert_eq!(
        pngs(&dir),
        vec![format!("{signal}.png")],
        "exactly one object, no temp files"
    );
    assert_eq!(
        charts.seen.lock().unwrap().len(),
        2,
        "one page load per daemon"
    );
    test_db.drop_db().await;
}

#[tokio::test]
async fn a_job_arriving_beside_a_running_one_starts_at_once_and_logs_keep_cookies_out() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    // Slow enough that the first capture is still running when the second
    // job arrives.
    let charts = ChartServer::start(6000).await;
    let trader = unlimited_trader(&db).await;
    let tv = session("beside");
    sign_in(&db, &trader, &tv, "beside").await;
    charts.accept(&tv, "beside");
    let (_, dir) = fs_storage();
    let log = dir.with_extension("log");
    // No poll within the test: only a NOTIFY can start the second job
    // before the first ends.
    let daemon = spawn_daemon(
        &test_db,
        &dir,
        Spawn {
            charts: Some(&charts),
            env: &[("CAPTURE_POLL_INTERVAL", "10m"), ("RUST_LOG", "debug")],
            log: Some(&log),
            ..Spawn::default()
        },
    );

    let status = async |signal| row(&db, signal).await.status;
    wait_until_idle(&db).await;
    let first = alert(&db, &trader, 1.0, "long").await;
    wait_for(
        "the first capture to start",
        Duration::from_secs(10),
        async || !charts.seen.lock().unwrap().is_empty(),
    )
    .await;
    let second = alert(&db, &trader, 2.0, "long").await;
    wait_for(
        "the second job to be claimed",
        Duration::from_secs(4),
        async || status(second).await == "processing",
    )
    .await;
    assert_eq!(
        status(first).await,
        "processing",
        "claimed beside the first, not after it"
    );
    wait_for("both captures", Duration::from_secs(30), async || {
        status(first).await == "completed" && status(second).await == "completed"
    })
    .await;

    daemon.signal("-TERM");
    assert!(daemon.exit_status().await.success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("Capture completed"), "{logged}");
    for secret in [&tv.sessionid, &tv.sessionid_sign] {
        assert!(
            !logged.contains(secret.as_str()),
            "a cookie value reached the log"
        );
    }
    let _ = std::fs::remove_file(&log);
    test_db.drop_db().await;
}

/// What the alerts read from a daemon: the live daemons as the database
/// sees them (all of them, not only this one), and whether the database
/// answers at all.
#[tokio::test]
async fn metrics_count_live_daemons_and_say_when_the_database_is_gone() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let charts = ChartServer::start(100).await;
    let (_, dir) = fs_storage();
    let daemon = spawn_daemon(
        &test_db,
        &dir,
        Spawn {
            charts: Some(&charts),
            ..Spawn::default()
        },
    );
    // A second daemon, as far as the database can tell.
    db.execute(
        "select private.capture_worker_heartbeat('another-daemon', 3)",
        &[],
    )
    .await
    .unwrap();

    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/metrics", daemon.health_port);
    let scrape = async || -> String {
        match http.get(&url).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    };
    wait_for(
        "both daemons in the metrics",
        Duration::from_secs(20),
        async || {
            let metrics = scrape().await;
            metrics.contains("\ncapture_active_workers 2\n")
                && metrics.contains("\ncapture_database_up 1\n")
        },
    )
    .await;

    test_db.drop_db().await;
    wait_for(
        "the lost database in the metrics",
        Duration::from_secs(20),
        async || scrape().await.contains("\ncapture_database_up 0\n"),
    )
    .await;
    // The last count stays: it is the database's to give, and alerts read
    // capture_database_up for the outage itself.
    assert!(
        scrape().await.contains("\ncapture_active_workers 2\n"),
        "the last known count is kept"
    );

    daemon.signal("-TERM");
    assert!(daemon.exit_status().await.success());
}

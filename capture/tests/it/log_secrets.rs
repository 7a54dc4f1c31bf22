//! The `capture` binary at `RUST_LOG=trace`, capturing a chart with a
//! trader's stored TradingView session: its whole log is searched for the
//! cookie values, the seal key and the database password. None may appear:
//! `trace` is what an operator turns on when debugging, and the session is
//! opened, put into Chromium and resealed by this process.

use std::time::Duration;

use stack_harness::TestDb;

use crate::process::wait_for;
use crate::support::daemon::{Spawn, spawn_daemon};
use crate::support::{
    ChartServer, alert, fs_storage, row, seal_keys_spec, session, sign_in, stack, unlimited_trader,
};

#[tokio::test]
async fn a_capture_at_trace_logs_no_cookie_key_or_password() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let charts = ChartServer::start(100).await;
    let trader = unlimited_trader(&db).await;
    let tv = session("tracelog");
    sign_in(&db, &trader, &tv, "tracelog").await;
    charts.accept(&tv, "tracelog");
    let (_, dir) = fs_storage();
    let log = dir.with_extension("log");
    let daemon = spawn_daemon(
        &test_db,
        &dir,
        Spawn {
            charts: Some(&charts),
            env: &[("RUST_LOG", "trace")],
            log: Some(&log),
            ..Spawn::default()
        },
    );

    let signal = alert(&db, &trader, 1.0, "long").await;
    wait_for("the capture", Duration::from_secs(30), async || {
        row(&db, signal).await.status == "completed"
    })
    .await;
    daemon.signal("-TERM");
    assert!(daemon.exit_status().await.success());

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("Capture completed"), "{logged}");
    assert!(
        logged.contains("TRACE"),
        "expected a trace-level log:\n{logged}"
    );
    let spec = seal_keys_spec();
    let seal_key = spec.split_once(':').expect("id:key").1;
    let password = url::Url::parse(&test_db.url)
        .expect("a URL")
        .password()
        .expect("the test database URL carries a password")
        .to_owned();
    for (what, secret) in [
        ("sessionid", tv.sessionid.as_str()),
        ("sessionid_sign", tv.sessionid_sign.as_str()),
        ("the seal key", seal_key),
        ("the database password", password.as_str()),
    ] {
        assert!(!logged.contains(secret), "{what} reached the trace log");
    }
    let _ = std::fs::remove_file(&log);
    test_db.drop_db().await;
}

//! The TradingView session checks against a local stand-in of TradingView's
//! home page (`support::tradingview_home`): a signed-in session stays valid,
//! a signed-out one is expired and its trader told once (a notice and one
//! Telegram message); regional redirects are followed with the cookies,
//! which never leave TradingView's hosts; no clear answer changes nothing;
//! `capture check-sessions` does it from the command line; and the daemon's
//! loop checks 1,000 sessions at most once per interval each, spread over
//! the interval, oldest due first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capture::metrics::Metrics;
use capture::session_check::{SessionChecker, SessionChecks, Verdict};
use capture::telegram::{RetryPolicy, Telegram};
use service_runtime::SecretString;
use stack_harness::{TestDb, Trader};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::daemon::{Spawn, spawn_daemon};
use crate::support::tradingview_home::{TradingViewHome, Treat};
use crate::support::{
    keyring, link_chat, session, sign_in, stack, telegram_stub, unlimited_trader,
};

fn pool(test_db: &TestDb, size: usize) -> deadpool_postgres::Pool {
    service_runtime::postgres::pool_from(
        &crate::support::daemon::database(test_db),
        service_runtime::postgres::PoolSettings {
            max_size: size,
            timeout: None,
        },
    )
    .unwrap()
}

fn checks(
    test_db: &TestDb,
    home: &str,
    telegram: Option<Arc<Telegram>>,
    interval: Duration,
    concurrency: usize,
) -> Arc<SessionChecks> {
    Arc::new(SessionChecks {
        pool: pool(test_db, concurrency.max(2) + 2),
        keys: Some(Arc::new(keyring())),
        checker: SessionChecker::new(
            home.parse().unwrap(),
            "auth_token".into(),
            SessionChecker::client_builder().build().unwrap(),
        ),
        telegram,
        interval,
        concurrency,
        metrics: Metrics::new(),
    })
}

/// `cookies_valid` and whether the session was checked.
async fn state(db: &Client, trader: &Trader) -> (bool, bool) {
    let row = db
        .query_one(
            "select cookies_valid, cookies_checked_at is not null from public.user_config where user_id = $1",
            &[&trader.id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
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

/// Runs the daemon's loop without checking until the gauge reads `valid`,
/// `expired` and `unchecked` (at most 10 s).
async fn gauge_reads(checks: &Arc<SessionChecks>, valid: u32, expired: u32, unchecked: u32) {
    let stop = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(checks).run(false, stop.clone()));
    let expected = [
        format!(r#"capture_tradingview_sessions{{state="expired"}} {expired}"#),
        format!(r#"capture_tradingview_sessions{{state="unchecked"}} {unchecked}"#),
        format!(r#"capture_tradingview_sessions{{state="valid"}} {valid}"#),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = checks.metrics.render();
        if expected.iter().all(|line| metrics.contains(line.as_str())) {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn a_signed_in_session_stays_valid_and_a_signed_out_one_expires_with_the_trader_told_once() {
    let test_db = TestDb::create(&stack()).await;
    let mut db = test_db.client().await;
    let home = TradingViewHome::start().await;
    let signed_in = unlimited_trader(&db).await;
    let signed_in_tv = session("in");
    sign_in(&db, &signed_in, &signed_in_tv, "in").await;
    home.set(&signed_in_tv.sessionid, Treat::SignedIn);
    let signed_out = unlimited_trader(&db).await;
    let signed_out_tv = session("out");
    sign_in(&db, &signed_out, &signed_out_tv, "out").await;
    link_chat(&mut db, &signed_out, "-100555").await;
    assert_eq!(state(&db, &signed_in).await, (true, false), "unchecked");

    // One answer: a second message would find none and fail the test.
    let (bot_api, api) = telegram_stub::Stub::start(&[(200, r#"{"ok":true,"result":{}}"#)]).await;
    let telegram = Arc::new(Telegram::new(
        api.parse().unwrap(),
        SecretString::from("42:bot-token"),
        RetryPolicy::default(),
    ));
    let checks = checks(
        &test_db,
        &home.url(),
        Some(telegram),
        Duration::from_hours(6),
        4,
    );
    let never = CancellationToken::new();
    let report = checks.check_due(&never).await.unwrap();
    assert_eq!(
        (report.checked, report.valid, report.expired, report.unknown),
        (2, 1, 1, 0),
        "{report:?}"
    );
    assert_eq!(state(&db, &signed_in).await, (true, true));
    assert_eq!(state(&db, &signed_out).await, (false, true));
    assert_eq!(notices(&db, &signed_in).await, Vec::<String>::new());
    assert_eq!(
        notices(&db, &signed_out).await,
        ["tradingview_session_expired"]
    );
    let requests = bot_api.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].path, "/bot42:bot-token/sendMessage");
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["chat_id"], "-100555");
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("Your TradingView session has expired"),
        "{body}"
    );
    // One request per session, each carrying that session's cookies.
    let mut sent: Vec<String> = home
        .visits()
        .into_iter()
        .filter_map(|v| v.sessionid)
        .collect();
    sent.sort();
    let mut expected = vec![
        signed_in_tv.sessionid.clone(),
        signed_out_tv.sessionid.clone(),
    ];
    expected.sort();
    assert_eq!(sent, expected);

    // Within the interval nothing is due: no request, nobody told again.
    let again = checks.check_due(&never).await.unwrap();
    assert_eq!(again.checked, 0);
    assert_eq!(home.visits().len(), 2);
    // A later interval checks the valid session only; the expired one waits
    // for fresh cookies.
    db.execute(
        "update private.tradingview_session_checks set due_at = now() where due_at <> 'infinity'",
        &[],
    )
    .await
    .unwrap();
    let later = checks.check_due(&never).await.unwrap();
    assert_eq!((later.checked, later.valid), (1, 1), "{later:?}");
    assert_eq!(notices(&db, &signed_out).await.len(), 1);
    assert_eq!(bot_api.requests().len(), 1);

    // The gauge, from the database's counts.
    gauge_reads(&checks, 1, 1, 0).await;
    assert_eq!(home.visits().len(), 3, "the gauge alone checks nothing");
    test_db.drop_db().await;
}

#[tokio::test]
async fn regional_redirects_keep_the_cookies_on_tradingview_and_unclear_answers_change_nothing() {
    let home = TradingViewHome::start().await;
    let client = SessionChecker::client_builder()
        .resolve("www.tradingview.test", home.addr)
        .resolve("fr.tradingview.test", home.addr)
        .resolve("evil.test", home.addr)
        .build()
        .unwrap();
    let checker = SessionChecker::new(
        format!("http://www.tradingview.test:{}/", home.addr.port())
            .parse()
            .unwrap(),
        "auth_token".into(),
        client,
    );
    let signed_in = session("regional");
    home.set(&signed_in.sessionid, Treat::SignedIn);
    assert_eq!(checker.check(&signed_in).await, Verdict::SignedIn);
    let hosts: Vec<(String, String, Option<String>)> = home
        .visits()
        .into_iter()
        .map(|v| (v.host, v.path, v.sessionid))
        .collect();
    assert_eq!(
        hosts,
        [
            (
                "www.tradingview.test".to_owned(),
                "/".to_owned(),
                Some(signed_in.sessionid.clone())
            ),
            (
                "fr.tradingview.test".to_owned(),
                "/".to_owned(),
                Some(signed_in.sessionid.clone())
            ),
        ],
        "the regional redirect is followed with the cookies"
    );

    let signed_out = session("nobody");
    assert_eq!(checker.check(&signed_out).await, Verdict::SignedOut);

    let redirected = session("redirected");
    home.set(&redirected.sessionid, Treat::RedirectOff);
    assert!(
        matches!(checker.check(&redirected).await, Verdict::Unknown(why) if why.contains("evil.test"))
    );
    let down = session("down");
    home.set(&down.sessionid, Treat::Unavailable);
    assert!(matches!(checker.check(&down).await, Verdict::Unknown(why) if why.contains("503")));
    assert!(
        !home.hosts_given_cookies().contains("evil.test"),
        "{:?}",
        home.hosts_given_cookies()
    );
}

#[tokio::test]
async fn no_clear_answer_leaves_the_session_as_it_was() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let home = TradingViewHome::start().await;
    let trader = unlimited_trader(&db).await;
    let tv = session("down");
    sign_in(&db, &trader, &tv, "down").await;
    home.set(&tv.sessionid, Treat::Unavailable);
    let checks = checks(&test_db, &home.url(), None, Duration::from_hours(6), 2);
    let report = checks.check_due(&CancellationToken::new()).await.unwrap();
    assert_eq!((report.checked, report.unknown), (1, 1), "{report:?}");
    assert_eq!(state(&db, &trader).await, (true, false));
    assert_eq!(notices(&db, &trader).await, Vec::<String>::new());
    test_db.drop_db().await;
}

#[tokio::test]
async fn check_sessions_from_the_command_line() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let home = TradingViewHome::start().await;
    let valid = unlimited_trader(&db).await;
    let valid_tv = session("clin");
    sign_in(&db, &valid, &valid_tv, "clin").await;
    home.set(&valid_tv.sessionid, Treat::SignedIn);
    let expired = unlimited_trader(&db).await;
    sign_in(&db, &expired, &session("clout"), "clout").await;
    let dir = tempfile::tempdir().unwrap();
    let url = home.url();
    let process = spawn_daemon(
        &test_db,
        dir.path(),
        Spawn {
            args: &["check-sessions"],
            env: &[("CAPTURE_TRADINGVIEW_URL", url.as_str())],
            ..Spawn::default()
        },
    );
    assert!(process.exit_status().await.success());
    assert_eq!(state(&db, &valid).await, (true, true));
    assert_eq!(state(&db, &expired).await, (false, true));
    assert_eq!(
        notices(&db, &expired).await,
        ["tradingview_session_expired"]
    );
    assert_eq!(home.visits().len(), 2);
    test_db.drop_db().await;
}

/// Stores `n` signed-in sessions at once, straight in the tables (as many
/// traders storing theirs at the same moment would).
async fn many_sessions(db: &Client, home: &TradingViewHome, n: usize) -> Vec<String> {
    let keys = keyring();
    let mut ids = Vec::with_capacity(n);
    let mut sealed = Vec::with_capacity(n);
    let mut sessionids = Vec::with_capacity(n);
    for i in 0..n {
        let id = Uuid::new_v4();
        let tv = session(&format!("many{i}"));
        home.set(&tv.sessionid, Treat::SignedIn);
        sealed.push(keys.seal(id, &tv));
        sessionids.push(tv.sessionid);
        ids.push(id);
    }
    db.execute(
        "insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data) \
         select id, 'authenticated', 'authenticated', id::text || '@tests.local', '{}', '{}' from unnest($1::uuid[]) id",
        &[&ids],
    )
    .await
    .unwrap();
    db.execute(
        "update public.user_config u set tradingview_cookies_sealed = s.sealed, cookies_valid = true \
           from unnest($1::uuid[], $2::bytea[]) s(id, sealed) where u.user_id = s.id",
        &[&ids, &sealed],
    )
    .await
    .unwrap();
    sessionids
}

#[tokio::test]
async fn a_thousand_sessions_are_checked_at_most_once_per_interval_spread_over_it() {
    const SESSIONS: usize = 1000;
    let interval = Duration::from_secs(8);
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let home = TradingViewHome::start().await;
    let sessionids = many_sessions(&db, &home, SESSIONS).await;
    let checks = checks(&test_db, &home.url(), None, interval, 32);
    // Open the pool's connections first: a debug build spends a few hundred
    // milliseconds of this one-threaded runtime on each SCRAM handshake,
    // which would stall the loop being measured.
    let mut warm = Vec::new();
    for _ in 0..checks.pool.status().max_size {
        warm.push(checks.pool.get().await.unwrap());
    }
    drop(warm);

    // A little over two intervals of the daemon's loop.
    let started = Instant::now();
    let stop = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&checks).run(true, stop.clone()));
    tokio::time::sleep(interval * 2 + interval / 4).await;
    stop.cancel();
    running.await.unwrap();
    let run_for = started.elapsed();

    let visits = home.visits();
    let mut by_session: HashMap<String, Vec<Instant>> = HashMap::new();
    for visit in &visits {
        let sessionid = visit
            .sessionid
            .clone()
            .expect("every request carries a session");
        by_session.entry(sessionid).or_default().push(visit.at);
    }
    // The bound: never two requests for a session within an interval.
    // Requests follow their claim by a few milliseconds, which may differ
    // between two claims: a tenth of the interval of slack for that.
    for (sessionid, times) in &by_session {
        for pair in times.windows(2) {
            let apart = pair[1] - pair[0];
            assert!(
                apart >= interval.mul_f64(0.9),
                "{sessionid} checked twice within {apart:?}"
            );
        }
        assert!(
            times.len() <= 3,
            "{sessionid}: {} requests in {run_for:?}",
            times.len()
        );
    }
    // Oldest due first: no session is checked again before every session
    // was checked once. (How many get through in the run depends on the
    // machine: a loaded one checks fewer, never more often.)
    let firsts: Vec<Instant> = by_session.values().map(|times| times[0]).collect();
    let seconds: Vec<Instant> = by_session
        .values()
        .filter_map(|t| t.get(1).copied())
        .collect();
    if let Some(first_again) = seconds.iter().min() {
        assert_eq!(
            by_session.len(),
            SESSIONS,
            "a session was checked again before all were checked once"
        );
        // A request follows its claim by a moment the machine decides, so
        // two claims a moment apart may arrive the other way round.
        let last_first = firsts.iter().max().unwrap();
        assert!(
            *last_first <= *first_again + interval / 10,
            "a session first checked {:?} after another's second check",
            *last_first - *first_again
        );
        assert!(sessionids.iter().all(|s| by_session.contains_key(s)));
    }
    assert!(
        by_session.len() >= SESSIONS / 10,
        "only {} sessions checked in {run_for:?}",
        by_session.len()
    );
    // ... and spread over it, not sent in a burst: in every tenth of the
    // first interval at most twice the even share (100 a tenth).
    let tenth = interval / 10;
    for slot in 0..10u32 {
        let from = started + tenth * slot;
        let to = from + tenth;
        let in_slot = visits.iter().filter(|v| v.at >= from && v.at < to).count();
        assert!(
            in_slot <= SESSIONS / 10 * 2,
            "{in_slot} requests in tenth {slot} of the interval"
        );
    }
    eprintln!(
        "{} requests for {SESSIONS} sessions in {run_for:?} (interval {interval:?}); per tenth of the first interval: {:?}",
        visits.len(),
        (0..10u32)
            .map(|slot| {
                let from = started + tenth * slot;
                visits
                    .iter()
                    .filter(|v| v.at >= from && v.at < from + tenth)
                    .count()
            })
            .collect::<Vec<_>>()
    );
    test_db.drop_db().await;
}

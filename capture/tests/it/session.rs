//! The trader's stored TradingView session as operators administer it:
//! `capture set-session` (the binary, reading stdin) and re-sealing every
//! stored session under a new key, in the library and through
//! `capture reseal-cookies`.

use std::io::Write as _;
use std::path::PathBuf;

use base64::Engine as _;
use cookie_seal::Keyring;
use service_runtime::SecretString;
use stack_harness::{TestDb, Trader};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::support::daemon::{Spawn, spawn_daemon};
use crate::support::{
    fs_storage, keyring, sealed_session, session, sign_in, stack, unlimited_trader,
};

/// `COOKIE_SEAL_KEYS` with a new key `test2` in front of the tests' `test1`.
fn rotated_spec() -> String {
    let encode = |byte: u8| base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    format!("test2:{},test1:{}", encode(9), encode(7))
}

fn only_the_new_key() -> Keyring {
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    Keyring::parse(&SecretString::from(format!("test2:{key}"))).unwrap()
}

/// Runs `capture <args>` to its end with `stdin` written to it; returns
/// whether it succeeded and what it logged.
pub(crate) async fn run_capture(
    test_db: &TestDb,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &str,
) -> (bool, String) {
    let (_, dir) = fs_storage();
    let log: PathBuf = dir.with_extension("log");
    let mut process = spawn_daemon(
        test_db,
        &dir,
        Spawn {
            env,
            args,
            log: Some(&log),
            stdin: true,
            ..Spawn::default()
        },
    );
    let mut input = process.stdin();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let success = process.exit_status().await.success();
    let logged = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    (success, logged)
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

#[tokio::test]
async fn set_session_seals_the_two_lines_for_the_trader_and_logs_neither() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let trader = unlimited_trader(&db).await;
    let tv = session("stdin");
    let user_id = trader.id.to_string();

    let (success, logged) = run_capture(
        &test_db,
        &["set-session", "--user-id", &user_id],
        &[],
        &format!("{}\n  {}  \n", tv.sessionid, tv.sessionid_sign),
    )
    .await;
    assert!(success, "{logged}");
    assert!(
        logged.contains("Stored the sealed TradingView session"),
        "{logged}"
    );
    for secret in [&tv.sessionid, &tv.sessionid_sign] {
        assert!(
            !logged.contains(secret.as_str()),
            "a cookie value reached the log"
        );
    }

    let sealed = sealed_session(&db, &trader)
        .await
        .expect("a sealed session");
    assert_eq!(Keyring::sealed_key_id(&sealed).unwrap(), "test1");
    let opened = keyring().open(trader.id, &sealed).unwrap();
    assert_eq!(opened.sessionid, tv.sessionid);
    assert_eq!(opened.sessionid_sign, tv.sessionid_sign, "trimmed");
    assert!(cookies_valid(&db, &trader).await);
    test_db.drop_db().await;
}

#[tokio::test]
async fn set_session_refuses_bad_input_and_stores_nothing() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let trader = unlimited_trader(&db).await;
    let before = session("before");
    sign_in(&db, &trader, &before, "chart").await;
    let stored = sealed_session(&db, &trader).await;
    let user_id = trader.id.to_string();

    // One line only: the sign is missing.
    let (success, logged) = run_capture(
        &test_db,
        &["set-session", "--user-id", &user_id],
        &[],
        "sid-only\n",
    )
    .await;
    assert!(!success);
    assert!(
        logged.contains("expected the sessionid_sign line on stdin"),
        "{logged}"
    );
    assert_eq!(sealed_session(&db, &trader).await, stored, "left as it was");

    // Nobody by that id.
    let nobody = Uuid::new_v4();
    let (success, logged) = run_capture(
        &test_db,
        &["set-session", "--user-id", &nobody.to_string()],
        &[],
        "sid\nsign\n",
    )
    .await;
    assert!(!success);
    assert!(
        logged.contains(&format!("no user_config row for {nobody}")),
        "{logged}"
    );

    // No keys to seal with.
    let (success, logged) = run_capture(
        &test_db,
        &["set-session", "--user-id", &user_id],
        &[("COOKIE_SEAL_KEYS", "")],
        "sid\nsign\n",
    )
    .await;
    assert!(!success);
    assert!(logged.contains("COOKIE_SEAL_KEYS"), "{logged}");
    assert_eq!(sealed_session(&db, &trader).await, stored, "left as it was");
    test_db.drop_db().await;
}

#[tokio::test]
async fn reseal_moves_every_stored_session_to_the_current_key() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let old = keyring();
    let mut traders = Vec::new();
    for name in ["r1", "r2"] {
        let trader = unlimited_trader(&db).await;
        let tv = session(name);
        sign_in(&db, &trader, &tv, "chartr").await;
        traders.push((trader, tv));
    }
    // Sealed under a key nobody configured any more: left alone.
    let lost = unlimited_trader(&db).await;
    let lost_key = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
    let lost_keys = Keyring::parse(&SecretString::from(format!("gone:{lost_key}"))).unwrap();
    let unreadable = lost_keys.seal(lost.id, &session("lost"));
    db.execute(
        "update public.user_config set tradingview_cookies_sealed = $2 where user_id = $1",
        &[&lost.id, &unreadable],
    )
    .await
    .unwrap();

    let rotated = Keyring::parse(&SecretString::from(rotated_spec())).unwrap();
    let report = capture::session::reseal_all(&db, &rotated).await.unwrap();
    assert_eq!(
        (report.resealed, report.current, report.unreadable),
        (2, 0, 1)
    );
    let again = capture::session::reseal_all(&db, &rotated).await.unwrap();
    assert_eq!((again.resealed, again.current), (0, 2), "idempotent");

    let only_new = only_the_new_key();
    for (trader, tv) in &traders {
        let sealed = sealed_session(&db, trader).await.unwrap();
        assert_eq!(Keyring::sealed_key_id(&sealed).unwrap(), "test2");
        assert_eq!(
            only_new.open(trader.id, &sealed).unwrap().sessionid,
            tv.sessionid
        );
        assert!(
            old.open(trader.id, &sealed).is_err(),
            "the old key alone no longer opens it"
        );
    }
    // Sealed for one trader, it does not open for the other.
    let sealed = sealed_session(&db, &traders[0].0).await.unwrap();
    assert!(only_new.open(traders[1].0.id, &sealed).is_err());
    assert_eq!(
        sealed_session(&db, &lost).await,
        Some(unreadable),
        "an unreadable session is not touched"
    );
    test_db.drop_db().await;
}

#[tokio::test]
async fn reseal_cookies_runs_from_the_command_line() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let trader = unlimited_trader(&db).await;
    let tv = session("cli");
    sign_in(&db, &trader, &tv, "chart").await;

    let spec = rotated_spec();
    let (success, logged) = run_capture(
        &test_db,
        &["reseal-cookies"],
        &[("COOKIE_SEAL_KEYS", &spec)],
        "",
    )
    .await;
    assert!(success, "{logged}");
    assert!(
        logged.contains("Re-sealed stored TradingView sessions"),
        "{logged}"
    );
    let sealed = sealed_session(&db, &trader).await.unwrap();
    assert_eq!(
        only_the_new_key()
            .open(trader.id, &sealed)
            .unwrap()
            .sessionid,
        tv.sessionid
    );
    test_db.drop_db().await;
}

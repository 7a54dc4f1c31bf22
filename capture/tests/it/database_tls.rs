//! The `capture` binary over TLS to Postgres: a server whose certificate is issued for another
//! name is refused under `verify-full` (the command fails, says why, and nothing is written),
//! while the same server is used under `verify-ca`, so the refusal is the name's.

use stack_harness::TestDb;
use stack_harness::tls::WrongNameProxy;

use crate::session::run_capture;
use crate::support::{sealed_session, session, stack, unlimited_trader};

#[tokio::test]
async fn capture_refuses_a_certificate_for_another_name_under_verify_full() {
    let stack = stack();
    let test_db = TestDb::create(&stack).await;
    let db = test_db.client().await;
    let trader = unlimited_trader(&db).await;
    let proxy = WrongNameProxy::start(&stack).await;
    let user_id = trader.id.to_string();
    let args = ["set-session", "--user-id", &user_id];
    let tv = session("tls");
    let stdin = format!("{}\n{}\n", tv.sessionid, tv.sessionid_sign);

    let url = proxy.url(&test_db.url, "verify-full", "");
    let (success, logged) = run_capture(&test_db, &args, &[("DATABASE_URL", &url)], &stdin).await;
    assert!(!success, "{logged}");
    assert!(
        logged.contains("certificate not valid for name \"127.0.0.1\""),
        "{logged}"
    );
    assert_eq!(proxy.handshakes(), 0);
    assert_eq!(sealed_session(&db, &trader).await, None);

    let url = proxy.url(&test_db.url, "verify-ca", "channel_binding=disable");
    let (success, logged) = run_capture(&test_db, &args, &[("DATABASE_URL", &url)], &stdin).await;
    assert!(success, "{logged}");
    assert!(proxy.handshakes() >= 1);
    assert!(sealed_session(&db, &trader).await.is_some());
    test_db.drop_db().await;
}

//! The session endpoint against the real stack: PostgREST through the gateway stores the sealed
//! pair on the trader's row, the capture side's keyring opens it for that trader only, and DELETE
//! clears it.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use cookie_seal::Keyring;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use ingest::session::{PATH, SessionConfig, SessionState, handle};
use secrecy::SecretString;
use stack_harness::Stack;

fn keyring() -> Keyring {
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    Keyring::parse(&SecretString::from(format!("it1:{key}"))).unwrap()
}

fn request(method: Method, token: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(PATH)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

#[tokio::test]
async fn put_stores_a_sealed_session_and_delete_removes_it() {
    let stack = Stack::from_env();
    let trader = stack.trader("free").await;
    let other = stack.trader("free").await;
    let state = SessionState::new(SessionConfig {
        jwks_url: None,
        jwt_secret: Some(SecretString::from(stack.jwt_secret.clone())),
        audience: "authenticated".into(),
        cors_origin: None,
        keys: Arc::new(keyring()),
        supabase_url: stack.supabase_url.parse().unwrap(),
        service_key: SecretString::from(stack.service_role_key.clone()),
    })
    .unwrap();
    let token = stack.jwt_for(&trader);

    let response = handle(
        request(
            Method::PUT,
            &token,
            r#"{"sessionid":"sid-123","sessionid_sign":"v3:abc"}"#,
        ),
        &state,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let db = stack.db().await;
    let row = db
        .query_one(
            "select tradingview_cookies_sealed, cookies_valid from public.user_config where user_id = $1",
            &[&trader.id],
        )
        .await
        .unwrap();
    let sealed: Vec<u8> = row.get(0);
    assert!(row.get::<_, bool>(1));
    assert!(
        !sealed.windows(7).any(|w| w == b"sid-123"),
        "no plaintext at rest"
    );
    let opened = keyring().open(trader.id, &sealed).unwrap();
    assert_eq!(
        (opened.sessionid.as_str(), opened.sessionid_sign.as_str()),
        ("sid-123", "v3:abc")
    );
    assert!(
        keyring().open(other.id, &sealed).is_err(),
        "bound to its trader"
    );
    let untouched: Option<Vec<u8>> = db
        .query_one(
            "select tradingview_cookies_sealed from public.user_config where user_id = $1",
            &[&other.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(untouched, None, "only the caller's row changed");

    let response = handle(request(Method::DELETE, &token, ""), &state).await;
    assert_eq!(response.status(), StatusCode::OK);
    let row = db
        .query_one(
            "select tradingview_cookies_sealed, cookies_valid from public.user_config where user_id = $1",
            &[&trader.id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<Vec<u8>>>(0), None);
    assert!(!row.get::<_, bool>(1));
}

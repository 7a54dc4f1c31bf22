//! `PUT`/`DELETE /v1/tradingview-session` end to end, on both database
//! paths (PostgREST through the gateway, and the direct pool): the sealed
//! pair lands on the caller's row through `public.set_tradingview_session`
//! and opens for that trader only, every refusal has the same status and
//! body on both paths, and the dashboard's origin gets CORS headers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use stack_harness::Trader;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::helpers::{
    Options, SessionOptions, TestApp, Upstream, assert_error, keyring, rest_at, spawn_app,
};

const PATH: &str = "/v1/tradingview-session";
const ORIGIN: &str = "https://dashboard.example";
const COOKIES: &str = r#"{"sessionid":"sid-123","sessionid_sign":"v3:abc"}"#;

async fn spawn(upstream: Upstream) -> TestApp {
    let mut options = Options::on(upstream);
    options.session = Some(SessionOptions {
        cors_origin: Some(ORIGIN),
    });
    spawn_app(options).await
}

/// The answer to one request: status, headers, body (JSON when there is one).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl TestApp {
    /// A request as the dashboard's snippet in the README sends it.
    async fn session_request(
        &self,
        method: Method,
        token: Option<&str>,
        body: &str,
        origin: Option<&str>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, self.url(PATH))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.expect("an answer");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON")
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The trader's stored session: (sealed, valid, stored at set).
    async fn stored_session(&self, trader: &Trader) -> (Option<Vec<u8>>, bool, bool) {
        let row = self
            .stack()
            .db()
            .await
            .query_one(
                "select tradingview_cookies_sealed, cookies_valid, cookies_updated_at is not null \
                   from public.user_config where user_id = $1",
                &[&trader.id],
            )
            .await
            .expect("the trader's row");
        (row.get(0), row.get(1), row.get(2))
    }

    /// An access token as Supabase Auth issues it, for any `sub` and `exp`.
    fn token_for(&self, sub: Uuid, exp: u64) -> String {
        self.stack().mint(&json!({
            "sub": sub,
            "iss": format!("{}/auth/v1", self.stack().supabase_url),
            "role": "authenticated",
            "aud": "authenticated",
            "exp": exp,
            "iat": now(),
        }))
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test]
async fn put_stores_a_sealed_session_and_delete_forgets_it_on_both_paths() {
    for upstream in [Upstream::Rest, Upstream::Pool] {
        let app = spawn(upstream).await;
        let (trader, other) = (app.trader("free").await, app.trader("free").await);
        let token = app.stack().jwt_for(&trader);

        let answer = app
            .session_request(Method::PUT, Some(&token), COOKIES, Some(ORIGIN))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(
            answer.body,
            json!({ "success": true, "cookies_valid": true })
        );
        assert_eq!(answer.headers["access-control-allow-origin"], ORIGIN);

        let (sealed, valid, stored_at) = app.stored_session(&trader).await;
        let sealed = sealed.expect("a sealed session");
        assert!(valid && stored_at);
        assert!(
            !sealed.windows(7).any(|w| w == b"sid-123"),
            "no plaintext at rest"
        );
        let opened = keyring().open(trader.id, &sealed).expect("it opens");
        assert_eq!(
            (opened.sessionid.as_str(), opened.sessionid_sign.as_str()),
            ("sid-123", "v3:abc")
        );
        assert!(
            keyring().open(other.id, &sealed).is_err(),
            "bound to its trader"
        );
        assert_eq!(
            app.stored_session(&other).await,
            (None, false, false),
            "only the caller's row changed"
        );

        let answer = app
            .session_request(Method::DELETE, Some(&token), "", None)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(
            answer.body,
            json!({ "success": true, "cookies_valid": false })
        );
        let (sealed, valid, _) = app.stored_session(&trader).await;
        assert_eq!((sealed, valid), (None, false));
        assert!(
            app.metrics()
                .await
                .contains(r#"ingest_requests_total{outcome="ok",route="session"} 2"#)
        );
    }
}

/// Every refusal, as (what was sent, the answer's status, body and the
/// headers that matter), in a form two paths can be compared in.
async fn refusals(app: &TestApp) -> Vec<(&'static str, u16, Value, Vec<String>)> {
    let trader = app.trader("free").await;
    let good = app.token_for(trader.id, now() + 600);
    let expired = app.token_for(trader.id, now() - 120);
    let forged = {
        let mut stack = app.stack().clone();
        stack.jwt_secret = "another-secret-another-secret-another-secret".into();
        stack.jwt_for(&trader)
    };
    let stranger = app.token_for(Uuid::new_v4(), now() + 600);
    let cases: [(&str, Method, Option<&str>, &str); 11] = [
        ("no token", Method::PUT, None, COOKIES),
        ("expired", Method::PUT, Some(&expired), COOKIES),
        ("forged", Method::DELETE, Some(&forged), ""),
        ("empty body", Method::PUT, Some(&good), ""),
        ("no cookies", Method::PUT, Some(&good), "{}"),
        ("not JSON", Method::PUT, Some(&good), "sessionid=a"),
        (
            "a space",
            Method::PUT,
            Some(&good),
            r#"{"sessionid":"a b","sessionid_sign":"x"}"#,
        ),
        (
            "an empty cookie",
            Method::PUT,
            Some(&good),
            r#"{"sessionid":"","sessionid_sign":"x"}"#,
        ),
        ("no settings row", Method::PUT, Some(&stranger), COOKIES),
        ("no settings row", Method::DELETE, Some(&stranger), ""),
        ("wrong method", Method::GET, Some(&good), ""),
    ];
    let mut answers = Vec::new();
    for (what, method, token, body) in cases {
        let answer = app.session_request(method, token, body, None).await;
        let headers = ["www-authenticate", "allow", "retry-after"]
            .iter()
            .filter_map(|name| {
                answer
                    .headers
                    .get(*name)
                    .map(|value| format!("{name}: {}", value.to_str().expect("ascii")))
            })
            .collect();
        answers.push((what, answer.status.as_u16(), answer.body, headers));
    }
    assert_eq!(
        app.stored_session(&trader).await,
        (None, false, false),
        "nothing refused was stored"
    );
    answers
}

#[tokio::test]
async fn refusals_are_answered_alike_on_both_paths() {
    let rest = refusals(&spawn(Upstream::Rest).await).await;
    let pool = refusals(&spawn(Upstream::Pool).await).await;
    assert_eq!(rest, pool);
    let expected = [
        ("no token", 401, "missing_token"),
        ("expired", 401, "invalid_token"),
        ("forged", 401, "invalid_token"),
        ("empty body", 400, "invalid_body"),
        ("no cookies", 400, "invalid_body"),
        ("not JSON", 400, "invalid_body"),
        ("a space", 400, "invalid_body"),
        ("an empty cookie", 400, "invalid_body"),
        ("no settings row", 404, "not_found"),
        ("no settings row", 404, "not_found"),
        ("wrong method", 405, "method_not_allowed"),
    ];
    for ((what, status, body, headers), (want_what, want_status, code)) in rest.iter().zip(expected)
    {
        assert_eq!((*what, *status), (want_what, want_status), "{body}");
        assert_error(
            StatusCode::from_u16(*status).expect("a status"),
            body,
            StatusCode::from_u16(want_status).expect("a status"),
            code,
        );
        match want_status {
            401 => assert_eq!(headers, &["www-authenticate: Bearer"], "{what}"),
            405 => assert_eq!(headers, &["allow: PUT, DELETE, OPTIONS"], "{what}"),
            _ => assert!(headers.is_empty(), "{what}: {headers:?}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_database_is_an_opaque_503() {
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let stack = stack_harness::Stack::from_env();
    let app = spawn(Upstream::Given(rest_at(
        &stack,
        &format!("http://{dead_addr}"),
        Duration::from_secs(2),
    )))
    .await;
    let token = app.token_for(Uuid::new_v4(), now() + 600);
    let answer = app
        .session_request(Method::PUT, Some(&token), COOKIES, Some(ORIGIN))
        .await;
    assert_error(
        answer.status,
        &answer.body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    let text = answer.body.to_string();
    assert!(
        !text.contains("sid-123") && !text.contains("127.0.0.1") && !text.contains("refused"),
        "{text}"
    );
    assert_eq!(answer.headers["access-control-allow-origin"], ORIGIN);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"ingest_upstream_errors_total{kind="unreachable",path="rest"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ingest_requests_total{outcome="unavailable",route="session"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn cors_only_for_the_configured_origin() {
    let app = spawn(Upstream::Rest).await;
    let preflight = app
        .session_request(Method::OPTIONS, None, "", Some(ORIGIN))
        .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    let header = |answer: &Answer, name: &str| {
        answer
            .headers
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    assert_eq!(
        header(&preflight, "access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    assert_eq!(
        header(&preflight, "access-control-allow-methods").as_deref(),
        Some("PUT, DELETE, OPTIONS")
    );
    assert!(
        header(&preflight, "access-control-allow-headers")
            .is_some_and(|h| h.contains("authorization") && h.contains("content-type"))
    );
    assert_eq!(header(&preflight, "vary").as_deref(), Some("Origin"));

    let foreign = app
        .session_request(Method::OPTIONS, None, "", Some("https://evil.example"))
        .await;
    assert_eq!(foreign.status, StatusCode::NO_CONTENT);
    assert_eq!(header(&foreign, "access-control-allow-origin"), None);
    assert_eq!(header(&foreign, "access-control-allow-methods"), None);

    // Errors carry the header too, so the dashboard can read why.
    let refused = app
        .session_request(Method::PUT, None, COOKIES, Some(ORIGIN))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&refused, "access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    assert_eq!(header(&refused, "vary").as_deref(), Some("Origin"));
}

#[tokio::test]
async fn the_endpoint_is_off_unless_configured() {
    let app = spawn_app(Options::on(Upstream::Rest)).await;
    let token = app.token_for(Uuid::new_v4(), now() + 600);
    let answer = app
        .session_request(Method::PUT, Some(&token), COOKIES, None)
        .await;
    assert_error(
        answer.status,
        &answer.body,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

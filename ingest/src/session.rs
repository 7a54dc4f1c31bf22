//! `PUT` and `DELETE /v1/tradingview-session`: the trader hands over (or
//! withdraws) their TradingView session from the dashboard.
//!
//! Self-contained on purpose (ingest's router is being reworked): one
//! [`handle`] function from request and [`SessionState`] to response, and
//! its [`SessionConfig`].
//!
//! - **Who.** The caller is the signed-in trader, proven by their Supabase
//!   access token (`Authorization: Bearer`): asymmetric tokens (ES256,
//!   RS256) are checked against the project's JWKS (fetched from
//!   `SUPABASE_JWKS_URL`, cached, refetched when a new `kid` appears),
//!   legacy HS256 tokens against the JWT secret. Expiry and audience are
//!   checked; the user id is `sub`. Anything else is 401, before the body
//!   is read.
//! - **What.** `PUT` body `{"sessionid": ..., "sessionid_sign": ...}`: the
//!   pair is sealed ([`cookie_seal`], the user id as associated data) and
//!   stored on the trader's `user_config` row with `cookies_valid = true`.
//!   `DELETE` removes it. The plaintext exists only in this request's memory
//!   and is never logged.
//! - **Where from.** The dashboard calls this directly from the browser, so
//!   the configured origin gets CORS headers (preflight included); other
//!   origins get none and the browser refuses the answer.
//! - **How it is stored.** One PostgREST `PATCH` on `user_config` with the
//!   service key: the same path every other server-side write takes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cookie_seal::{Keyring, TradingViewSession};
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, AUTHORIZATION, CONTENT_TYPE, HeaderValue, ORIGIN, VARY,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::json;
use service_runtime::secret::supabase_service_headers;
use tokio::sync::RwLock;
use url::Url;
use uuid::Uuid;

/// The path this module serves.
pub const PATH: &str = "/v1/tradingview-session";
/// Largest accepted body: two cookies and some JSON.
const MAX_BODY: usize = 4096;
/// Longest accepted cookie value.
const MAX_COOKIE: usize = 1024;
/// How long a fetched JWKS is trusted before it is fetched again.
const JWKS_TTL: Duration = Duration::from_mins(10);
/// An unknown `kid` refetches the JWKS at most this often.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);

/// Settings of the session endpoint.
#[derive(Debug)]
pub struct SessionConfig {
    /// The project's JWKS (`{SUPABASE_URL}/auth/v1/.well-known/jwks.json`),
    /// for asymmetric access tokens. `None`: only HS256 tokens are accepted.
    pub jwks_url: Option<Url>,
    /// The legacy JWT secret, for HS256 access tokens. `None`: HS256 tokens
    /// are refused.
    pub jwt_secret: Option<SecretString>,
    /// The `aud` access tokens must carry (Supabase: `authenticated`).
    pub audience: String,
    /// The dashboard's origin (`https://app.example.com`), allowed by CORS.
    pub cors_origin: Option<HeaderValue>,
    /// The seal keys (the first seals).
    pub keys: Arc<Keyring>,
    /// The project URL (PostgREST under `/rest/v1`).
    pub supabase_url: Url,
    /// The service key that may update `user_config`.
    pub service_key: SecretString,
}

/// Why a request was refused; the one place these become statuses.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("missing bearer token")]
    MissingToken,
    #[error("invalid access token")]
    InvalidToken,
    #[error(
        "the body must be JSON {{\"sessionid\": ..., \"sessionid_sign\": ...}} with non-empty cookie values"
    )]
    BadBody,
    #[error("method not allowed; use PUT or DELETE")]
    Method,
    #[error("no settings row for this user")]
    NoUser,
    #[error("the session could not be stored")]
    Store(#[source] reqwest::Error),
    #[error("the session could not be stored")]
    StoreStatus(StatusCode),
}

impl SessionError {
    fn status(&self) -> StatusCode {
        match self {
            Self::MissingToken | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::BadBody => StatusCode::BAD_REQUEST,
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoUser => StatusCode::NOT_FOUND,
            Self::Store(_) | Self::StoreStatus(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::BadBody => "invalid_body",
            Self::Method => "method_not_allowed",
            Self::NoUser => "not_found",
            Self::Store(_) | Self::StoreStatus(_) => "unavailable",
        }
    }
}

#[derive(Debug)]
struct CachedJwks {
    set: JwkSet,
    fetched: Instant,
}

/// The endpoint's state: config, HTTP client and the JWKS cache.
#[derive(Debug)]
pub struct SessionState {
    config: SessionConfig,
    http: reqwest::Client,
    jwks: RwLock<Option<CachedJwks>>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: Uuid,
}

#[derive(Deserialize)]
struct Body {
    sessionid: String,
    sessionid_sign: String,
}

fn cookie_ok(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_COOKIE
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',' && b != b'"' && b != b'\\')
}

impl SessionState {
    pub fn new(config: SessionConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            config,
            http,
            jwks: RwLock::new(None),
        })
    }

    /// Uses `set` as the JWKS instead of fetching it (a project whose keys
    /// are configured inline, and tests).
    pub async fn preload_jwks(&self, set: JwkSet) {
        *self.jwks.write().await = Some(CachedJwks {
            set,
            fetched: Instant::now(),
        });
    }

    async fn jwk_key(&self, kid: &str) -> Option<DecodingKey> {
        let find = |cached: &CachedJwks| {
            cached
                .set
                .find(kid)
                .and_then(|jwk| DecodingKey::from_jwk(jwk).ok())
        };
        let stale = {
            let cache = self.jwks.read().await;
            if let Some(cached) = cache.as_ref() {
                if let Some(key) = find(cached)
                    && (cached.fetched.elapsed() < JWKS_TTL || self.config.jwks_url.is_none())
                {
                    return Some(key);
                }
                cached.fetched.elapsed() >= JWKS_MIN_REFETCH
            } else {
                true
            }
        };
        let url = self.config.jwks_url.as_ref()?;
        if !stale {
            return None;
        }
        match self.fetch_jwks(url).await {
            Ok(set) => {
                let cached = CachedJwks {
                    set,
                    fetched: Instant::now(),
                };
                let key = find(&cached);
                *self.jwks.write().await = Some(cached);
                key
            }
            Err(error) => {
                tracing::warn!(error = %error, "Fetching the JWKS failed");
                None
            }
        }
    }

    async fn fetch_jwks(&self, url: &Url) -> Result<JwkSet, reqwest::Error> {
        let text = self
            .http
            .get(url.clone())
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(serde_json::from_str(&text).unwrap_or(JwkSet { keys: Vec::new() }))
    }

    /// The user id of a valid access token.
    async fn authenticate(&self, token: &str) -> Result<Uuid, SessionError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| SessionError::InvalidToken)?;
        let key = match header.alg {
            Algorithm::HS256 => {
                let secret = self
                    .config
                    .jwt_secret
                    .as_ref()
                    .ok_or(SessionError::InvalidToken)?;
                DecodingKey::from_secret(secret.expose_secret().as_bytes())
            }
            Algorithm::ES256 | Algorithm::RS256 | Algorithm::EdDSA => {
                let kid = header.kid.as_deref().ok_or(SessionError::InvalidToken)?;
                self.jwk_key(kid).await.ok_or(SessionError::InvalidToken)?
            }
            _ => return Err(SessionError::InvalidToken),
        };
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|_| SessionError::InvalidToken)?;
        Ok(data.claims.sub)
    }

    /// `PATCH`es the trader's row through PostgREST.
    async fn store(&self, user_id: Uuid, sealed: Option<Vec<u8>>) -> Result<(), SessionError> {
        let url = format!(
            "{}/rest/v1/user_config?user_id=eq.{user_id}",
            self.config.supabase_url.as_str().trim_end_matches('/')
        );
        let body = match sealed {
            Some(bytes) => {
                let hex = bytes.iter().fold(String::new(), |mut hex, b| {
                    use std::fmt::Write as _;
                    let _ = write!(hex, "{b:02x}");
                    hex
                });
                json!({ "tradingview_cookies_sealed": format!("\\x{hex}"), "cookies_valid": true })
            }
            None => json!({ "tradingview_cookies_sealed": null, "cookies_valid": false }),
        };
        let mut request = self
            .http
            .patch(url)
            .header("content-type", "application/json")
            .header("prefer", "return=representation")
            .body(body.to_string());
        for (name, value) in supabase_service_headers(&self.config.service_key) {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(SessionError::Store)?;
        if !response.status().is_success() {
            return Err(SessionError::StoreStatus(response.status()));
        }
        let rows = response.text().await.map_err(SessionError::Store)?;
        if rows.trim() == "[]" {
            return Err(SessionError::NoUser);
        }
        Ok(())
    }
}

fn respond(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(e: &SessionError) -> Response<Full<Bytes>> {
    let status = e.status();
    if status.is_server_error() {
        tracing::error!(error = %e, source = ?std::error::Error::source(e), "Session endpoint failed");
    }
    let mut response = respond(
        status,
        &json!({ "success": false, "error": { "code": e.code(), "message": e.to_string() } }),
    );
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert("allow", HeaderValue::from_static("PUT, DELETE, OPTIONS"));
    }
    response
}

fn bearer<B>(request: &Request<B>) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Serves one request to [`PATH`].
pub async fn handle<B>(request: Request<B>, state: &SessionState) -> Response<Full<Bytes>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let allowed_origin = state
        .config
        .cors_origin
        .as_ref()
        .filter(|allowed| request.headers().get(ORIGIN) == Some(*allowed))
        .cloned();
    let mut response = if request.method() == Method::OPTIONS {
        let mut preflight = Response::new(Full::new(Bytes::new()));
        *preflight.status_mut() = StatusCode::NO_CONTENT;
        if allowed_origin.is_some() {
            let headers = preflight.headers_mut();
            headers.insert(
                ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("PUT, DELETE, OPTIONS"),
            );
            headers.insert(
                ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, apikey, x-client-info"),
            );
            headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
        preflight
    } else {
        match serve(request, state).await {
            Ok(response) => response,
            Err(e) => error(&e),
        }
    };
    let headers = response.headers_mut();
    headers.insert(VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed_origin {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    response
}

async fn serve<B>(
    request: Request<B>,
    state: &SessionState,
) -> Result<Response<Full<Bytes>>, SessionError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if request.method() != Method::PUT && request.method() != Method::DELETE {
        return Err(SessionError::Method);
    }
    let token = bearer(&request).ok_or(SessionError::MissingToken)?;
    let user_id = state.authenticate(token).await?;
    if request.method() == Method::DELETE {
        state.store(user_id, None).await?;
        tracing::info!(%user_id, "TradingView session removed");
        return Ok(respond(
            StatusCode::OK,
            &json!({ "success": true, "cookies_valid": false }),
        ));
    }
    let bytes = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| SessionError::BadBody)?
        .to_bytes();
    let body: Body = serde_json::from_slice(&bytes).map_err(|_| SessionError::BadBody)?;
    if !cookie_ok(&body.sessionid) || !cookie_ok(&body.sessionid_sign) {
        return Err(SessionError::BadBody);
    }
    let session = TradingViewSession {
        sessionid: body.sessionid,
        sessionid_sign: body.sessionid_sign,
    };
    let sealed = state.config.keys.seal(user_id, &session);
    drop(session);
    state.store(user_id, Some(sealed)).await?;
    tracing::info!(%user_id, key_id = state.config.keys.current_key_id(), "TradingView session stored");
    Ok(respond(
        StatusCode::OK,
        &json!({ "success": true, "cookies_valid": true }),
    ))
}

/// Parses `SUPABASE_JWKS` (an inline JWKS document).
pub fn parse_jwks(text: &str) -> Result<JwkSet, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;

    /// A P-256 test key pair (generated for these tests only) and its JWK.
    const ES256_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg07WlQf3RNHS0kNBz
HSesZaLrVWxzUNIzqpYuozYvrO2hRANCAATyG9C/Fv6YfqqThbGNyIaeEYQmgLs5
1Py63j3a2KbciGKfeKdsyKfy5ALI2NTrdhv2Xs/6CZMbrLdVl2rgrKRC
-----END PRIVATE KEY-----";
    const ES256_X: &str = "8hvQvxb-mH6qk4WxjciGnhGEJoC7OdT8ut492tim3Ig";
    const ES256_Y: &str = "Yp94p2zIp_LkAsjY1Ot2G_Zez_oJkxust1WXauCspEI";
    /// Another key, not in the JWKS: its signatures must not verify.
    const OTHER_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdupE/0iSNh7OlJH9
OJsL1wYdUdfpVeEpNxzawFaegzGhRANCAARfLqswme3tEZpxc8jf+Uls1StDRMnP
A9XUQHMyXclxacdvalsdje1vDHX9HMEEwb4xS8NUzb1GKm7Y/yoZv4z/
-----END PRIVATE KEY-----";
    const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters";
    const ORIGIN_OK: &str = "https://app.example.com";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    async fn state() -> SessionState {
        let key = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
        let state = SessionState::new(SessionConfig {
            jwks_url: None,
            jwt_secret: Some(SecretString::from(SECRET.to_owned())),
            audience: "authenticated".into(),
            cors_origin: Some(HeaderValue::from_static(ORIGIN_OK)),
            keys: Arc::new(Keyring::parse(&SecretString::from(format!("k1:{key}"))).unwrap()),
            // Nothing listens here: a request that got past authentication would fail with 503.
            supabase_url: "http://127.0.0.1:9".parse().unwrap(),
            service_key: SecretString::from("sb_secret_test".to_owned()),
        })
        .unwrap();
        let jwks = parse_jwks(
            &json!({ "keys": [{ "kty": "EC", "crv": "P-256", "x": ES256_X, "y": ES256_Y, "kid": "kid-1", "alg": "ES256", "use": "sig" }] })
                .to_string(),
        )
        .unwrap();
        state.preload_jwks(jwks).await;
        state
    }

    fn claims(user: Uuid, aud: &str, exp: u64) -> serde_json::Value {
        json!({ "sub": user, "aud": aud, "role": "authenticated", "exp": exp, "iat": now() })
    }

    fn hs256(claims: &serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn es256(claims: &serde_json::Value, pem: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("kid-1".into());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn valid_tokens_of_both_kinds_name_their_user() {
        let state = state().await;
        let user = Uuid::new_v4();
        let good = claims(user, "authenticated", now() + 600);
        assert_eq!(
            state.authenticate(&hs256(&good, SECRET)).await.unwrap(),
            user
        );
        assert_eq!(
            state
                .authenticate(&es256(&good, ES256_PRIVATE))
                .await
                .unwrap(),
            user
        );
    }

    #[tokio::test]
    async fn expired_wrong_audience_and_wrong_signature_are_refused() {
        let state = state().await;
        let user = Uuid::new_v4();
        let expired = claims(user, "authenticated", now() - 120);
        let wrong_aud = claims(user, "anon", now() + 600);
        let good = claims(user, "authenticated", now() + 600);
        for token in [
            hs256(&expired, SECRET),
            es256(&expired, ES256_PRIVATE),
            hs256(&wrong_aud, SECRET),
            es256(&wrong_aud, ES256_PRIVATE),
            hs256(&good, "another-secret-another-secret-another-secret"),
            es256(&good, OTHER_PRIVATE),
            "not.a.jwt".to_owned(),
        ] {
            assert!(
                matches!(
                    state.authenticate(&token).await,
                    Err(SessionError::InvalidToken)
                ),
                "{token} was accepted"
            );
        }
    }

    fn request(
        method: Method,
        token: Option<&str>,
        origin: Option<&str>,
        body: &str,
    ) -> Request<Full<Bytes>> {
        let mut builder = Request::builder().method(method).uri(PATH);
        if let Some(token) = token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(origin) = origin {
            builder = builder.header(ORIGIN, origin);
        }
        builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    }

    async fn body_json(response: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn missing_and_bad_tokens_get_401_before_the_body_is_read() {
        let state = state().await;
        let body = r#"{"sessionid":"a","sessionid_sign":"b"}"#;
        let response = handle(request(Method::PUT, None, None, body), &state).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(body_json(response).await["error"]["code"], "missing_token");

        let expired = hs256(
            &claims(Uuid::new_v4(), "authenticated", now() - 120),
            SECRET,
        );
        let response = handle(request(Method::DELETE, Some(&expired), None, ""), &state).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(body_json(response).await["error"]["code"], "invalid_token");
    }

    #[tokio::test]
    async fn a_valid_token_with_a_bad_body_is_400_and_the_store_failing_is_an_opaque_503() {
        let state = state().await;
        let token = hs256(
            &claims(Uuid::new_v4(), "authenticated", now() + 600),
            SECRET,
        );
        for body in [
            "",
            "{}",
            r#"{"sessionid":"a b","sessionid_sign":"x"}"#,
            r#"{"sessionid":"","sessionid_sign":"x"}"#,
        ] {
            let response = handle(request(Method::PUT, Some(&token), None, body), &state).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        }
        let ok = r#"{"sessionid":"abc123","sessionid_sign":"v3:sig"}"#;
        let response = handle(request(Method::PUT, Some(&token), None, ok), &state).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body_json(response).await.to_string();
        assert!(
            !body.contains("abc123") && !body.contains("127.0.0.1"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn cors_only_for_the_configured_origin() {
        let state = state().await;
        let preflight = handle(request(Method::OPTIONS, None, Some(ORIGIN_OK), ""), &state).await;
        assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
        assert_eq!(preflight.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], ORIGIN_OK);
        assert!(
            preflight.headers()[ACCESS_CONTROL_ALLOW_METHODS]
                .to_str()
                .unwrap()
                .contains("PUT")
        );
        assert!(
            preflight.headers()[ACCESS_CONTROL_ALLOW_HEADERS]
                .to_str()
                .unwrap()
                .contains("authorization")
        );

        let foreign = handle(
            request(Method::OPTIONS, None, Some("https://evil.example"), ""),
            &state,
        )
        .await;
        assert!(foreign.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(
            foreign
                .headers()
                .get(ACCESS_CONTROL_ALLOW_METHODS)
                .is_none()
        );

        // Errors carry the header too, so the dashboard can read why.
        let refused = handle(request(Method::PUT, None, Some(ORIGIN_OK), ""), &state).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(refused.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], ORIGIN_OK);
        assert_eq!(refused.headers()[VARY], "Origin");

        let wrong_method = handle(request(Method::GET, None, Some(ORIGIN_OK), ""), &state).await;
        assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}

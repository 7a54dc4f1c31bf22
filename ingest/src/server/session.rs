//! `PUT` and `DELETE /v1/tradingview-session`: the trader hands over (or
//! withdraws) their TradingView session from the dashboard.
//!
//! - **Who.** The caller is the signed-in trader, proven by their Supabase
//!   access token ([`crate::auth`]); without a valid one the answer is 401,
//!   before the body is read.
//! - **What.** `PUT` body `{"sessionid": ..., "sessionid_sign": ...}`: the
//!   pair is sealed ([`cookie_seal`], the user id as associated data) and
//!   stored as the trader's valid session. `DELETE` forgets it. The
//!   plaintext exists only in this request's memory and is never logged.
//! - **How it is stored.** `public.set_tradingview_session` through the
//!   same database path as every webhook ([`crate::db`]: PostgREST or the
//!   direct pool), so the endpoint works whichever ingest is configured
//!   with, and the function, not this module, decides what may be stored.
//! - **Where from.** The dashboard calls this directly from the browser, so
//!   the configured origin gets CORS headers (preflight included, and on
//!   errors, so the dashboard can read why); other origins get none and the
//!   browser refuses the answer.
//!
//! Every refusal is an [`ApiError`]: 401 `missing_token`/`invalid_token`,
//! 400 `invalid_body`, 404 `not_found` (no settings row for this user),
//! 405, 408 (the body did not arrive in time), 503 `unavailable`.

use std::sync::Arc;

use bytes::Bytes;
use cookie_seal::{Keyring, TradingViewSession};
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, HeaderMap, HeaderValue, ORIGIN, VARY,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use service_runtime::http::respond;
use uuid::Uuid;

use super::{Answered, App, refused};
use crate::api::{ApiError, Body};
use crate::auth::{self, Verifier};

/// The path this module serves.
pub const PATH: &str = "/v1/tradingview-session";
/// The methods it answers.
const METHODS: &str = "PUT, DELETE, OPTIONS";
/// Largest accepted body: two cookies and some JSON.
const MAX_BODY: usize = 4096;
/// Longest accepted cookie value.
const MAX_COOKIE: usize = 1024;

/// The endpoint's parts: who may call, what seals, which origin may call
/// from a browser.
#[derive(Debug)]
pub struct SessionEndpoint {
    verifier: Verifier,
    keys: Arc<Keyring>,
    cors_origin: Option<HeaderValue>,
}

impl SessionEndpoint {
    /// `cors_origin`: the dashboard's origin (`https://app.example.com`).
    pub fn new(verifier: Verifier, keys: Arc<Keyring>, cors_origin: Option<HeaderValue>) -> Self {
        Self {
            verifier,
            keys,
            cors_origin,
        }
    }

    /// The request's `Origin` when it is the configured one.
    fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        self.cors_origin
            .as_ref()
            .filter(|allowed| headers.get(ORIGIN) == Some(*allowed))
            .cloned()
    }
}

/// The body of a `PUT`.
#[derive(Deserialize)]
struct Cookies {
    sessionid: String,
    sessionid_sign: String,
}

impl Cookies {
    /// The pair as a session, if both values could be cookies.
    fn into_session(self) -> Option<TradingViewSession> {
        let ok = |value: &str| {
            !value.is_empty()
                && value.len() <= MAX_COOKIE
                && value.bytes().all(|b| {
                    b.is_ascii_graphic() && b != b';' && b != b',' && b != b'"' && b != b'\\'
                })
        };
        (ok(&self.sessionid) && ok(&self.sessionid_sign)).then_some(TradingViewSession {
            sessionid: self.sessionid,
            sessionid_sign: self.sessionid_sign,
        })
    }
}

impl App {
    /// One request to [`PATH`], CORS headers included.
    pub(super) async fn session(&self, request: Request<Incoming>) -> Answered {
        let Some(endpoint) = &self.session else {
            return refused(ApiError::NotFound { path: PATH.into() });
        };
        let origin = endpoint.allowed_origin(request.headers());
        let (outcome, mut response) = if request.method() == Method::OPTIONS {
            ("ok", preflight(origin.is_some()))
        } else {
            match self.store_session(endpoint, request).await {
                Ok(response) => ("ok", response),
                Err(error) => refused(error),
            }
        };
        let headers = response.headers_mut();
        headers.insert(VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = origin {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        (outcome, response)
    }

    /// `PUT` (seal and store) or `DELETE` (forget) for the token's user.
    async fn store_session(
        &self,
        endpoint: &SessionEndpoint,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        let method = request.method().clone();
        if method != Method::PUT && method != Method::DELETE {
            return Err(ApiError::MethodNotAllowed {
                method,
                allow: METHODS,
            });
        }
        let token = auth::bearer(request.headers()).ok_or(ApiError::MissingToken)?;
        let user_id = endpoint
            .verifier
            .user_id(token)
            .await
            .ok_or(ApiError::InvalidToken)?;
        let sealed = if method == Method::DELETE {
            None
        } else {
            let session = self.read_cookies(request).await?;
            Some(endpoint.keys.seal(user_id, &session))
        };
        match self.db.set_session(user_id, sealed.as_deref()).await {
            Ok(true) => {}
            Ok(false) => return Err(ApiError::UnknownUser),
            Err(error) => {
                self.db_failed(&error, "answered 503");
                return Err(ApiError::SessionNotStored);
            }
        }
        log_stored(user_id, sealed.is_some(), endpoint);
        Ok(respond(
            StatusCode::OK,
            &json!({ "success": true, "cookies_valid": sealed.is_some() }),
        ))
    }

    /// The two cookies from the body, read within the read timeout.
    async fn read_cookies(
        &self,
        request: Request<Incoming>,
    ) -> Result<TradingViewSession, ApiError> {
        let body = Limited::new(request.into_body(), MAX_BODY).collect();
        let bytes = tokio::time::timeout(self.settings.read_timeout, body)
            .await
            .map_err(|_| ApiError::RequestTimeout)?
            .map_err(|_| ApiError::InvalidSession)?
            .to_bytes();
        serde_json::from_slice::<Cookies>(&bytes)
            .ok()
            .and_then(Cookies::into_session)
            .ok_or(ApiError::InvalidSession)
    }
}

fn log_stored(user_id: Uuid, stored: bool, endpoint: &SessionEndpoint) {
    if stored {
        tracing::info!(%user_id, key_id = endpoint.keys.current_key_id(), "TradingView session stored");
    } else {
        tracing::info!(%user_id, "TradingView session removed");
    }
}

/// The answer to a CORS preflight: 204, and what the browser may send when
/// the origin is the dashboard's.
fn preflight(allowed: bool) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    if allowed {
        let headers = response.headers_mut();
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(METHODS),
        );
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, apikey, x-client-info"),
        );
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::Cookies;

    fn cookies(sessionid: &str, sessionid_sign: &str) -> Cookies {
        Cookies {
            sessionid: sessionid.into(),
            sessionid_sign: sessionid_sign.into(),
        }
    }

    #[test]
    fn only_values_that_can_be_cookies_make_a_session() {
        assert!(cookies("abc123", "v3:sig+/=").into_session().is_some());
        for (id, sign) in [
            ("", "x"),
            ("x", ""),
            ("a b", "x"),
            ("a;b", "x"),
            ("x", "a,b"),
            ("x", "a\"b"),
            ("x", "a\\b"),
            ("é", "x"),
        ] {
            assert!(
                cookies(id, sign).into_session().is_none(),
                "{id:?} {sign:?}"
            );
        }
        let long = "a".repeat(1025);
        assert!(cookies(&long, "x").into_session().is_none());
        assert!(cookies(&"a".repeat(1024), "x").into_session().is_some());
    }
}

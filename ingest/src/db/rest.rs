//! PostgREST's RPC endpoint, called with the workspace's own reqwest.
//!
//! Why not the `postgrest` crate: its newest release (1.6) still builds on
//! reqwest 0.11, which brings rustls-webpki 0.101 (RUSTSEC-2026-0049) and
//! the unmaintained rustls-pemfile 1 into the build, and all ingest needs
//! from it is one `POST /rest/v1/rpc/{function}` with a JSON body. This
//! sends exactly what the crate sent (`Accept` and `Content-Type:
//! application/json`, the key as `apikey` and, for a legacy JWT, as the
//! bearer token) over one client shared by every call, so connections to
//! PostgREST are kept alive and reused instead of paying a handshake per
//! webhook.

use std::time::Duration;

use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use service_runtime::SecretString;
use service_runtime::secret::supabase_service_headers;
use url::Url;

use super::DbError;

/// How long an idle connection to PostgREST is kept for the next call.
/// Shorter than the usual upstream keep-alive of a gateway (nginx: 60 s),
/// so the gateway never closes a connection just as a call is sent on it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept: enough for every call in flight at once to find
/// one after a burst.
const MAX_IDLE: usize = 64;
/// The most bytes of a batch's body, unless told otherwise
/// (`INGEST_DB_MAX_BATCH_BYTES`): what nginx, and Kong in front of a
/// Supabase project, keep of a request body in memory by default.
pub const DEFAULT_MAX_BATCH_BYTES: u32 = 8192;

/// PostgREST reached with the service key.
pub struct RestPath {
    client: reqwest::Client,
    /// `{SUPABASE_URL}/rest/v1/rpc/`.
    rpc_base: String,
    headers: HeaderMap,
    max_batch_bytes: usize,
}

impl std::fmt::Debug for RestPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestPath")
            .field("rpc_base", &self.rpc_base)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .finish_non_exhaustive()
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RestPathError {
    /// The key holds bytes no HTTP header may carry (the message never
    /// repeats it).
    #[error("the Supabase key is not a valid HTTP header value")]
    Key,
    #[error("the HTTP client could not be built")]
    Client(#[source] reqwest::Error),
}

impl RestPath {
    pub fn new(supabase_url: &Url, key: &SecretString) -> Result<Self, RestPathError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in supabase_service_headers(key) {
            let mut value = HeaderValue::from_str(&value).map_err(|_| RestPathError::Key)?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static(name_lowercase(name)), value);
        }
        let client = reqwest::Client::builder()
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE)
            .tcp_nodelay(true)
            .build()
            .map_err(RestPathError::Client)?;
        Ok(Self {
            client,
            rpc_base: format!(
                "{}/rest/v1/rpc/",
                supabase_url.as_str().trim_end_matches('/')
            ),
            headers,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES as usize,
        })
    }

    /// Batches of alerts go in bodies of at most `bytes` (one alert larger
    /// than that goes alone).
    ///
    /// Why: a gateway keeps a request body up to its buffer (8 KiB by
    /// default in nginx and Kong) in memory, and writes a larger one to a
    /// file first, then forwards it in two writes. Measured on the local
    /// stack, the second part reached PostgREST about 40 ms after the first
    /// (Nagle's algorithm on the gateway's connection, waiting for
    /// PostgREST's delayed ACK), and the whole call waited: 2% of calls
    /// took 55-100 ms, and the path answered half as many alerts a second
    /// as with bodies under 8 KiB (BENCHMARKS.md, "the gateway's body
    /// buffer").
    #[must_use]
    pub fn with_max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// See [`RestPath::with_max_batch_bytes`].
    pub fn max_batch_bytes(&self) -> usize {
        self.max_batch_bytes
    }

    /// `POST /rest/v1/rpc/{function}` with `args` as the body; the answer's
    /// JSON, or why there is none.
    pub(super) async fn rpc(&self, function: &str, args: &Value) -> Result<Value, DbError> {
        let body = serde_json::to_vec(args).map_err(DbError::Decode)?;
        let response = self
            .client
            .post(format!("{}{function}", self.rpc_base))
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| DbError::Http(e.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| DbError::Http(e.without_url().to_string()))?;
        if !status.is_success() {
            return Err(DbError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            });
        }
        serde_json::from_slice(&body).map_err(DbError::Decode)
    }
}

/// `supabase_service_headers` names its headers as HTTP spells them; a
/// `HeaderName` wants them lowercase.
fn name_lowercase(name: &'static str) -> &'static str {
    match name {
        "Authorization" => "authorization",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(key: &str) -> RestPath {
        RestPath::new(
            &"http://127.0.0.1:54321/".parse().expect("url"),
            &SecretString::from(key.to_owned()),
        )
        .expect("a client")
    }

    #[test]
    fn a_secret_key_goes_in_apikey_only_and_never_prints() {
        let rest = path("sb_secret_abc");
        assert_eq!(rest.rpc_base, "http://127.0.0.1:54321/rest/v1/rpc/");
        assert_eq!(rest.headers["apikey"], "sb_secret_abc");
        assert!(rest.headers.get("authorization").is_none());
        assert_eq!(rest.headers["accept"], "application/json");
        assert_eq!(rest.headers["content-type"], "application/json");
        assert!(rest.headers["apikey"].is_sensitive());
        assert!(!format!("{rest:?}").contains("sb_secret_abc"));
    }

    #[test]
    fn a_legacy_key_is_also_the_bearer_token() {
        let rest = path("eyJhbGciOi.legacy.jwt");
        assert_eq!(
            rest.headers["authorization"],
            "Bearer eyJhbGciOi.legacy.jwt"
        );
        assert!(rest.headers["authorization"].is_sensitive());
    }

    #[test]
    fn a_key_that_cannot_be_a_header_is_refused_without_repeating_it() {
        let error = RestPath::new(
            &"http://127.0.0.1:54321".parse().expect("url"),
            &SecretString::from("sb_secret_\nline".to_owned()),
        )
        .expect_err("a newline cannot be in a header");
        assert!(!format!("{error} {error:?}").contains("line"));
    }
}

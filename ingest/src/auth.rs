//! Who is calling: the trader's Supabase access token, verified.
//!
//! The session endpoint is called from the dashboard in the trader's
//! browser, so the caller proves who they are with the access token Supabase
//! Auth gave them (`Authorization: Bearer`). [`Verifier::user_id`] accepts a
//! token only when:
//!
//! - it is signed by the project: asymmetric tokens (ES256, RS256, `EdDSA`)
//!   with a key from the project's JWKS, legacy HS256 tokens with the JWT
//!   secret; any other algorithm is refused;
//! - it has not expired (5 s of leeway for clock skew), carries the
//!   configured audience (`authenticated` on Supabase) and was issued by the
//!   project's Auth (`iss` is `{SUPABASE_URL}/auth/v1`, as Supabase writes
//!   it): a token another project or another issuer signed with a key we
//!   happen to trust is still not ours;
//! - its `role` is `authenticated`: Supabase signs `anon` and `service_role`
//!   tokens with the same keys, and neither is a signed-in trader;
//! - its `sub` is a user id.
//!
//! The JWKS is fetched from `SUPABASE_JWKS_URL` when first needed and
//! trusted for [`JWKS_TTL`]; a token naming a key id the cached set lacks
//! (the project rotated its keys) refetches it. Refreshes are single-flight
//! and at most one per [`JWKS_MIN_REFETCH`], so a burst of tokens with
//! random key ids makes at most one request to Supabase Auth (the others
//! wait for it, then read its result), never a load generator. A refresh
//! that fails, or answers something that is not a JWKS with keys, keeps
//! the last good set (stale-if-error): an Auth outage or a broken proxy in
//! front of it must not log every trader out.
//!
//! Why a token was refused is not told to the caller (every refusal is
//! the same "invalid access token"), nor logged: a bad token is the
//! caller's mistake, not ours.

use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::AUTHORIZATION;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use url::Url;
use uuid::Uuid;

/// How long a fetched JWKS is trusted before it is fetched again.
pub const JWKS_TTL: Duration = Duration::from_mins(10);
/// The JWKS is fetched at most this often, whatever the tokens name.
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// The only `role` a trader's access token carries.
const ROLE: &str = "authenticated";
/// How long fetching the JWKS may take.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Clock skew tolerated on `exp`.
const LEEWAY_SECONDS: u64 = 5;

/// What a token must be signed with and carry.
#[derive(Debug)]
pub struct VerifierConfig {
    /// The project's JWKS (`{SUPABASE_URL}/auth/v1/.well-known/jwks.json`),
    /// for asymmetric access tokens. `None`: only keys given to
    /// [`Verifier::preload_jwks`] verify them.
    pub jwks_url: Option<Url>,
    /// The legacy JWT secret, for HS256 access tokens. `None`: HS256 tokens
    /// are refused.
    pub jwt_secret: Option<SecretString>,
    /// The `aud` access tokens must carry (Supabase: `authenticated`).
    pub audience: String,
    /// The `iss` access tokens must carry (Supabase: `{SUPABASE_URL}/auth/v1`).
    pub issuer: String,
    /// How long a fetched JWKS is trusted ([`JWKS_TTL`]).
    pub jwks_ttl: Duration,
    /// The least time between two JWKS fetches ([`JWKS_MIN_REFETCH`]).
    pub jwks_min_refetch: Duration,
}

/// Verifies access tokens; holds the JWKS cache.
#[derive(Debug)]
pub struct Verifier {
    config: VerifierConfig,
    http: reqwest::Client,
    jwks: RwLock<Option<CachedJwks>>,
    /// Held by the one task refreshing the JWKS; holds when the last fetch started.
    refresh: Mutex<Option<Instant>>,
}

#[derive(Debug)]
struct CachedJwks {
    set: JwkSet,
    fetched: Instant,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: Uuid,
    role: String,
}

/// Why a JWKS refresh kept the previous set.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("the answer is not a JWKS: {0}")]
    NotAJwks(#[from] serde_json::Error),
    #[error("the JWKS holds no keys")]
    NoKeys,
}

impl Verifier {
    pub fn new(config: VerifierConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .build()?;
        Ok(Self {
            config,
            http,
            jwks: RwLock::new(None),
            refresh: Mutex::new(None),
        })
    }

    /// Uses `set` as the JWKS instead of fetching it (a project whose keys
    /// are given inline, and tests). Without a JWKS URL it never expires.
    pub async fn preload_jwks(&self, set: JwkSet) {
        *self.jwks.write().await = Some(CachedJwks {
            set,
            fetched: Instant::now(),
        });
    }

    /// The user id of a valid access token; `None` for any other token.
    pub async fn user_id(&self, token: &str) -> Option<Uuid> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let key = match header.alg {
            Algorithm::HS256 => {
                let secret = self.config.jwt_secret.as_ref()?;
                DecodingKey::from_secret(secret.expose_secret().as_bytes())
            }
            Algorithm::ES256 | Algorithm::RS256 | Algorithm::EdDSA => {
                self.jwk_key(header.kid.as_deref()?).await?
            }
            _ => return None,
        };
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.config.audience]);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .ok()
            .filter(|data| data.claims.role == ROLE)
            .map(|data| data.claims.sub)
    }

    /// The JWKS key `kid`, from the cache or a refresh (see the module doc).
    async fn jwk_key(&self, kid: &str) -> Option<DecodingKey> {
        if let Some(key) = self.cached_key(kid, true).await {
            return Some(key);
        }
        let url = self.config.jwks_url.as_ref()?;
        // Single flight: whoever holds the lock fetches; the others wait, then
        // find its result in the cache (or that no fetch is due yet).
        let mut last_fetch = self.refresh.lock().await;
        if let Some(key) = self.cached_key(kid, true).await {
            return Some(key);
        }
        if last_fetch.is_none_or(|at| at.elapsed() >= self.config.jwks_min_refetch) {
            *last_fetch = Some(Instant::now());
            match self.fetch_jwks(url).await {
                Ok(set) => {
                    *self.jwks.write().await = Some(CachedJwks {
                        set,
                        fetched: Instant::now(),
                    });
                }
                Err(error) => {
                    tracing::warn!(error = %error, "Refreshing the JWKS failed; keeping the last good keys");
                }
            }
        }
        drop(last_fetch);
        // Fresh or not: a key we hold verifies until a good set replaces it.
        self.cached_key(kid, false).await
    }

    /// `kid` from the cached set; with `fresh_only`, only while the set is
    /// within its TTL (a set given to [`Self::preload_jwks`] without a JWKS
    /// URL never expires).
    async fn cached_key(&self, kid: &str, fresh_only: bool) -> Option<DecodingKey> {
        let cache = self.jwks.read().await;
        let cached = cache.as_ref()?;
        let fresh =
            cached.fetched.elapsed() < self.config.jwks_ttl || self.config.jwks_url.is_none();
        if fresh_only && !fresh {
            return None;
        }
        let jwk = cached.set.find(kid)?;
        DecodingKey::from_jwk(jwk).ok()
    }

    async fn fetch_jwks(&self, url: &Url) -> Result<JwkSet, FetchError> {
        let text = self
            .http
            .get(url.clone())
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let set = parse_jwks(&text)?;
        if set.keys.is_empty() {
            return Err(FetchError::NoKeys);
        }
        Ok(set)
    }
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Parses a JWKS document (`{"keys": [...]}`).
pub fn parse_jwks(text: &str) -> Result<JwkSet, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    use http::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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
    const ISSUER: &str = "http://127.0.0.1:54321/auth/v1";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn config(jwks_url: Option<Url>, jwt_secret: Option<&str>) -> VerifierConfig {
        VerifierConfig {
            jwks_url,
            jwt_secret: jwt_secret.map(|s| SecretString::from(s.to_owned())),
            audience: "authenticated".into(),
            issuer: ISSUER.into(),
            jwks_ttl: JWKS_TTL,
            jwks_min_refetch: JWKS_MIN_REFETCH,
        }
    }

    fn jwks_document() -> String {
        json!({ "keys": [{ "kty": "EC", "crv": "P-256", "x": ES256_X, "y": ES256_Y, "kid": "kid-1", "alg": "ES256", "use": "sig" }] })
            .to_string()
    }

    async fn verifier(jwt_secret: Option<&str>) -> Verifier {
        let verifier = Verifier::new(config(None, jwt_secret)).unwrap();
        verifier
            .preload_jwks(parse_jwks(&jwks_document()).unwrap())
            .await;
        verifier
    }

    fn claims(user: Uuid, aud: &str, exp: u64) -> serde_json::Value {
        json!({ "sub": user, "aud": aud, "iss": ISSUER, "role": "authenticated", "exp": exp, "iat": now() })
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
        es256_kid(claims, pem, "kid-1")
    }

    fn es256_kid(claims: &serde_json::Value, pem: &str, kid: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn valid_tokens_of_both_kinds_name_their_user() {
        let verifier = verifier(Some(SECRET)).await;
        let user = Uuid::new_v4();
        let good = claims(user, "authenticated", now() + 600);
        assert_eq!(verifier.user_id(&hs256(&good, SECRET)).await, Some(user));
        assert_eq!(
            verifier.user_id(&es256(&good, ES256_PRIVATE)).await,
            Some(user)
        );
    }

    #[tokio::test]
    async fn expired_wrong_audience_and_wrong_signature_are_refused() {
        let verifier = verifier(Some(SECRET)).await;
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
            assert_eq!(verifier.user_id(&token).await, None, "{token} was accepted");
        }
    }

    #[tokio::test]
    async fn without_a_jwt_secret_hs256_is_refused() {
        let verifier = verifier(None).await;
        let good = claims(Uuid::new_v4(), "authenticated", now() + 600);
        assert_eq!(verifier.user_id(&hs256(&good, SECRET)).await, None);
        assert!(
            verifier
                .user_id(&es256(&good, ES256_PRIVATE))
                .await
                .is_some(),
            "the JWKS still verifies"
        );
    }

    #[tokio::test]
    async fn another_issuer_or_a_role_other_than_authenticated_is_refused() {
        let verifier = verifier(Some(SECRET)).await;
        let good = claims(Uuid::new_v4(), "authenticated", now() + 600);
        let with = |field: &str, value: serde_json::Value| {
            let mut claims = good.clone();
            claims[field] = value;
            claims
        };
        let without = |field: &str| {
            let mut claims = good.clone();
            claims.as_object_mut().unwrap().remove(field);
            claims
        };
        for (what, claims) in [
            (
                "another project",
                with("iss", json!("https://other.supabase.co/auth/v1")),
            ),
            ("no iss", without("iss")),
            ("anon", with("role", json!("anon"))),
            ("service_role", with("role", json!("service_role"))),
            ("no role", without("role")),
        ] {
            assert_eq!(
                verifier.user_id(&hs256(&claims, SECRET)).await,
                None,
                "{what}"
            );
            assert_eq!(
                verifier.user_id(&es256(&claims, ES256_PRIVATE)).await,
                None,
                "{what}"
            );
        }
    }

    /// A JWKS endpoint that answers the queued `(status, body)` pairs in
    /// turn (the last one again when the queue runs dry), each after
    /// `delay`, and counts the requests.
    struct JwksStub {
        url: Url,
        requests: Arc<AtomicUsize>,
    }

    impl JwksStub {
        async fn start(answers: Vec<(u16, String)>, delay: Duration) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = Url::parse(&format!(
                "http://{}/auth/v1/.well-known/jwks.json",
                listener.local_addr().unwrap()
            ))
            .unwrap();
            let requests = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&requests);
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = answers[n.min(answers.len() - 1)].clone();
                    tokio::spawn(async move {
                        let mut request = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !request.ends_with(b"\r\n\r\n") {
                            let read = stream.read(&mut buf).await.unwrap();
                            assert!(read > 0, "the request ended early");
                            request.extend_from_slice(&buf[..read]);
                        }
                        let request = String::from_utf8(request).unwrap();
                        assert!(
                            request.starts_with("GET /auth/v1/.well-known/jwks.json HTTP/1.1\r\n"),
                            "{request}"
                        );
                        tokio::time::sleep(delay).await;
                        let answer = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        stream.write_all(answer.as_bytes()).await.unwrap();
                    });
                }
            });
            Self { url, requests }
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_burst_of_unknown_key_ids_makes_one_jwks_request() {
        let stub = JwksStub::start(vec![(200, jwks_document())], Duration::from_millis(200)).await;
        let verifier = Arc::new(Verifier::new(config(Some(stub.url.clone()), None)).unwrap());
        let good = claims(Uuid::new_v4(), "authenticated", now() + 600);
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..50 {
            let token = if i % 2 == 0 {
                es256(&good, ES256_PRIVATE)
            } else {
                es256_kid(&good, ES256_PRIVATE, &format!("random-{i}"))
            };
            let verifier = Arc::clone(&verifier);
            burst.spawn(async move { (i, verifier.user_id(&token).await.is_some()) });
        }
        while let Some(result) = burst.join_next().await {
            let (i, accepted) = result.unwrap();
            assert_eq!(accepted, i % 2 == 0, "token {i}");
        }
        assert_eq!(stub.requests(), 1, "one fetch for the whole burst");
        // Within the minimum interval another unknown key id fetches nothing.
        let unknown = es256_kid(&good, ES256_PRIVATE, "random-again");
        assert_eq!(verifier.user_id(&unknown).await, None);
        assert_eq!(stub.requests(), 1);
    }

    #[tokio::test]
    async fn a_failed_or_garbage_refresh_keeps_the_last_good_keys() {
        let stub = JwksStub::start(
            vec![
                (200, jwks_document()),
                (500, "{}".into()),
                (200, "<html>maintenance</html>".into()),
                (200, r#"{"keys":[]}"#.into()),
            ],
            Duration::ZERO,
        )
        .await;
        let verifier = Verifier::new(VerifierConfig {
            // Every use finds the set expired and refreshes it.
            jwks_ttl: Duration::ZERO,
            jwks_min_refetch: Duration::ZERO,
            ..config(Some(stub.url.clone()), None)
        })
        .unwrap();
        let user = Uuid::new_v4();
        let token = es256(&claims(user, "authenticated", now() + 600), ES256_PRIVATE);
        for round in 1..=4 {
            assert_eq!(verifier.user_id(&token).await, Some(user), "round {round}");
            assert_eq!(stub.requests(), round);
        }
        let forged = es256(&claims(user, "authenticated", now() + 600), OTHER_PRIVATE);
        assert_eq!(verifier.user_id(&forged).await, None);
    }

    #[test]
    fn bearer_reads_only_a_bearer_token() {
        let headers = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
            headers
        };
        assert_eq!(bearer(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}

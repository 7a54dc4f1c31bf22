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
//! - it has not expired (5 s of leeway for clock skew) and carries the
//!   configured audience (`authenticated` on Supabase);
//! - its `sub` is a user id.
//!
//! The JWKS is fetched from `SUPABASE_JWKS_URL` when first needed and
//! trusted for [`JWKS_TTL`]; a token naming a key id the cached set lacks
//! (the project rotated its keys) refetches it, at most once per
//! [`JWKS_MIN_REFETCH`], so a stream of forged key ids cannot turn ingest
//! into a load generator against Supabase Auth. A failed fetch keeps the
//! old set and refuses only the tokens it cannot check.
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
use tokio::sync::RwLock;
use url::Url;
use uuid::Uuid;

/// How long a fetched JWKS is trusted before it is fetched again.
pub const JWKS_TTL: Duration = Duration::from_mins(10);
/// An unknown `kid` refetches the JWKS at most this often.
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
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
}

/// Verifies access tokens; holds the JWKS cache.
#[derive(Debug)]
pub struct Verifier {
    config: VerifierConfig,
    http: reqwest::Client,
    jwks: RwLock<Option<CachedJwks>>,
}

#[derive(Debug)]
struct CachedJwks {
    set: JwkSet,
    fetched: Instant,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: Uuid,
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
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .ok()
            .map(|data| data.claims.sub)
    }

    /// The JWKS key `kid`, from the cache or a refetch (see the module doc).
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
    use std::time::{SystemTime, UNIX_EPOCH};

    use http::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

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

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    async fn verifier(jwt_secret: Option<&str>) -> Verifier {
        let verifier = Verifier::new(VerifierConfig {
            jwks_url: None,
            jwt_secret: jwt_secret.map(|s| SecretString::from(s.to_owned())),
            audience: "authenticated".into(),
        })
        .unwrap();
        let jwks = parse_jwks(
            &json!({ "keys": [{ "kty": "EC", "crv": "P-256", "x": ES256_X, "y": ES256_Y, "kid": "kid-1", "alg": "ES256", "use": "sig" }] })
                .to_string(),
        )
        .unwrap();
        verifier.preload_jwks(jwks).await;
        verifier
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

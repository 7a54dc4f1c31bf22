//! Where screenshots go, and how they are removed: Supabase Storage over
//! REST, or a directory.
//!
//! Objects are named `{user_id}/{signal_id}.png`, the path the bucket's
//! policies check. Both backends overwrite: a retried or re-claimed job that
//! uploads again replaces the same object, so a crash between upload and
//! completion leaves one object, not two.
//!
//! **Storage's answers, read as Storage means them.** Supabase's Storage
//! server answers most errors with HTTP 400 and the real status in its JSON
//! body (`{"statusCode":"403","error":"Unauthorized","message":"signature
//! verification failed"}`; only a `statusCode` of `"500"` is sent as HTTP
//! 500, see its `src/http/error-handler.ts`), while the gateway in front of
//! it answers 502-504 with bodies of its own. [`Refusal`] reads the body's
//! status when there is one and the HTTP status otherwise, and decides from
//! it: what a retry can fix (5xx, 429, 408, a network error or timeout) is
//! retried on the queue's schedule; anything else (403 a refused key, 404 a
//! missing bucket, 413 too large, 415 a MIME type the bucket refuses) fails
//! the job at once. The trader reads [`StorageError::trader_reason`]; the
//! operator's detail (status, error, message) is in the error's `Display`,
//! which the worker logs.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use reqwest::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;
use service_runtime::secret::supabase_service_headers;
use url::Url;
use uuid::Uuid;

/// How much of an error body is kept for the log.
const KEPT_BODY_CHARS: usize = 300;

/// `STORAGE`: `fs:<dir>` or `supabase`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageKind {
    /// Files under a local directory (the local stack's default).
    Fs(PathBuf),
    /// The Supabase Storage REST API at `SUPABASE_URL`.
    Supabase,
}

impl FromStr for StorageKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "supabase" {
            Ok(Self::Supabase)
        } else if let Some(dir) = s.strip_prefix("fs:").filter(|d| !d.is_empty()) {
            Ok(Self::Fs(PathBuf::from(dir)))
        } else {
            Err("expected `supabase` or `fs:<directory>`".into())
        }
    }
}

/// A request Supabase Storage (or the gateway in front of it) answered with
/// an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status of the answer (mostly 400, whatever went wrong).
    pub http_status: u16,
    /// What went wrong: the body's `statusCode` when it has one, else the
    /// HTTP status.
    pub status: u16,
    /// The body's `error` (or `code`), e.g. `Unauthorized`.
    pub error: Option<String>,
    /// The body's `message`, or the start of a body that is not Storage's
    /// JSON.
    pub message: Option<String>,
}

/// The part of Storage's error body that is read.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "statusCode")]
    status_code: Option<serde_json::Value>,
    error: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

impl Refusal {
    /// Reads an error answer: Storage's JSON body when it is one.
    pub fn from_answer(http_status: StatusCode, body: &[u8]) -> Self {
        let http_status = http_status.as_u16();
        let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            return Self {
                http_status,
                status: http_status,
                error: None,
                message: (!text.is_empty()).then(|| text.chars().take(KEPT_BODY_CHARS).collect()),
            };
        };
        // Storage sends the code as a string ("403"); accept a number too.
        let status = parsed
            .status_code
            .and_then(|code| match code {
                serde_json::Value::String(s) => s.trim().parse::<u16>().ok(),
                serde_json::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                _ => None,
            })
            .filter(|code| (100..=599).contains(code))
            .unwrap_or(http_status);
        let keep = |s: String| s.chars().take(KEPT_BODY_CHARS).collect::<String>();
        Self {
            http_status,
            status,
            error: parsed.error.or(parsed.code).map(keep),
            message: parsed.message.map(keep),
        }
    }

    /// Whether trying again later can succeed: Storage or its gateway was
    /// overloaded, unavailable or slow. Everything else (a refused key, a
    /// missing bucket, a picture too large or of a refused type) answers the
    /// same however often it is asked.
    pub fn is_transient(&self) -> bool {
        self.status >= 500 || self.status == 429 || self.status == 408
    }

    /// What the trader reads on the signal.
    pub fn trader_reason(&self) -> String {
        let why = match self.status {
            401 | 403 => {
                "storage refused the screenshot service's credentials (a problem on our side, not with your chart)"
            }
            404 => {
                "the storage bucket for screenshots does not exist (a problem on our side, not with your chart)"
            }
            413 => "the picture is larger than storage accepts",
            415 => {
                "storage does not accept this kind of picture (a problem on our side, not with your chart)"
            }
            status if status >= 500 || status == 429 || status == 408 => {
                "the storage service was unavailable"
            }
            _ => "storage refused it",
        };
        format!("The screenshot could not be stored: {why}.")
    }
}

impl std::fmt::Display for Refusal {
    /// The operator's detail: `403 Unauthorized: signature verification
    /// failed (HTTP 400)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(error) = &self.error {
            write!(f, " {error}")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        if self.http_status != self.status {
            write!(f, " (HTTP {})", self.http_status)?;
        }
        Ok(())
    }
}

/// An upload failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("could not write the screenshot file")]
    Io(#[from] std::io::Error),
    /// No answer: connection refused, reset, timed out.
    #[error("Supabase Storage could not be reached")]
    Unreachable(#[source] reqwest::Error),
    #[error("Supabase Storage refused the upload: {0}")]
    Refused(Refusal),
}

impl StorageError {
    /// Whether the job should be retried on the queue's schedule.
    pub fn is_transient(&self) -> bool {
        match self {
            // A full or briefly unavailable disk; retrying is cheap.
            Self::Io(_) | Self::Unreachable(_) => true,
            Self::Refused(refusal) => refusal.is_transient(),
        }
    }

    /// What the trader reads on the signal (`screenshot_error`).
    pub fn trader_reason(&self) -> String {
        match self {
            Self::Io(_) => {
                "The screenshot could not be stored: the screenshot service could not write it to disk."
                    .into()
            }
            Self::Unreachable(_) => {
                "The screenshot could not be stored: the storage service was unavailable.".into()
            }
            Self::Refused(refusal) => refusal.trader_reason(),
        }
    }
}

/// Why objects could not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("Storage refused the delete: {0}")]
    Refused(Refusal),
    #[error("Storage could not be reached")]
    Unreachable(#[source] reqwest::Error),
    #[error("could not delete {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the screenshots live, as far as removing them needs it (retention
/// and deleted signals).
pub trait DeleteObjects {
    /// Deletes the objects at `paths` (`{user_id}/{signal_id}.png`). Paths
    /// that do not exist (any more) are not an error.
    fn delete(&self, paths: &[String]) -> impl Future<Output = Result<(), DeleteError>> + Send;
}

/// Where a stored screenshot can be found.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The object path (`{user_id}/{signal_id}.png`), for `screenshot_path`.
    pub path: String,
    /// A public URL, only when the bucket is public (`screenshot_url`).
    pub url: Option<String>,
}

/// The configured backend.
#[derive(Clone, Debug)]
pub enum Storage {
    Fs {
        dir: PathBuf,
    },
    Supabase {
        http: reqwest::Client,
        base: Url,
        bucket: String,
        key: SecretString,
        public: bool,
    },
}

impl Storage {
    /// A Supabase Storage client for `base` (the project URL).
    pub fn supabase(
        base: Url,
        bucket: String,
        key: SecretString,
        public: bool,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?;
        Ok(Self::Supabase {
            http,
            base,
            bucket,
            key,
            public,
        })
    }

    /// The object path of a signal's screenshot.
    pub fn object_path(user_id: Uuid, signal_id: Uuid) -> String {
        format!("{user_id}/{signal_id}.png")
    }

    /// Stores `png` for the signal, replacing any earlier upload.
    pub async fn put(
        &self,
        user_id: Uuid,
        signal_id: Uuid,
        png: Vec<u8>,
    ) -> Result<Stored, StorageError> {
        let path = Self::object_path(user_id, signal_id);
        match self {
            Self::Fs { dir } => {
                let user_dir = dir.join(user_id.to_string());
                tokio::fs::create_dir_all(&user_dir).await?;
                let target = user_dir.join(format!("{signal_id}.png"));
                // Write then rename: a reader never sees half a PNG.
                let temp = user_dir.join(format!(".{signal_id}.{}.tmp", Uuid::new_v4()));
                tokio::fs::write(&temp, &png).await?;
                tokio::fs::rename(&temp, &target).await?;
                Ok(Stored { path, url: None })
            }
            Self::Supabase {
                http,
                base,
                bucket,
                key,
                public,
            } => {
                let base = base.as_str().trim_end_matches('/');
                let mut request = http
                    .post(format!("{base}/storage/v1/object/{bucket}/{path}"))
                    .header("x-upsert", "true")
                    .header("content-type", "image/png")
                    .header("cache-control", "max-age=3600")
                    .body(png);
                for (name, value) in supabase_service_headers(key) {
                    request = request.header(name, value);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| StorageError::Unreachable(e.without_url()))?;
                let status = response.status();
                if !status.is_success() {
                    let body = response.bytes().await.unwrap_or_default();
                    return Err(StorageError::Refused(Refusal::from_answer(status, &body)));
                }
                let url =
                    public.then(|| format!("{base}/storage/v1/object/public/{bucket}/{path}"));
                Ok(Stored { path, url })
            }
        }
    }
}

/// The daemon's own [`Storage`] deletes: through Supabase Storage's REST
/// API the way supabase-js's `remove()` does (`DELETE
/// /storage/v1/object/{bucket}` with `{"prefixes": [...]}`; missing objects
/// are simply not in the answer, so repeating a delete is harmless), or from
/// the `fs:` directory at the same relative paths.
impl DeleteObjects for Storage {
    async fn delete(&self, paths: &[String]) -> Result<(), DeleteError> {
        match self {
            Self::Fs { dir } => delete_files(dir, paths).await,
            Self::Supabase {
                http,
                base,
                bucket,
                key,
                ..
            } => {
                let endpoint = format!(
                    "{}/storage/v1/object/{bucket}",
                    base.as_str().trim_end_matches('/')
                );
                let mut request = http
                    .delete(endpoint)
                    .json(&serde_json::json!({ "prefixes": paths }));
                for (name, value) in supabase_service_headers(key) {
                    request = request.header(name, value);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| DeleteError::Unreachable(e.without_url()))?;
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let body = response.bytes().await.unwrap_or_default();
                Err(DeleteError::Refused(Refusal::from_answer(status, &body)))
            }
        }
    }
}

async fn delete_files(root: &Path, paths: &[String]) -> Result<(), DeleteError> {
    for path in paths {
        // Paths come from our own rows (`{uuid}/{uuid}.png`); refuse anything
        // that could step outside the root all the same.
        let relative = Path::new(path);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(DeleteError::Io {
                path: relative.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a relative object path",
                ),
            });
        }
        let full = root.join(relative);
        match tokio::fs::remove_file(&full).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(DeleteError::Io { path: full, source }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_kind_parses() {
        assert_eq!("supabase".parse(), Ok(StorageKind::Supabase));
        assert_eq!(
            "fs:/tmp/shots".parse(),
            Ok(StorageKind::Fs("/tmp/shots".into()))
        );
        assert!("fs:".parse::<StorageKind>().is_err());
        assert!("s3".parse::<StorageKind>().is_err());
    }

    fn refusal(http: u16, body: &str) -> Refusal {
        Refusal::from_answer(StatusCode::from_u16(http).unwrap(), body.as_bytes())
    }

    #[test]
    fn the_status_in_storages_body_wins_over_the_http_status() {
        let r = refusal(
            400,
            r#"{"statusCode":"403","error":"Unauthorized","message":"signature verification failed"}"#,
        );
        assert_eq!((r.http_status, r.status), (400, 403));
        assert!(!r.is_transient());
        assert_eq!(
            r.to_string(),
            "403 Unauthorized: signature verification failed (HTTP 400)"
        );
        assert!(
            r.trader_reason().contains("credentials"),
            "{}",
            r.trader_reason()
        );
        let numeric = refusal(
            400,
            r#"{"statusCode":404,"error":"Bucket not found","message":"Bucket not found"}"#,
        );
        assert_eq!(numeric.status, 404);
        assert!(numeric.trader_reason().contains("bucket"));
    }

    #[test]
    fn what_a_retry_can_fix_is_transient_and_nothing_else() {
        for (http, body, transient) in [
            (
                400,
                r#"{"statusCode":"403","error":"Unauthorized","message":"x"}"#,
                false,
            ),
            (
                400,
                r#"{"statusCode":"404","error":"Bucket not found","message":"x"}"#,
                false,
            ),
            (
                413,
                r#"{"statusCode":"413","error":"Payload too large","message":"x"}"#,
                false,
            ),
            (
                400,
                r#"{"statusCode":"415","error":"invalid_mime_type","message":"x"}"#,
                false,
            ),
            (
                400,
                r#"{"statusCode":"409","error":"Duplicate","message":"x"}"#,
                false,
            ),
            (
                500,
                r#"{"statusCode":"500","error":"Internal","message":"x"}"#,
                true,
            ),
            (
                400,
                r#"{"statusCode":"429","error":"too many","message":"x"}"#,
                true,
            ),
            (503, "<html>Service Unavailable</html>", true),
            (502, "", true),
            (404, "not json", false),
        ] {
            assert_eq!(
                refusal(http, body).is_transient(),
                transient,
                "{http} {body}"
            );
        }
    }

    #[test]
    fn a_body_that_is_not_storages_json_keeps_the_http_status_and_its_start() {
        let r = refusal(503, &format!("upstream down {}", "x".repeat(1000)));
        assert_eq!(r.status, 503);
        assert_eq!(r.error, None);
        assert_eq!(
            r.message.as_ref().map(|m| m.chars().count()),
            Some(KEPT_BODY_CHARS)
        );
        assert_eq!(
            r.trader_reason(),
            "The screenshot could not be stored: the storage service was unavailable."
        );
        // A nonsense statusCode does not replace the HTTP status.
        assert_eq!(refusal(400, r#"{"statusCode":"abc"}"#).status, 400);
        assert_eq!(refusal(400, r#"{"statusCode":"9999"}"#).status, 400);
    }
}

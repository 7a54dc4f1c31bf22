//! Where screenshots go: Supabase Storage over REST, or a directory.
//!
//! Objects are named `{user_id}/{signal_id}.png`, the path the bucket's
//! policies check. Both backends overwrite: a retried or re-claimed job that
//! uploads again replaces the same object, so a crash between upload and
//! completion leaves one object, not two.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use service_runtime::secret::supabase_service_headers;
use url::Url;
use uuid::Uuid;

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

/// An upload failed; the job is retried.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("could not write the screenshot file")]
    Io(#[from] std::io::Error),
    #[error("Supabase Storage is unreachable")]
    Http(#[from] reqwest::Error),
    #[error("Supabase Storage answered {0}")]
    Status(reqwest::StatusCode),
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
                let object_url = format!(
                    "{}/storage/v1/object/{bucket}/{path}",
                    base.as_str().trim_end_matches('/')
                );
                let mut request = http
                    .post(&object_url)
                    .header("x-upsert", "true")
                    .header("content-type", "image/png")
                    .header("cache-control", "max-age=3600")
                    .body(png);
                for (name, value) in supabase_service_headers(key) {
                    request = request.header(name, value);
                }
                let response = request.send().await?;
                if !response.status().is_success() {
                    return Err(StorageError::Status(response.status()));
                }
                let url = public.then(|| {
                    format!(
                        "{}/storage/v1/object/public/{bucket}/{path}",
                        base.as_str().trim_end_matches('/')
                    )
                });
                Ok(Stored { path, url })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StorageKind;

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
}

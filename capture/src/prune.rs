//! `capture prune`: deletes screenshots older than their owner's plan
//! retention, then clears the rows that pointed at them.
//!
//! Why it works this way:
//!
//! - Supabase refuses direct SQL deletes on `storage.objects` (the bytes
//!   live outside Postgres), so objects go through the Storage API first
//!   ([`DeleteObjects`]), and only then does the row forget its path
//!   (`private.forget_pruned_screenshot`).
//! - That order makes every run safe to interrupt and to repeat: a run cut
//!   off after the delete and before the row update leaves rows that are
//!   still due, the next run deletes those (already missing) objects again,
//!   which Storage accepts, and forgets them. Nothing is ever forgotten
//!   whose object might still exist.
//! - Work comes in batches, oldest first, straight from
//!   `private.screenshots_due_for_pruning`, so memory stays flat however
//!   large the backlog, and a cancelled run stops between batches.

use std::future::Future;
use std::path::{Path, PathBuf};

use service_runtime::secret::supabase_service_headers;

use tokio_postgres::Client;

use crate::storage::Storage;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Where the screenshots live, as far as pruning needs it.
pub trait DeleteObjects {
    /// Deletes the objects at `paths` (`{user_id}/{signal_id}.png`). Paths
    /// that do not exist (any more) are not an error.
    fn delete(&self, paths: &[String]) -> impl Future<Output = Result<(), DeleteError>> + Send;
}

/// Why objects could not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("Storage refused the delete ({status}): {body}")]
    Refused { status: u16, body: String },
    #[error("Storage could not be reached")]
    Http(#[source] reqwest::Error),
    #[error("could not delete {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a prune run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("failed to query the screenshots due for pruning")]
    Query(#[source] tokio_postgres::Error),
    #[error("failed to delete a batch of {count} screenshots")]
    Delete {
        count: usize,
        #[source]
        source: DeleteError,
    },
    /// Every row of a batch changed its path between the query and the
    /// update; going on would loop over the same rows.
    #[error("a whole batch of {count} rows changed under the prune; stopping instead of looping")]
    NoProgress { count: usize },
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneReport {
    /// Objects deleted through [`DeleteObjects`].
    pub deleted: u64,
    /// Rows whose screenshot fields were cleared.
    pub forgotten: u64,
    /// Batches processed.
    pub batches: u64,
    /// The run stopped because it was cancelled, not because nothing was left.
    pub cancelled: bool,
}

struct Due {
    signal_id: Uuid,
    path: String,
    retention_days: i32,
}

/// Prunes until nothing is due or `cancel` fires (checked between batches).
pub async fn run(
    db: &Client,
    objects: &impl DeleteObjects,
    batch_size: u16,
    cancel: &CancellationToken,
) -> Result<PruneReport, PruneError> {
    let mut report = PruneReport::default();
    let batch_size = i32::from(batch_size.max(1));
    // Rows the previous batch deleted but could not forget (their path
    // changed under us). Meeting only those again means no progress.
    let mut unforgotten: Vec<Uuid> = Vec::new();
    loop {
        if cancel.is_cancelled() {
            report.cancelled = true;
            return Ok(report);
        }
        let due: Vec<Due> = db
            .query(
                "select signal_id, screenshot_path, retention_days \
                   from private.screenshots_due_for_pruning($1)",
                &[&batch_size],
            )
            .await
            .map_err(PruneError::Query)?
            .into_iter()
            .map(|row| Due {
                signal_id: row.get(0),
                path: row.get(1),
                retention_days: row.get(2),
            })
            .collect();
        if due.is_empty() {
            return Ok(report);
        }
        if due.iter().all(|d| unforgotten.contains(&d.signal_id)) {
            return Err(PruneError::NoProgress { count: due.len() });
        }
        let paths: Vec<String> = due.iter().map(|d| d.path.clone()).collect();
        objects
            .delete(&paths)
            .await
            .map_err(|source| PruneError::Delete {
                count: paths.len(),
                source,
            })?;
        report.deleted += paths.len() as u64;
        let mut forgotten = 0_u64;
        unforgotten.clear();
        for d in &due {
            let row = db
                .query_one(
                    "select private.forget_pruned_screenshot($1, $2, $3)",
                    &[&d.signal_id, &d.path, &d.retention_days],
                )
                .await
                .map_err(PruneError::Query)?;
            if row.get::<_, bool>(0) {
                forgotten += 1;
            } else {
                unforgotten.push(d.signal_id);
            }
        }
        report.forgotten += forgotten;
        report.batches += 1;
        tracing::info!(
            batch = report.batches,
            deleted = paths.len(),
            forgotten,
            "Pruned a batch of screenshots"
        );
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
                    .map_err(|e| DeleteError::Http(e.without_url()))?;
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let body = response.text().await.unwrap_or_default();
                Err(DeleteError::Refused {
                    status: status.as_u16(),
                    body: body.chars().take(500).collect(),
                })
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

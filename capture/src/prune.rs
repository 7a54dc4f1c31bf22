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

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::storage::{DeleteError, DeleteObjects};

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

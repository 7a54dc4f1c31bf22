//! Deleting a signal deletes its screenshot.
//!
//! A delete of `public.signals` (the trader's, an operator's, or the
//! cascade of a deleted account) queues the object's removal in the same
//! transaction (`private.screenshot_deletions`, `sql/80_screenshot_deletions.sql`):
//! SQL cannot call Storage, and Supabase refuses SQL deletes on
//! `storage.objects`. This module empties that queue through the Storage
//! API ([`DeleteObjects`], both backends): the daemon every
//! [`DELETIONS_EVERY`] (and once more when drain mode ends), `capture
//! prune` on each run.
//!
//! - Batches are claimed under a lease, so two daemons never delete the same
//!   batch at once and one that dies mid-batch leaves it due again.
//! - An entry is removed only once Storage confirmed the delete (a missing
//!   object counts: Storage answers that with success), and only if its
//!   path was not queued again meanwhile (an upload that landed after the
//!   signal was deleted queues it anew, see [`crate::worker`]).
//! - A failed batch is retried later with a growing pause (at most an hour)
//!   and its error kept, until Storage accepts it: nothing is given up.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::storage::DeleteObjects;

/// How often the daemon looks at the queue.
pub const DELETIONS_EVERY: Duration = Duration::from_secs(10);
/// How long a claimed batch is the claimer's.
const LEASE: Duration = Duration::from_mins(5);
/// Objects per Storage request.
pub const BATCH: u16 = 100;

/// What a pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Objects Storage confirmed deleted.
    pub deleted: u64,
    /// Objects whose delete failed; retried later.
    pub failed: u64,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeletionsError {
    #[error("the screenshot deletion queue could not be read or updated")]
    Query(#[from] tokio_postgres::Error),
}

/// Removes every queued object that is due, in batches of `batch`, until
/// none is left, a batch fails (the rest waits for the next pass: Storage is
/// likely failing for them too), or `cancel` fires between batches.
pub async fn remove_due(
    db: &Client,
    objects: &impl DeleteObjects,
    batch: u16,
    metrics: Option<&Metrics>,
    cancel: &CancellationToken,
) -> Result<Report, DeletionsError> {
    let mut report = Report::default();
    let limit = i32::from(batch.clamp(1, 1000));
    while !cancel.is_cancelled() {
        let claimed = db
            .query(
                "select object_path, queued_at from private.claim_screenshot_deletions($1, make_interval(secs => $2))",
                &[&limit, &LEASE.as_secs_f64()],
            )
            .await?;
        if claimed.is_empty() {
            break;
        }
        let paths: Vec<String> = claimed.iter().map(|r| r.get(0)).collect();
        let queued: Vec<DateTime<Utc>> = claimed.iter().map(|r| r.get(1)).collect();
        let count = paths.len() as u64;
        match objects.delete(&paths).await {
            Ok(()) => {
                db.query_one(
                    "select private.finish_screenshot_deletions($1, $2)",
                    &[&paths, &queued],
                )
                .await?;
                report.deleted += count;
                if let Some(metrics) = metrics {
                    metrics
                        .screenshot_deletions
                        .with_label_values(&["deleted"])
                        .inc_by(count);
                }
                tracing::info!(
                    objects = count,
                    "Deleted the screenshots of deleted signals"
                );
            }
            Err(error) => {
                db.query_one(
                    "select private.retry_screenshot_deletions($1, $2)",
                    &[&paths, &error.to_string()],
                )
                .await?;
                report.failed += count;
                if let Some(metrics) = metrics {
                    metrics
                        .screenshot_deletions
                        .with_label_values(&["failed"])
                        .inc_by(count);
                }
                tracing::warn!(objects = count, error = %error, "Deleting screenshots of deleted signals failed; retrying later");
                break;
            }
        }
    }
    Ok(report)
}

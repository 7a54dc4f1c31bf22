//! `/health`, `/health/live`, `/health/ready` and `/metrics`: what an
//! orchestrator and Prometheus ask.
//!
//! `/health/live` checks nothing but that the process serves HTTP, on
//! purpose: an orchestrator must not restart a healthy process because a
//! dependency is down. `/health` and `/health/ready` ask the database path
//! (`public.capture_queue_status()`); while it is down and a spool has
//! room they still answer 200 with status `spooling`, so a load balancer
//! keeps sending alerts, and `/health` reports the spool's depth, size,
//! oldest entry and replays.
//!
//! The database's answer is cached for [`STATUS_TTL`], and one request at a
//! time asks for a fresh one while the others wait for it (single flight):
//! probes from every load balancer and orchestrator, or anyone who can
//! reach the endpoint, cost the database at most one call a second.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use service_runtime::http::respond;

use super::{Answered, App};
use crate::db::QueueStatus;
use crate::spool_admission::SpoolAdmission;

/// How long the database's answer behind `/health` and `/health/ready` is
/// reused.
pub(super) const STATUS_TTL: Duration = Duration::from_secs(1);

/// The last answer of the database path to `capture_queue_status`, and
/// when it came; `None` when the call failed.
#[derive(Debug, Default)]
pub(super) struct StatusCache {
    last: tokio::sync::Mutex<Option<(Instant, Option<QueueStatus>)>>,
}

/// `/health/live`.
pub(super) fn live() -> Answered {
    ("ok", respond(StatusCode::OK, &json!({ "status": "ok" })))
}

impl App {
    pub(super) async fn health(&self) -> Answered {
        let uptime = self.started.elapsed().as_secs();
        let (status, queue) = self.database_status().await;
        let mut body = json!({
            "status": status.label(),
            "queue_length": queue.as_ref().map(|q| q.queue_length),
            "active_workers": queue.as_ref().map(|q| q.active_workers),
            "uptime": uptime,
            "database": self.db.kind(),
        });
        if let Some(fallback) = &self.fallback {
            body["spool"] = spool_report(fallback);
        }
        ("ok", respond(status.http(), &body))
    }

    pub(super) async fn ready(&self) -> Answered {
        let (status, _) = self.database_status().await;
        (
            "ok",
            respond(status.http(), &json!({ "status": status.ready_label() })),
        )
    }

    /// Whether the database path answers (cached, see the module docs) and,
    /// if not, whether webhooks can still be spooled.
    async fn database_status(&self) -> (Status, Option<QueueStatus>) {
        let queue = {
            // Held across the call: whoever comes meanwhile waits for this
            // answer instead of asking the database again.
            let mut last = self.health.last.lock().await;
            match &*last {
                Some((at, queue)) if at.elapsed() < STATUS_TTL => queue.clone(),
                _ => {
                    let started = Instant::now();
                    let result = self.db.queue_status().await;
                    self.metrics
                        .db_call(self.db.kind(), "capture_queue_status", started);
                    let queue = result
                        .map_err(|error| self.db_failed(&error, "health check"))
                        .ok();
                    *last = Some((Instant::now(), queue.clone()));
                    queue
                }
            }
        };
        if queue.is_some() {
            return (Status::Ok, queue);
        }
        let spooling = self.fallback.as_ref().is_some_and(SpoolAdmission::has_room);
        let status = if spooling {
            Status::Spooling
        } else {
            Status::Unavailable
        };
        (status, None)
    }

    pub(super) fn render_metrics(&self) -> Answered {
        self.metrics
            .db_queued
            .set(i64::try_from(self.batcher.queued()).unwrap_or(i64::MAX));
        if let Some(fallback) = &self.fallback {
            self.metrics.observe_spool(
                &fallback.stats(),
                fallback.replays().snapshot(),
                Utc::now(),
            );
        }
        let mut response = Response::new(Full::new(Bytes::from(self.metrics.render())));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        ("ok", response)
    }
}

/// What `/health` and `/health/ready` report.
#[derive(Clone, Copy)]
enum Status {
    Ok,
    /// The database path is down; webhooks are spooled.
    Spooling,
    Unavailable,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Spooling => "spooling",
            Self::Unavailable => "unavailable",
        }
    }

    fn ready_label(self) -> &'static str {
        match self {
            Self::Ok => "ready",
            other => other.label(),
        }
    }

    fn http(self) -> StatusCode {
        match self {
            Self::Ok | Self::Spooling => StatusCode::OK,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The spool's part of `/health`.
fn spool_report(fallback: &SpoolAdmission) -> Value {
    let stats = fallback.stats();
    let replays = fallback.replays().snapshot();
    json!({
        "entries": stats.entries,
        "bytes": stats.bytes,
        "max_bytes": stats.max_bytes,
        "oldest_age_seconds": stats
            .oldest_age(Utc::now())
            .map(|age| age.num_milliseconds().max(0) / 1000),
        "replayed": {
            "accepted": replays.accepted,
            "duplicate": replays.duplicate,
            "rejected": replays.rejected,
            "transient_failures": replays.transient_failures,
        },
    })
}

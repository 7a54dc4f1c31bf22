//! `POST /webhook/u/{token}` (and `/webhook/{token}`): one TradingView
//! alert in, one answer out.
//!
//! A webhook goes: allowlist → token shape → what the edge knows about the
//! token ([`crate::tokens`]: a token the database recently said is unknown
//! is answered 404 from memory; one it has not vouched for spends the
//! guard's budgets, [`crate::guard`]; a known one spends nothing) → body,
//! bounded in size and time (a declared oversize body is refused before a
//! byte of it is read) → the pure parser ([`crate::delivery`]) → its alert,
//! decided by `public.ingest_signals` in a batch with whatever arrived
//! together ([`crate::batcher`]), which decides everything else and logs the
//! delivery for the trader, rejections included → the answer
//! ([`App::answer`] maps the function's decision onto [`ApiError`] or 200).
//!
//! With a spool configured ([`crate::spool_admission`]), a call that fails
//! with an error a retry can fix, an alert that would wait for the database
//! past its budget (a burst the database cannot take at once), and any
//! webhook arriving while older ones wait for replay are appended to the
//! spool and answered 202 within milliseconds.

use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use http::header::CONTENT_LENGTH;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use service_runtime::http::respond;
use tracing::Instrument as _;

use super::{Answered, App};
use crate::api::{Accepted, ApiError, Spooled};
use crate::batcher::BatchError;
use crate::db::{DbError, IngestOutcome};
use crate::delivery::{self, Delivery};
use crate::guard::Probe;
use crate::signal::WebhookToken;
use crate::spool_admission::SpoolAdmission;
use crate::tokens::{TokenKey, TokenStatus};
use webhook_spool::SpooledWebhook;

/// The token segment of a webhook path, if the path is one.
pub(super) fn token_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/webhook/")?;
    let token = rest.strip_prefix("u/").unwrap_or(rest);
    (!token.is_empty() && !token.contains('/')).then_some(token)
}

impl App {
    /// One webhook delivery: returns the outcome label and the answer.
    pub(super) async fn webhook(&self, request: Request<Incoming>, peer: IpAddr) -> Answered {
        let ip = self.guard.client_ip(peer, request.headers());
        let raw_token = token_segment(request.uri().path()).unwrap_or_default();
        let token = WebhookToken::parse(raw_token).ok();
        let span = tracing::info_span!(
            "webhook",
            token = token.as_ref().map_or("malformed".into(), WebhookToken::fingerprint),
            client = %ip,
        );
        async move {
            let result = self.webhook_inner(request, ip, token).await;
            match result {
                Ok(Answer::Stored(accepted)) => {
                    let outcome = if accepted.duplicate {
                        "duplicate"
                    } else {
                        "accepted"
                    };
                    tracing::info!(outcome, signal_id = %accepted.signal_id, "Webhook accepted");
                    (outcome, respond(StatusCode::OK, &accepted))
                }
                Ok(Answer::Spooled(spooled)) => {
                    tracing::info!(delivery_id = %spooled.delivery_id, "Webhook spooled for replay");
                    ("spooled", respond(StatusCode::ACCEPTED, &spooled))
                }
                Err(error) => {
                    if !matches!(error, ApiError::Unavailable | ApiError::AlertFailed) {
                        tracing::info!(
                            outcome = error.code(),
                            status = error.status().as_u16(),
                            "Webhook refused"
                        );
                    }
                    (error.code(), error.into_response())
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn webhook_inner(
        &self,
        request: Request<Incoming>,
        ip: IpAddr,
        token: Option<WebhookToken>,
    ) -> Result<Answer, ApiError> {
        if !self.guard.allows(ip) {
            return Err(ApiError::SourceNotAllowed);
        }
        let Some(token) = token else {
            self.guard.record_unknown_token(ip);
            return Err(ApiError::UnknownToken);
        };
        let key = TokenKey::of(&token);
        let status = self.tokens.status(key);
        let probe = match status {
            TokenStatus::Unknown => {
                self.guard.record_unknown_token(ip);
                return Err(ApiError::UnknownToken);
            }
            TokenStatus::Known => None,
            TokenStatus::Unverified => {
                Some(self.guard.admit(ip).map_err(|wait| ApiError::RateLimited {
                    message:
                        "too many requests with unknown webhook tokens from your address".into(),
                    retry_after: wait.as_secs().max(1),
                })?)
            }
        };
        let received_at = Utc::now();
        let chart = chart_value(request.uri().query());
        let body = match self.read_body(request).await {
            Ok(bytes) => Some(bytes),
            Err(BodyError::TooLarge) => None,
            Err(BodyError::Timeout) => return Err(ApiError::RequestTimeout),
        };
        let delivery = Delivery::new(
            uuid::Uuid::now_v7(),
            token,
            received_at,
            chart.as_deref(),
            body.as_deref().map_or(
                delivery::Body::TooLarge {
                    limit: self.settings.max_body_bytes,
                },
                delivery::Body::Read,
            ),
        );
        let spooling = Spooling {
            delivery: &delivery,
            chart,
            ip,
            known: probe.is_none(),
        };
        // Where the spool can take this webhook (a body that was read, and
        // not refused by the spool yet).
        let spool = match (&self.fallback, body) {
            (Some(fallback), Some(body)) => Some((fallback, body)),
            _ => None,
        };
        self.decide(key, &spooling, spool, probe).await
    }

    /// Gets the webhook decided: spooled behind older ones, or by the
    /// database in a batch (spooled instead when the database path is
    /// saturated or fails in a way a retry can fix).
    async fn decide(
        &self,
        key: TokenKey,
        spooling: &Spooling<'_>,
        mut spool: Option<(&SpoolAdmission, Bytes)>,
        probe: Option<Probe<'_>>,
    ) -> Result<Answer, ApiError> {
        // Behind older webhooks still waiting for replay: keep arrival order.
        // If the spool cannot take this one (full, a stranger's limit, a
        // failed disk), the database may still: order gives way to the alert.
        if let Some((fallback, body)) = &spool
            && fallback.is_replaying()
        {
            match self
                .spool(fallback, spooling, body.clone(), "trying the database")
                .await
            {
                Ok(answer) => return spent(answer, probe),
                Err(()) => spool = None,
            }
        }
        // A token nobody has vouched for needs a slot of the global budget
        // for unverified tokens; while it stays in use, the spool (within
        // its own limits for them) or a 503 that TradingView retries.
        // (It waits for a slot as long as it could wait for its call.)
        let slot = if probe.is_some() {
            let wait = if spool.is_some() {
                self.settings.queue_budget
            } else {
                self.db.deadline()
            };
            self.guard.unverified_slot(wait).await
        } else {
            None
        };
        if probe.is_some() && slot.is_none() {
            if let Some((fallback, body)) = spool
                && let Ok(answer) = self.spool(fallback, spooling, body, "answered 503").await
            {
                return spent(answer, probe);
            }
            if let Some(suppressed) = self.lines.unverified_busy.admit(Instant::now()) {
                tracing::warn!(
                    suppressed,
                    "The budget for unverified tokens is in use; answered 503"
                );
            }
            return Err(ApiError::Unavailable);
        }
        let arguments = spooling.delivery.call().arguments();
        let result = loop {
            let budget = spool.as_ref().map(|_| self.settings.queue_budget);
            match self
                .batcher
                .submit(key.short(), arguments.clone(), budget)
                .await
            {
                Ok(outcome) => break Ok(outcome),
                // (A budget, and so this answer, comes only with a spool.)
                Err(BatchError::Saturated) => {
                    if let Some((fallback, body)) = spool.take()
                        && let Ok(answer) = self
                            .spool(fallback, spooling, body, "waiting for the database")
                            .await
                    {
                        return spent(answer, probe);
                    }
                    // Refused by the spool: wait for the database after all,
                    // without a budget.
                }
                Err(BatchError::Db(error)) => break Err(error),
            }
        };
        drop(slot);
        match result {
            Ok(outcome) => {
                self.tokens.learn(key, &outcome.outcome);
                self.answer(outcome, probe).map(Answer::Stored)
            }
            // This alert raised by itself; the rest of its batch stands and
            // a retry meets the same error (`ApiError::AlertFailed`).
            Err(error) if matches!(*error, DbError::Alert { .. }) && !error.is_transient() => {
                if let Some(suppressed) = self.lines.alert_failed.admit(Instant::now()) {
                    tracing::error!(path = self.db.kind(), suppressed, error = %error, "The database raised on this alert; answered 500");
                }
                Err(ApiError::AlertFailed)
            }
            Err(error) => match spool {
                Some((fallback, body)) if error.is_transient() => {
                    self.db_failed(&error, "spooling");
                    match self.spool(fallback, spooling, body, "answered 503").await {
                        Ok(answer) => spent(answer, probe),
                        Err(()) => Err(ApiError::Unavailable),
                    }
                }
                _ => {
                    self.db_failed(&error, "answered 503");
                    Err(ApiError::Unavailable)
                }
            },
        }
    }

    /// Appends the webhook to the spool. Once it is durable, the answer:
    /// 202 for a signal, the edge's own refusal for a body that is none (the
    /// replay logs it for the trader). `Err(())` when the spool refused it
    /// (counted, and logged saying what happens `then`).
    async fn spool(
        &self,
        fallback: &SpoolAdmission,
        spooling: &Spooling<'_>,
        body: Bytes,
        then: &'static str,
    ) -> Result<Result<Answer, ApiError>, ()> {
        let delivery = spooling.delivery;
        let webhook = SpooledWebhook {
            delivery_id: delivery.id,
            token: delivery.token.clone(),
            chart: spooling.chart.clone(),
            body,
            received_at: delivery.received_at,
            client_ip: Some(spooling.ip),
        };
        if let Err(refused) = fallback.spool(&webhook, spooling.known).await {
            self.metrics
                .spool_refusals
                .with_label_values(&[refused.label()])
                .inc();
            if let Some(suppressed) = self
                .lines
                .spool_refused(refused.label())
                .admit(Instant::now())
            {
                tracing::warn!(reason = refused.label(), error = %refused, then, suppressed, "Spool refused a webhook");
            }
            return Err(());
        }
        Ok(match delivery.refusal() {
            Some(refusal) => Err(refusal),
            None => Ok(Answer::Spooled(Spooled::new(delivery.id))),
        })
    }

    /// Maps `ingest_signal`'s decision onto the HTTP answer.
    fn answer(
        &self,
        outcome: IngestOutcome,
        probe: Option<Probe<'_>>,
    ) -> Result<Accepted, ApiError> {
        let message = outcome.message.clone().unwrap_or_default();
        let retry_after = u64::try_from(outcome.retry_after.unwrap_or(1)).unwrap_or(1);
        match outcome.outcome.as_str() {
            "accepted" | "duplicate" => {
                let Some(signal_id) = outcome.signal_id else {
                    if let Some(suppressed) = self.lines.missing_signal_id.admit(Instant::now()) {
                        tracing::error!(outcome = %outcome.outcome, suppressed, "ingest_signal accepted without a signal id");
                    }
                    return Err(ApiError::Unavailable);
                };
                Ok(Accepted {
                    success: true,
                    signal_id,
                    screenshot_status: outcome
                        .screenshot_status
                        .unwrap_or_else(|| "pending".into()),
                    estimated_wait: outcome.estimated_wait.unwrap_or(0),
                    duplicate: outcome.outcome == "duplicate",
                })
            }
            "unknown_token" => {
                if let Some(probe) = probe {
                    probe.spend();
                }
                Err(ApiError::UnknownToken)
            }
            "webhook_disabled" => Err(ApiError::WebhookDisabled(message)),
            "no_ticker" => Err(ApiError::NoTicker(message)),
            "invalid_body" => Err(ApiError::InvalidBody(message)),
            "body_too_large" => Err(ApiError::BodyTooLarge {
                limit: self.settings.max_body_bytes,
            }),
            "quota_exceeded" => Err(ApiError::QuotaExceeded {
                message,
                retry_after,
            }),
            "rate_limited" => Err(ApiError::RateLimited {
                message,
                retry_after,
            }),
            other => {
                if let Some(suppressed) = self.lines.unknown_outcome.admit(Instant::now()) {
                    tracing::error!(
                        outcome = other,
                        suppressed,
                        "ingest_signal returned an outcome this edge does not know"
                    );
                }
                Err(ApiError::Unavailable)
            }
        }
    }

    async fn read_body(&self, request: Request<Incoming>) -> Result<Bytes, BodyError> {
        let limit = self.settings.max_body_bytes as usize;
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(BodyError::TooLarge);
        }
        let body = Limited::new(request.into_body(), limit);
        match tokio::time::timeout(self.settings.read_timeout, body.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                Err(BodyError::TooLarge)
            }
            // Too slow, or the client went away mid-body: nothing to record.
            Err(_) | Ok(Err(_)) => Err(BodyError::Timeout),
        }
    }
}

enum BodyError {
    TooLarge,
    Timeout,
}

/// What spooling a webhook needs besides its body.
struct Spooling<'a> {
    delivery: &'a Delivery,
    /// The raw `?chart=` value, replayed as it came.
    chart: Option<String>,
    ip: IpAddr,
    /// Whether the token is known (an unverified one spools within limits).
    known: bool,
}

/// A spooled webhook's answer; spooling an unverified token spends its
/// address's budget.
fn spent(answer: Result<Answer, ApiError>, probe: Option<Probe<'_>>) -> Result<Answer, ApiError> {
    if let Some(probe) = probe {
        probe.spend();
    }
    answer
}

/// A webhook's good answer.
enum Answer {
    /// 200: stored (or recognised as a retry of a stored one).
    Stored(Accepted),
    /// 202: durably spooled, stored when the database is back.
    Spooled(Spooled),
}

/// The raw `?chart=` value, if any (checked by [`Delivery::new`]).
fn chart_value(query: Option<&str>) -> Option<String> {
    query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(key, _)| key == "chart")
            .map(|(_, value)| value.into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_paths_name_their_token() {
        assert_eq!(token_segment("/webhook/u/abc"), Some("abc"));
        assert_eq!(token_segment("/webhook/abc"), Some("abc"));
        assert_eq!(token_segment("/webhook/"), None);
        assert_eq!(token_segment("/webhook/u/"), None);
        assert_eq!(token_segment("/webhook/u/a/b"), None);
        assert_eq!(token_segment("/health"), None);
    }

    #[test]
    fn the_chart_value_is_read_from_the_query() {
        assert_eq!(chart_value(None), None);
        assert_eq!(chart_value(Some("x=1")), None);
        assert_eq!(
            chart_value(Some("a=b&chart=aBcD1234")).as_deref(),
            Some("aBcD1234")
        );
        assert_eq!(chart_value(Some("chart=a%2Fb")).as_deref(), Some("a/b"));
    }
}

//! The JSON answers ingest gives, and the one place errors become statuses.
//!
//! Policy (shared with DESIGN.md's contract):
//!
//! - Every error body has the shape
//!   `{"success":false,"error":{"code":...,"message":...}}`. `code` is a
//!   stable lower-case identifier clients may match on; `message` is for
//!   people and may change.
//! - [`ApiError::status`] is the only mapping from an error to an HTTP
//!   status, for every route (the webhook, the session endpoint, health).
//!   Handlers return an `ApiError`; they never build error responses by
//!   hand.
//! - A request without a valid access token (the session endpoint) is 401
//!   with `WWW-Authenticate: Bearer`, before its body is read; the message
//!   never says what was wrong with the token beyond missing or invalid.
//! - Bad input from the caller (unknown route, unknown token, malformed
//!   alerts, limits) is answered, not logged as an error: it is the caller's
//!   mistake and a normal part of running on the internet. The trader sees
//!   the same message in their delivery log.
//! - Server-side failures ([`ApiError::Unavailable`],
//!   [`ApiError::SessionNotStored`], 503) get an opaque message; their cause
//!   is logged once, where the database error is mapped (in the route's
//!   module under `server/`), never sent. TradingView retries a 503, and the
//!   database's retry dedup makes that safe.
//! - An alert the database raised on by itself, while the rest of its batch
//!   was decided ([`ApiError::AlertFailed`]), is 500 `internal_error`, not
//!   503: the database is up, the failure is this alert's and a retry meets
//!   it again, so it is neither reported as accepted nor sent to the spool
//!   (whose replay would meet it forever). TradingView's three retries of a
//!   5xx are harmless (nothing was stored) and would succeed if the cause
//!   is fixed meanwhile. Opaque like every 5xx; the SQLSTATE is logged.
//! - 429s carry `Retry-After` in seconds; so does the webhook's 503.

use bytes::Bytes;
use http::header::{ALLOW, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use service_runtime::http::respond;

/// The response body type of every ingest answer: small and fully buffered.
pub type Body = Full<Bytes>;

/// Why a request could not be served.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ApiError {
    /// No route matches the path.
    #[error("no route for {path}")]
    NotFound { path: String },
    /// The path exists but not for this method.
    #[error("{method} is not allowed here; use {allow}")]
    MethodNotAllowed {
        method: http::Method,
        allow: &'static str,
    },
    /// No webhook has this token (or the token is malformed).
    #[error("no webhook exists for this token; copy your webhook URL from the dashboard")]
    UnknownToken,
    /// The trader switched their webhook off.
    #[error("{0}")]
    WebhookDisabled(String),
    /// The body is larger than the limit.
    #[error("body is larger than {limit} bytes; TradingView alert messages are short")]
    BodyTooLarge { limit: u32 },
    /// The body is not text a signal can be read from (not UTF-8, a NUL
    /// byte, empty).
    #[error("{0}")]
    InvalidBody(String),
    /// The body names no instrument.
    #[error("{0}")]
    NoTicker(String),
    /// The trader's monthly quota is used up.
    #[error("{message}")]
    QuotaExceeded { message: String, retry_after: u64 },
    /// Too many alerts this minute (the plan's limit), or too many unknown
    /// tokens from one address.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// The source address is not on the allowlist.
    #[error("webhooks are accepted only from the configured source addresses")]
    SourceNotAllowed,
    /// The client did not send its body in time.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// The database path failed; details are logged, never sent.
    #[error("the signal store is unavailable; the alert was not recorded, retry shortly")]
    Unavailable,
    /// This alert raised inside the database while the others of its batch
    /// were decided; details are logged, never sent.
    #[error("the signal store could not record this alert; it was not stored")]
    AlertFailed,
    /// No `Authorization: Bearer` access token.
    #[error("missing bearer token")]
    MissingToken,
    /// The access token is malformed, expired, for another audience, or not
    /// signed by the project.
    #[error("invalid access token")]
    InvalidToken,
    /// The session endpoint's body is not the two cookies.
    #[error(
        "the body must be JSON {{\"sessionid\": ..., \"sessionid_sign\": ...}} with non-empty cookie values"
    )]
    InvalidSession,
    /// A valid token for a user who has no settings row.
    #[error("no settings row for this user")]
    UnknownUser,
    /// The database path failed while storing a session; details are
    /// logged, never sent.
    #[error("the session could not be stored")]
    SessionNotStored,
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound { .. } | Self::UnknownToken | Self::UnknownUser => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::MissingToken | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::WebhookDisabled(_) | Self::SourceNotAllowed => StatusCode::FORBIDDEN,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidBody(_) | Self::InvalidSession => StatusCode::BAD_REQUEST,
            Self::NoTicker(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::QuotaExceeded { .. } | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::AlertFailed => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable | Self::SessionNotStored => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable machine-readable code in the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } | Self::UnknownUser => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::UnknownToken => "unknown_token",
            Self::WebhookDisabled(_) => "webhook_disabled",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::InvalidBody(_) | Self::InvalidSession => "invalid_body",
            Self::NoTicker(_) => "no_ticker",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::RateLimited { .. } => "rate_limited",
            Self::SourceNotAllowed => "source_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::Unavailable | Self::SessionNotStored => "unavailable",
            Self::AlertFailed => "internal_error",
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
        }
    }

    /// Renders the error as its JSON answer.
    pub fn into_response(self) -> Response<Body> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            success: bool,
            error: Detail<'a>,
        }
        #[derive(Serialize)]
        struct Detail<'a> {
            code: &'a str,
            message: String,
        }

        let envelope = Envelope {
            success: false,
            error: Detail {
                code: self.code(),
                message: self.to_string(),
            },
        };
        let mut response = respond(self.status(), &envelope);
        match self {
            Self::MethodNotAllowed { allow, .. } => {
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
            }
            Self::QuotaExceeded { retry_after, .. } | Self::RateLimited { retry_after, .. } => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            }
            Self::Unavailable => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::MissingToken | Self::InvalidToken => {
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// The answer to an accepted (or duplicate) webhook.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub success: bool,
    pub signal_id: uuid::Uuid,
    pub screenshot_status: String,
    /// Seconds until the screenshot is expected.
    pub estimated_wait: i64,
    /// True when this was a retry of an alert already recorded: the
    /// answer names the first signal and nothing new was stored.
    pub duplicate: bool,
}

/// The answer to a webhook spooled while the database path was down (202):
/// durable on the edge's disk, stored as a signal as soon as the database is
/// back. There is no signal id yet; `delivery_id` names this delivery in
/// the logs.
#[derive(Debug, Serialize)]
pub struct Spooled {
    pub success: bool,
    pub spooled: bool,
    pub delivery_id: uuid::Uuid,
    pub screenshot_status: &'static str,
    pub message: &'static str,
}

impl Spooled {
    pub fn new(delivery_id: uuid::Uuid) -> Self {
        Self {
            success: true,
            spooled: true,
            delivery_id,
            screenshot_status: "pending",
            message: "received; it is stored as a signal as soon as the signal store is back",
        }
    }
}

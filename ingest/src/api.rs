//! The JSON answers ingest gives, and the one place errors become statuses.
//!
//! Policy (shared with DESIGN.md's contract):
//!
//! - Every error body has the shape
//!   `{"success":false,"error":{"code":...,"message":...}}`. `code` is a
//!   stable lower-case identifier clients may match on; `message` is for
//!   people and may change.
//! - [`ApiError::status`] is the only mapping from an error to an HTTP
//!   status. Handlers return an `ApiError`; they never build error
//!   responses by hand.
//! - Bad input from the caller (unknown route, and later malformed alerts)
//!   is answered, not logged as an error: it is the caller's mistake and a
//!   normal part of running on the internet. Server-side failures (5xx, once
//!   the database path exists) get an opaque message and their cause is
//!   logged once, where they are mapped.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

/// The response body type of every ingest answer: small and fully buffered.
pub type Body = Full<Bytes>;

/// Why a request could not be served.
#[derive(Debug, thiserror::Error)]
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
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The stable machine-readable code in the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
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
        let mut response = json(self.status(), &envelope);
        if let Self::MethodNotAllowed { allow, .. } = self {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// A JSON response with `status` and `value` as its body.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    // Serialising our own plain structs (strings, numbers, bools) cannot
    // fail; if it ever did, an empty object is still valid JSON.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

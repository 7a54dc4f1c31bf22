//! A Supabase Storage stand-in (Storage cannot run here): records every
//! request exactly as it arrived, so tests assert the contract (method,
//! path, headers, body), and answers from a script of statuses the way
//! Supabase's Storage server does: an error it raises itself comes as HTTP
//! 400 with the real status in the JSON body
//! (`{"statusCode":"403","error":"Unauthorized","message":...}`), except a
//! `"500"`, which is sent as HTTP 500 (its `src/http/error-handler.ts`);
//! 502-504 come from the gateway in front of it, with a body of its own.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// One request the stub received.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Lower-case names.
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Bytes,
    /// When it arrived.
    pub(crate) at: std::time::Instant,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// The stub: `base` is the project URL, without a trailing slash.
#[derive(Clone, Debug)]
pub(crate) struct StorageStub {
    pub(crate) base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// What to answer, in order, as the status Storage means (200, 403,
    /// 503...); the last one repeats.
    statuses: Arc<Mutex<Vec<u16>>>,
}

impl StorageStub {
    pub(crate) async fn start(statuses: &[u16]) -> Self {
        assert!(!statuses.is_empty(), "the stub needs a status to answer");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let stub = Self {
            base,
            requests: Arc::default(),
            statuses: Arc::new(Mutex::new(statuses.to_vec())),
        };
        let served = stub.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let stub = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let stub = stub.clone();
                        async move { Ok::<_, Infallible>(stub.answer(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        stub
    }

    /// The project URL to give a Storage client.
    pub(crate) fn url(&self) -> url::Url {
        self.base.parse().expect("url")
    }

    /// Every request so far, in order.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = value.to_str().expect("an ASCII header").to_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        let at = std::time::Instant::now();
        let recorded = Recorded {
            at,
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            headers,
            body: body.collect().await.expect("body").to_bytes(),
        };
        let status = {
            let mut statuses = self.statuses.lock().expect("lock");
            if statuses.len() > 1 {
                statuses.remove(0)
            } else {
                statuses[0]
            }
        };
        let (http, content_type, body) = answer_for(status, &recorded.method);
        self.requests.lock().expect("lock").push(recorded);
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = StatusCode::from_u16(http).expect("status");
        response
            .headers_mut()
            .insert("content-type", content_type.parse().expect("header"));
        response
    }
}

/// The HTTP status, content type and body Storage (or its gateway) sends
/// for the status it means.
fn answer_for(status: u16, method: &str) -> (u16, &'static str, String) {
    let json = "application/json";
    match status {
        200 if method == "DELETE" => (200, json, "[]".into()),
        200 => (200, json, r#"{"Key":"screenshots/object.png"}"#.into()),
        502..=504 => (
            status,
            "text/html",
            format!("<html><body><h1>{status}</h1>The upstream is unavailable.</body></html>"),
        ),
        _ => {
            let (error, message) = match status {
                401 | 403 => ("Unauthorized", "signature verification failed"),
                404 => ("Bucket not found", "Bucket not found"),
                413 => (
                    "Payload too large",
                    "The object exceeded the maximum allowed size",
                ),
                415 => ("invalid_mime_type", "mime type image/png is not supported"),
                429 => ("too_many_requests", "Too many requests"),
                _ => ("Internal", "Internal Server Error"),
            };
            let http = if status == 500 { 500 } else { 400 };
            let body = serde_json::json!({ "statusCode": status.to_string(), "error": error, "message": message });
            (http, json, body.to_string())
        }
    }
}

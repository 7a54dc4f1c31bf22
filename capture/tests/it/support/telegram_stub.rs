//! A stand-in for Telegram's Bot API (Telegram cannot run here): records
//! every request (method, path with the bot token, content type, body) so
//! tests check the exact requests, and answers from a script.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// One request the stub received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) content_type: String,
    pub(crate) body: Bytes,
}

/// The stub Bot API; panics (and so fails the test) on a request the
/// script has no answer for.
#[derive(Clone, Default)]
pub(crate) struct Stub {
    answers: Arc<Mutex<VecDeque<(u16, &'static str)>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Stub {
    /// Starts the stub answering `answers` (status, body) in order;
    /// returns it and its base URL.
    pub(crate) async fn start(answers: &[(u16, &'static str)]) -> (Self, String) {
        let stub = Self {
            answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
            requests: Arc::default(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let served = stub.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
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
        (stub, base)
    }

    async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        self.requests.lock().expect("lock").push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body,
        });
        let (status, body) = self
            .answers
            .lock()
            .expect("lock")
            .pop_front()
            .expect("the stub received more requests than the test scripted");
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = StatusCode::from_u16(status).expect("status");
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().expect("header"));
        response
    }

    /// Every request so far, in order.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }
}

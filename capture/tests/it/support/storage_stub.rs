//! A Supabase Storage stand-in (Storage cannot run here): records every
//! request exactly as it arrived, so tests assert the contract (method,
//! path, headers, body), and answers from a script of statuses.

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
    /// What to answer, in order; the last one repeats.
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
        let recorded = Recorded {
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
        // Bodies as Storage answers them; the clients look only at the status.
        let body: &'static [u8] = match (status, recorded.method.as_str()) {
            (200, "DELETE") => b"[]",
            (200, _) => br#"{"Key":"screenshots/object.png"}"#,
            _ => br#"{"statusCode":"500","error":"internal","message":"boom"}"#,
        };
        self.requests.lock().expect("lock").push(recorded);
        let mut response = Response::new(Full::new(Bytes::from_static(body)));
        *response.status_mut() = StatusCode::from_u16(status).expect("status");
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().expect("header"));
        response
    }
}

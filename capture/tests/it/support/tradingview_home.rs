//! A stand-in for TradingView's home page (TradingView cannot be reached
//! here), as the session checks meet it: the HTML carries `auth_token` only
//! for a session it accepts; `www.tradingview.test` redirects to the
//! regional `fr.tradingview.test` (a client resolving both to this server
//! follows it); a session can be made to redirect off TradingView
//! (`evil.test`) or be answered 503. Every request is recorded with its
//! host, path, `sessionid` cookie and arrival time, so tests check exactly
//! which requests were made, where the cookies went, and when.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// One request the stand-in saw.
#[derive(Clone, Debug)]
pub(crate) struct Visit {
    /// The `Host` header without the port.
    pub(crate) host: String,
    pub(crate) path: String,
    /// The `sessionid` cookie, if one was sent.
    pub(crate) sessionid: Option<String>,
    pub(crate) at: Instant,
}

/// How the stand-in treats a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Treat {
    SignedIn,
    /// Redirects it to `evil.test`.
    RedirectOff,
    /// 503.
    Unavailable,
}

#[derive(Clone, Debug)]
pub(crate) struct TradingViewHome {
    pub(crate) addr: SocketAddr,
    visits: Arc<Mutex<Vec<Visit>>>,
    sessions: Arc<Mutex<HashMap<String, Treat>>>,
}

impl TradingViewHome {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let home = Self {
            addr: listener.local_addr().expect("addr"),
            visits: Arc::default(),
            sessions: Arc::default(),
        };
        let served = home.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let home = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let home = home.clone();
                        async move { Ok::<_, Infallible>(home.answer(&request)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        home
    }

    /// The home page's URL on 127.0.0.1 (no regional redirect).
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Treats `sessionid` as `treat` (any other session is signed out).
    pub(crate) fn set(&self, sessionid: &str, treat: Treat) {
        self.sessions
            .lock()
            .unwrap()
            .insert(sessionid.to_owned(), treat);
    }

    pub(crate) fn visits(&self) -> Vec<Visit> {
        self.visits.lock().unwrap().clone()
    }

    /// The distinct hosts that received a cookie.
    pub(crate) fn hosts_given_cookies(&self) -> HashSet<String> {
        self.visits()
            .into_iter()
            .filter(|v| v.sessionid.is_some())
            .map(|v| v.host)
            .collect()
    }

    fn answer(&self, request: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let host = request
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let host = host.split(':').next().unwrap_or_default().to_owned();
        let sessionid = request
            .headers()
            .get_all("cookie")
            .iter()
            .filter_map(|c| c.to_str().ok())
            .flat_map(|c| c.split(';'))
            .find_map(|c| c.trim().strip_prefix("sessionid="))
            .map(str::to_owned);
        self.visits.lock().unwrap().push(Visit {
            host: host.clone(),
            path: request.uri().path().to_owned(),
            sessionid: sessionid.clone(),
            at: Instant::now(),
        });
        let port = self.addr.port();
        let treat = sessionid
            .as_deref()
            .and_then(|s| self.sessions.lock().unwrap().get(s).copied());
        if host == "www.tradingview.test" {
            return redirect(&format!("http://fr.tradingview.test:{port}/"));
        }
        match treat {
            Some(Treat::RedirectOff) if host != "evil.test" => {
                redirect(&format!("http://evil.test:{port}/"))
            }
            Some(Treat::Unavailable) => {
                html(StatusCode::SERVICE_UNAVAILABLE, "<h1>503</h1>".into())
            }
            Some(Treat::SignedIn) => html(
                StatusCode::OK,
                format!(
                    "<!doctype html><html><head><title>TradingView</title></head><body>{}\
                     <script>window.initData = {{\"user\": {{\"username\": \"trader\", \"auth_token\": \"t-{}\"}}}};</script>\
                     {}</body></html>",
                    "<p>charts</p>".repeat(2000),
                    uuid::Uuid::new_v4().simple(),
                    "<p>ideas</p>".repeat(2000)
                ),
            ),
            _ => html(
                StatusCode::OK,
                format!(
                    "<!doctype html><html><head><title>TradingView</title></head><body>\
                     <a href=\"/accounts/signin/\">Sign in</a>{}</body></html>",
                    "<p>charts</p>".repeat(2000)
                ),
            ),
        }
    }
}

fn redirect(location: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    response
        .headers_mut()
        .insert("location", location.parse().expect("header"));
    response
}

fn html(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        "text/html; charset=utf-8".parse().expect("header"),
    );
    response
}

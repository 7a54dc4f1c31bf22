//! A chart page server that behaves like TradingView where it matters: a
//! sign-in wall without a valid session, a chart drawn late, and only then
//! a readiness flag.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cookie_seal::TradingViewSession;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// `CAPTURE_READY_CHECK` for this page.
pub(crate) const READY_CHECK: &str = "window.chartReady === true";
/// `CAPTURE_LOGIN_CHECK` for this page: its sign-in wall shows.
pub(crate) const LOGIN_CHECK: &str = "!!document.getElementById('login-wall')";
/// The colour the test chart fills its canvas with once drawn.
pub(crate) const CHART_RGB: [u8; 3] = [12, 200, 90];

/// One request the chart page server saw.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) cookies: String,
}

/// The chart page server. `/chart/{id}/` answers a page that shows a
/// sign-in wall unless the request carries a `sessionid` the server knows,
/// else sets a `visited` cookie (a page in a reused context would send it),
/// draws on a canvas after `delay_ms` and only then sets
/// `window.chartReady`. `never=1` in the query never gets ready.
#[derive(Clone, Debug)]
pub(crate) struct ChartServer {
    pub(crate) base: String,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    valid_sessions: Arc<Mutex<HashMap<String, String>>>,
}

impl ChartServer {
    pub(crate) async fn start(delay_ms: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = Self {
            base,
            seen: Arc::default(),
            valid_sessions: Arc::default(),
        };
        let state = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buffer).to_string();
                    let path = head
                        .lines()
                        .next()
                        .and_then(|l| l.split(' ').nth(1))
                        .unwrap_or("/")
                        .to_owned();
                    let cookies = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("Cookie: ")
                                .or_else(|| l.strip_prefix("cookie: "))
                        })
                        .unwrap_or("")
                        .to_owned();
                    let (status, body) = if path.starts_with("/chart/") {
                        state.seen.lock().unwrap().push(Seen {
                            path: path.clone(),
                            cookies: cookies.clone(),
                        });
                        ("200 OK", state.page(&path, &cookies, delay_ms))
                    } else {
                        ("404 Not Found", String::new())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        server
    }

    /// Its `host:port`, as `CAPTURE_EGRESS_ALLOW` names it: Chromium may
    /// reach it although it is on loopback.
    pub(crate) fn egress_entry(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// Accepts `session` for chart `chart_id` from now on.
    pub(crate) fn accept(&self, session: &TradingViewSession, chart_id: &str) {
        self.valid_sessions
            .lock()
            .unwrap()
            .insert(session.sessionid.clone(), chart_id.to_owned());
    }

    fn page(&self, path: &str, cookies: &str, delay_ms: u64) -> String {
        let session = cookies
            .split(';')
            .map(str::trim)
            .find_map(|c| c.strip_prefix("sessionid="));
        let signed_in =
            session.is_some_and(|s| self.valid_sessions.lock().unwrap().contains_key(s));
        if !signed_in {
            return "<!doctype html><html><body><div id=\"login-wall\">Sign in to TradingView</div></body></html>".into();
        }
        let never = path.contains("never=1");
        let [r, g, b] = CHART_RGB;
        format!(
            "<!doctype html><html><head><style>html,body{{margin:0;overflow:hidden;background:#fff}}</style></head><body>\
             <canvas id=\"c\"></canvas><div class=\"toast\" style=\"position:fixed;top:0;left:0;width:300px;height:100px;background:#f0f\">toast</div><script>\
             document.cookie = 'visited=1; path=/';\
             const c = document.getElementById('c'); c.width = innerWidth; c.height = innerHeight;\
             setTimeout(() => {{ const x = c.getContext('2d'); x.fillStyle = 'rgb({r},{g},{b})'; x.fillRect(0, 0, c.width, c.height);\
               x.fillStyle = '#000'; x.fillRect(10, c.height - 60, 200, 50);\
               if (!{never}) window.chartReady = true; }}, {delay_ms});\
             </script></body></html>"
        )
    }
}

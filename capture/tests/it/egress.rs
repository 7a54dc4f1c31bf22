//! Where a page can reach: nothing on loopback, the private network or the
//! metadata address, by navigation or by any request it makes (fetch,
//! image, websocket, worker, frame, beacon, redirect), while an entry of
//! `CAPTURE_EGRESS_ALLOW` is reached. Real Chromium, in process, with a
//! server that counts every connection to the address no page may reach,
//! and the egress filter's refusal counter to show the refusal happened
//! there (169.254.169.254 cannot exist here: the counter is what proves a
//! page's requests for it were stopped by the filter).

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capture::egress::proxy::{REFUSED_ADDRESS, REFUSED_STRANGER};
use capture::render::{Chrome, RenderError, Request, Source};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::daemon::render_settings;
use crate::support::{ChartServer, session};

/// A server no page may reach: counts every connection made to it.
struct Forbidden {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Forbidden {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nreached",
                    )
                    .await;
            }
        });
        Self { port, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// The allowed server: serves the probe pages, redirects `/redirect/...`
/// to the forbidden server, answers anything else, and counts requests by
/// their first path segment.
#[derive(Clone)]
struct Allowed {
    base: String,
    seen: Arc<Mutex<HashMap<String, usize>>>,
}

impl Allowed {
    async fn start(forbidden_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            base: format!("http://{}", listener.local_addr().unwrap()),
            seen: Arc::default(),
        };
        let state = server.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let segment = path.split('/').nth(1).unwrap_or("").to_owned();
                    *state
                        .seen
                        .lock()
                        .unwrap()
                        .entry(segment.clone())
                        .or_default() += 1;
                    let response = match segment.as_str() {
                        "probe" => {
                            let body = probe_page(&path);
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            )
                        }
                        "redirect" => format!(
                            "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{forbidden_port}/redirected\r\naccess-control-allow-origin: *\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        ),
                        _ => "HTTP/1.1 200 OK\r\naccess-control-allow-origin: *\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_owned(),
                    };
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        server
    }

    fn seen(&self, segment: &str) -> usize {
        self.seen.lock().unwrap().get(segment).copied().unwrap_or(0)
    }
}

/// A page that asks for `?http=<url>&ws=<url>` in every way a page can,
/// waits until each attempt has ended (or 3 s), then draws a chart shaped
/// like TradingView's, which the daemon's readiness waits for.
fn probe_page(path: &str) -> String {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
            .map(|v| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default()
    };
    let http = serde_json::to_string(&param("http")).unwrap();
    let ws = serde_json::to_string(&param("ws")).unwrap();
    format!(
        r"<!doctype html><html><body><script>
const http = {http}, ws = {ws};
const settle = (p) => Promise.race([p.then(() => 'ok', () => 'error'), new Promise((r) => setTimeout(() => r('timeout'), 3000))]);
const attempts = [
  settle(fetch(http + 'fetch', {{ mode: 'no-cors', cache: 'no-store' }})),
  settle(new Promise((ok, no) => {{ const i = new Image(); i.onload = ok; i.onerror = no; i.src = http + 'image'; }})),
  settle(new Promise((ok, no) => {{ const s = new WebSocket(ws); s.onopen = ok; s.onerror = no; }})),
  settle(new Promise((ok, no) => {{
    const code = 'fetch(' + JSON.stringify(http + 'worker') + ', {{ mode: \'no-cors\' }}).then(() => postMessage(1), () => postMessage(0))';
    const w = new Worker(URL.createObjectURL(new Blob([code], {{ type: 'text/javascript' }})));
    w.onmessage = (e) => (e.data ? ok() : no()); w.onerror = no;
  }})),
  settle(new Promise((ok) => {{ const f = document.createElement('iframe'); f.onload = ok; f.src = http + 'frame'; document.body.appendChild(f); }})),
  settle(Promise.resolve(navigator.sendBeacon(http + 'beacon', 'x'))),
];
// Drawn as the daemon's readiness expects TradingView's chart to be, once every attempt has ended.
Promise.all(attempts).then(() => {{ document.body.insertAdjacentHTML('beforeend',
  '<div class=chart-markup-table><canvas width=40 height=20></canvas></div><div data-name=legend-source-item>probe</div>'); }});
</script></body></html>"
    )
}

fn request(url: String) -> Request {
    Request {
        source: Source::Chart {
            url,
            session: session("egress"),
            expect: None,
        },
        width: 320,
        height: 200,
        dark: false,
        cancel: CancellationToken::new(),
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

fn refused(chrome: &Chrome, reason: &str) -> u64 {
    chrome.egress_refusals().with_label_values(&[reason]).get()
}

#[tokio::test]
async fn pages_reach_no_private_address_but_the_allowed_one() {
    let forbidden = Forbidden::start().await;
    let allowed = Allowed::start(forbidden.port).await;
    // Only the allowed server is on the list.
    let entry = allowed.base.trim_start_matches("http://").to_owned();
    let chrome = Chrome::new(render_settings(Duration::from_secs(15), &entry)).unwrap();
    let loopback = format!("127.0.0.1:{}", forbidden.port);
    let probe = |http: &str, ws: &str| {
        format!(
            "{}/probe/?http={}&ws={}",
            allowed.base,
            percent_encoding::utf8_percent_encode(http, percent_encoding::NON_ALPHANUMERIC),
            percent_encoding::utf8_percent_encode(ws, percent_encoding::NON_ALPHANUMERIC),
        )
    };

    // The control: everything asked of the allowed server reaches it, and
    // nothing is refused.
    let page = probe(
        &format!("{}/reached/", allowed.base),
        &format!("ws://{entry}/reached"),
    );
    let before = refused(&chrome, REFUSED_ADDRESS);
    blocking({
        let chrome = Arc::clone(&chrome);
        move || chrome.capture(&request(page)).unwrap()
    })
    .await;
    assert_eq!(refused(&chrome, REFUSED_ADDRESS), before, "nothing refused");
    assert!(
        allowed.seen("reached") >= 5,
        "fetch, image, websocket, worker, frame and beacon reach an allowed entry: {:?}",
        allowed.seen.lock().unwrap()
    );

    // Each forbidden target, asked for in every way: nothing reaches the
    // server, and the filter counts its refusals.
    for (what, http, ws) in [
        (
            "a loopback address",
            format!("http://{loopback}/"),
            format!("ws://{loopback}/"),
        ),
        (
            "a name for a loopback address (refused after the lookup)",
            format!("http://localhost:{}/", forbidden.port),
            format!("ws://localhost:{}/", forbidden.port),
        ),
        (
            "the cloud metadata address",
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "ws://169.254.169.254/".to_owned(),
        ),
        (
            "a redirect from an allowed page to a loopback address",
            format!("{}/redirect/", allowed.base),
            format!("ws://{loopback}/"),
        ),
    ] {
        let before = refused(&chrome, REFUSED_ADDRESS);
        let page = probe(&http, &ws);
        let png = blocking({
            let chrome = Arc::clone(&chrome);
            move || chrome.capture(&request(page))
        })
        .await;
        assert!(
            png.is_ok(),
            "{what}: the probe page itself renders: {png:?}"
        );
        assert!(
            refused(&chrome, REFUSED_ADDRESS) > before,
            "{what}: the egress filter refused the requests"
        );
        assert_eq!(
            forbidden.connections(),
            0,
            "{what}: nothing reached the server"
        );
    }
    assert!(
        allowed.seen("redirect") >= 1,
        "the allowed page was asked to redirect"
    );

    // A navigation straight to a forbidden address fails at once.
    let before = refused(&chrome, REFUSED_ADDRESS);
    let navigation = blocking({
        let chrome = Arc::clone(&chrome);
        move || chrome.capture(&request(format!("http://{loopback}/chart/")))
    })
    .await;
    assert!(
        matches!(navigation, Err(RenderError::Unreachable(_))),
        "{navigation:?}"
    );
    assert!(refused(&chrome, REFUSED_ADDRESS) > before);
    assert_eq!(forbidden.connections(), 0);
}

/// The proxy on loopback serves Chromium's user only: anyone else's
/// connection is closed unanswered (and counted). When the tests run as
/// Chromium's user (not root), the proxy must answer them instead.
#[tokio::test]
async fn the_egress_proxy_serves_chromium_only() {
    let charts = ChartServer::start(0).await;
    let chrome = Chrome::new(render_settings(
        Duration::from_secs(10),
        &charts.egress_entry(),
    ))
    .unwrap();
    let pid = blocking({
        let chrome = Arc::clone(&chrome);
        move || {
            chrome.warm_up().unwrap();
            chrome.pid().unwrap()
        }
    })
    .await;
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    let proxy = cmdline
        .split('\0')
        .find_map(|a| a.strip_prefix("--proxy-server=socks5://"))
        .expect("Chromium is pointed at the egress proxy")
        .to_owned();
    let chromium_uid: u32 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap();

    let before = refused(&chrome, REFUSED_STRANGER);
    let mut stream = std::net::TcpStream::connect(&proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    std::io::Write::write_all(&mut stream, &[5, 1, 0]).unwrap();
    if nix::unistd::geteuid().as_raw() == chromium_uid {
        let mut answer = [0u8; 2];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(answer, [5, 0], "Chromium's own user is served");
        assert_eq!(refused(&chrome, REFUSED_STRANGER), before);
    } else {
        // Closed unanswered: an end of stream, or a reset (the greeting was
        // never read).
        let mut answer = Vec::new();
        match stream.read_to_end(&mut answer) {
            Ok(_) => assert!(answer.is_empty(), "a stranger gets no answer: {answer:?}"),
            Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
        }
        assert_eq!(refused(&chrome, REFUSED_STRANGER), before + 1);
    }
}

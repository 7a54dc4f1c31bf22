//! Test support: a chart page server that behaves like TradingView where it
//! matters (sign-in wall without a valid session, draws late, then reports
//! ready), a Supabase Storage stub that records each upload, and helpers to
//! build a worker against a test database.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capture::metrics::Metrics;
use capture::queue::Queue;
use capture::render::{Chrome, RenderSettings};
use capture::storage::Storage;
use capture::worker::{Settings, Worker};
use cookie_seal::{Keyring, TradingViewSession};
use service_runtime::SecretString;
use stack_harness::{Stack, TestDb, Trader};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_postgres::Client;
use uuid::Uuid;

pub const READY_CHECK: &str = "window.chartReady === true";
pub const LOGIN_CHECK: &str = "!!document.getElementById('login-wall')";
/// The colour the test chart fills its canvas with once drawn.
pub const CHART_RGB: [u8; 3] = [12, 200, 90];

/// One request the chart page server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub cookies: String,
}

/// The chart page server. `/chart/{id}/` answers a page that shows a
/// sign-in wall unless the request carries a `sessionid` the server knows,
/// else sets a `visited` cookie (a page in a reused context would send it),
/// draws on a canvas after `delay_ms` and only then sets
/// `window.chartReady`. `never=1` in the query never gets ready.
#[derive(Clone, Debug)]
pub struct ChartServer {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    valid_sessions: Arc<Mutex<HashMap<String, String>>>,
}

impl ChartServer {
    pub async fn start(delay_ms: u64) -> Self {
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

    /// Accepts `session` for chart `chart_id` from now on.
    pub fn accept(&self, session: &TradingViewSession, chart_id: &str) {
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

/// A recorded upload to the Storage stub.
#[derive(Clone, Debug)]
pub struct Upload {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// A Supabase Storage stand-in: records each request and answers `status`
/// (a queue of statuses, the last one repeats).
#[derive(Clone, Debug)]
pub struct StorageStub {
    pub base: String,
    pub uploads: Arc<Mutex<Vec<Upload>>>,
}

impl StorageStub {
    pub async fn start(statuses: Vec<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let uploads: Arc<Mutex<Vec<Upload>>> = Arc::default();
        let recorded = Arc::clone(&uploads);
        let statuses = Arc::new(Mutex::new(statuses));
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let recorded = Arc::clone(&recorded);
                let statuses = Arc::clone(&statuses);
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 16384];
                    let header_end = loop {
                        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
                    let mut lines = head.lines();
                    let mut first = lines.next().unwrap_or("").split(' ');
                    let method = first.next().unwrap_or("").to_owned();
                    let path = first.next().unwrap_or("").to_owned();
                    let headers: HashMap<String, String> = lines
                        .filter_map(|l| l.split_once(": "))
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
                        .collect();
                    let length: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buffer.len() < header_end + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    recorded.lock().unwrap().push(Upload {
                        method,
                        path,
                        headers,
                        body: buffer[header_end..header_end + length].to_vec(),
                    });
                    let status = {
                        let mut statuses = statuses.lock().unwrap();
                        if statuses.len() > 1 {
                            statuses.remove(0)
                        } else {
                            statuses[0]
                        }
                    };
                    let body = if status == 200 {
                        r#"{"Key":"screenshots/x.png"}"#
                    } else {
                        r#"{"statusCode":"500","error":"internal","message":"boom"}"#
                    };
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Self { base, uploads }
    }
}

pub fn keyring() -> Keyring {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    Keyring::parse(&SecretString::from(format!("test1:{key}"))).unwrap()
}

pub fn session(name: &str) -> TradingViewSession {
    TradingViewSession {
        sessionid: format!("sid-{name}-{}", Uuid::new_v4().simple()),
        sessionid_sign: format!("sign-{name}"),
    }
}

/// Gives `trader` a sealed session and a default chart.
pub async fn sign_in(db: &Client, trader: &Trader, session: &TradingViewSession, chart_id: &str) {
    let sealed = keyring().seal(trader.id, session);
    db.execute(
        "update public.user_config set tradingview_cookies_sealed = $2, cookies_valid = true, default_chart_id = $3 \
          where user_id = $1",
        &[&trader.id, &sealed, &chart_id],
    )
    .await
    .unwrap();
}

/// One alert through `public.ingest_signal`, as the webhook edge sends it.
pub async fn alert(db: &Client, trader: &Trader, price: f64, direction: &str) -> Uuid {
    let row = db
        .query_one(
            "select (public.ingest_signal($1, now(), $2, null, 'BINANCE:BTCUSDT', 'BINANCE', 'BTCUSDT', $3::float8::numeric, $4, null, '60') ->> 'signal_id')::uuid",
            &[&trader.webhook_token, &format!("alert {}", Uuid::new_v4()), &price, &direction],
        )
        .await
        .unwrap();
    row.get::<_, Option<Uuid>>(0).expect("alert accepted")
}

/// A plan without limits, so tests can send many alerts.
pub async fn unlimited_trader(db: &Client) -> Trader {
    db.batch_execute(
        "insert into public.plans (id, name, monthly_signal_quota, capture_priority, rate_limit_per_minute, screenshot_retention_days) \
         values ('unlimited_test', 'Test', 1000000, 2, 1000000, 1) on conflict do nothing",
    )
    .await
    .unwrap();
    stack_harness::trader_in(db, "unlimited_test").await
}

/// The signal's screenshot fields and its job row (if any).
#[derive(Debug)]
pub struct Row {
    pub status: String,
    pub path: Option<String>,
    pub url: Option<String>,
    pub error: Option<String>,
    pub job_state: Option<String>,
    pub attempts: Option<i16>,
}

pub async fn row(db: &Client, signal: Uuid) -> Row {
    let r = db
        .query_one(
            "select s.screenshot_status, s.screenshot_path, s.screenshot_url, s.screenshot_error, j.state, j.attempts \
               from public.signals s left join private.capture_jobs j on j.signal_id = s.id where s.id = $1",
            &[&signal],
        )
        .await
        .unwrap();
    Row {
        status: r.get(0),
        path: r.get(1),
        url: r.get(2),
        error: r.get(3),
        job_state: r.get(4),
        attempts: r.get(5),
    }
}

/// The knobs tests turn.
#[derive(Clone, Debug)]
pub struct Knobs {
    pub concurrency: u16,
    pub job_timeout: Duration,
    pub storage: Storage,
}

pub fn fs_storage() -> (Storage, PathBuf) {
    let dir = std::env::temp_dir().join(format!("capture-test-{}", Uuid::new_v4().simple()));
    (Storage::Fs { dir: dir.clone() }, dir)
}

pub fn render_settings(job_timeout: Duration) -> RenderSettings {
    RenderSettings {
        chromium: std::env::var("CHROMIUM_PATH")
            .unwrap_or_else(|_| "/usr/bin/chromium".into())
            .into(),
        recycle_after: 100,
        prewarm: 1,
        ready_check: READY_CHECK.into(),
        login_check: LOGIN_CHECK.into(),
        hide_css: ".toast { display: none !important; }".into(),
        extra_cookies: vec![(
            "cookiePrivacyPreferenceBannerProduction".into(),
            "accepted".into(),
        )],
        page_timeout: job_timeout.mul_f64(0.8),
    }
}

pub fn worker(test_db: &TestDb, charts: &ChartServer, knobs: Knobs) -> Arc<Worker> {
    let pg: tokio_postgres::Config = test_db.url.parse().unwrap();
    let manager = deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(8)
        .build()
        .unwrap();
    Arc::new(Worker {
        queue: Queue::new(pool),
        chrome: Chrome::new(render_settings(knobs.job_timeout)).expect("the Chromium launcher"),
        storage: knobs.storage,
        keys: Some(Arc::new(keyring())),
        metrics: Metrics::new(),
        settings: Settings {
            worker_id: format!("test-{}", Uuid::new_v4().simple()),
            concurrency: knobs.concurrency,
            lease: knobs.job_timeout + Duration::from_secs(10),
            job_timeout: knobs.job_timeout,
            poll_interval: Duration::from_millis(500),
            chart_url_template: format!(
                "{}/chart/{{chart_id}}/?symbol={{symbol}}&interval={{interval}}",
                charts.base
            ),
        },
        telegram: None,
    })
}

pub fn stack() -> Stack {
    Stack::from_env()
}

/// Decodes a PNG: (width, height, RGBA pixels).
pub fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(png_bytes);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buffer = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).expect("a frame");
    buffer.truncate(info.buffer_size());
    let rgba = match info.color_type {
        png::ColorType::Rgba => buffer,
        png::ColorType::Rgb => buffer
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        other => panic!("unexpected colour type {other:?}"),
    };
    (info.width, info.height, rgba)
}

/// The share of pixels close to `rgb`.
pub fn share_of(rgba: &[u8], rgb: [u8; 3]) -> f64 {
    let total = rgba.len() / 4;
    let near = rgba
        .chunks(4)
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= 8))
        .count();
    f64::from(u32::try_from(near).unwrap()) / f64::from(u32::try_from(total).unwrap())
}

/// How many distinct colours (coarsely) the picture has.
pub fn distinct_colours(rgba: &[u8]) -> usize {
    let mut set = std::collections::HashSet::new();
    for p in rgba.chunks(4) {
        set.insert((p[0] >> 4, p[1] >> 4, p[2] >> 4));
    }
    set.len()
}

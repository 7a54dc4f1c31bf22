//! What the tests share: test data in the database (traders, their sealed
//! sessions, alerts, the rows a capture leaves), the stub servers, the two
//! ways to run the daemon ([`daemon`]) and reading the PNGs it stores.

pub(crate) mod bot_stub;
pub(crate) mod chart_server;
pub(crate) mod daemon;
pub(crate) mod storage_stub;
pub(crate) mod telegram_stub;
pub(crate) mod tradingview_home;

use std::path::PathBuf;

use base64::Engine as _;
use capture::storage::Storage;
use cookie_seal::{Keyring, TradingViewSession};
use service_runtime::SecretString;
use stack_harness::{Stack, Trader};
use tokio_postgres::Client;
use uuid::Uuid;

pub(crate) use chart_server::ChartServer;

/// `COOKIE_SEAL_KEYS` for the keyring every test daemon uses.
pub(crate) fn seal_keys_spec() -> String {
    format!(
        "test1:{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    )
}

pub(crate) fn keyring() -> Keyring {
    Keyring::parse(&SecretString::from(seal_keys_spec())).unwrap()
}

/// A TradingView session whose values no other test uses.
pub(crate) fn session(name: &str) -> TradingViewSession {
    TradingViewSession {
        sessionid: format!("sid-{name}-{}", Uuid::new_v4().simple()),
        sessionid_sign: format!("sign-{name}"),
    }
}

/// Gives `trader` a sealed session and a default chart.
pub(crate) async fn sign_in(
    db: &Client,
    trader: &Trader,
    session: &TradingViewSession,
    chart_id: &str,
) {
    let sealed = keyring().seal(trader.id, session);
    db.execute(
        "update public.user_config set tradingview_cookies_sealed = $2, cookies_valid = true, default_chart_id = $3 \
          where user_id = $1",
        &[&trader.id, &sealed, &chart_id],
    )
    .await
    .unwrap();
}

/// A trader with a session `charts` accepts for `chart_id`.
pub(crate) async fn signed_in_trader(db: &Client, charts: &ChartServer, chart_id: &str) -> Trader {
    let trader = unlimited_trader(db).await;
    let tv = session(chart_id);
    sign_in(db, &trader, &tv, chart_id).await;
    charts.accept(&tv, chart_id);
    trader
}

/// One alert through `public.ingest_signal`, as the webhook edge sends it.
pub(crate) async fn alert(db: &Client, trader: &Trader, price: f64, direction: &str) -> Uuid {
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
pub(crate) async fn unlimited_trader(db: &Client) -> Trader {
    db.batch_execute(
        "insert into public.plans (id, name, monthly_signal_quota, capture_priority, rate_limit_per_minute, screenshot_retention_days) \
         values ('unlimited_test', 'Test', 1000000, 2, 1000000, 1) on conflict do nothing",
    )
    .await
    .unwrap();
    stack_harness::trader_in(db, "unlimited_test").await
}

/// Links `chat` to `trader` as the bot does once it received their code
/// (the code itself is tested in `telegram_link` and in pgTAP).
pub(crate) async fn link_chat(db: &mut Client, trader: &Trader, chat: &str) {
    let tx = db.transaction().await.unwrap();
    tx.execute(
        "select set_config('signal_capture.telegram_chat', 'link', true)",
        &[],
    )
    .await
    .unwrap();
    tx.execute(
        "update public.user_config set telegram_chat_id = $2, telegram_linked_at = now(), notify_telegram = true \
          where user_id = $1",
        &[&trader.id, &chat],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// A Telegram link code for `trader`, from `public.telegram_link_code()`
/// called as the signed-in trader (as PostgREST calls it).
pub(crate) async fn telegram_link_code(db: &mut Client, trader: &Trader) -> String {
    let tx = db.transaction().await.unwrap();
    tx.execute(
        "select set_config('request.jwt.claims', json_build_object('sub', $1::uuid, 'role', 'authenticated')::text, true)",
        &[&trader.id],
    )
    .await
    .unwrap();
    tx.batch_execute("set local role authenticated")
        .await
        .unwrap();
    let code: String = tx
        .query_one("select code from public.telegram_link_code()", &[])
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    code
}

/// The signal's screenshot fields and its job row (if any).
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) status: String,
    pub(crate) path: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) job_state: Option<String>,
    pub(crate) attempts: Option<i16>,
}

pub(crate) async fn row(db: &Client, signal: Uuid) -> Row {
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

/// The trader's stored sealed session.
pub(crate) async fn sealed_session(db: &Client, trader: &Trader) -> Option<Vec<u8>> {
    db.query_one(
        "select tradingview_cookies_sealed from public.user_config where user_id = $1",
        &[&trader.id],
    )
    .await
    .unwrap()
    .get(0)
}

/// Screenshots in a fresh directory of their own (not created yet).
pub(crate) fn fs_storage() -> (Storage, PathBuf) {
    let dir = std::env::temp_dir().join(format!("capture-test-{}", Uuid::new_v4().simple()));
    (Storage::Fs { dir: dir.clone() }, dir)
}

pub(crate) fn stack() -> Stack {
    Stack::from_env()
}

/// Decodes a PNG: (width, height, RGBA pixels).
pub(crate) fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
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
pub(crate) fn share_of(rgba: &[u8], rgb: [u8; 3]) -> f64 {
    let total = rgba.len() / 4;
    let near = rgba
        .chunks(4)
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= 8))
        .count();
    f64::from(u32::try_from(near).unwrap()) / f64::from(u32::try_from(total).unwrap())
}

/// How many pixels are close to `rgb`.
pub(crate) fn pixels_near(rgba: &[u8], rgb: [u8; 3]) -> usize {
    rgba.chunks(4)
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= 8))
        .count()
}

/// How many distinct colours (coarsely) the picture has.
pub(crate) fn distinct_colours(rgba: &[u8]) -> usize {
    let mut set = std::collections::HashSet::new();
    for p in rgba.chunks(4) {
        set.insert((p[0] >> 4, p[1] >> 4, p[2] >> 4));
    }
    set.len()
}

/// The RGBA pixels of the `w` x `h` rectangle at (`x`, `y`) of a picture
/// `width` pixels wide.
pub(crate) fn region(rgba: &[u8], width: u32, x: u32, y: u32, w: u32, h: u32) -> Vec<u8> {
    let (width, x, y, w, h) = (
        width as usize,
        x as usize,
        y as usize,
        w as usize,
        h as usize,
    );
    (y..y + h)
        .flat_map(|row| {
            let start = (row * width + x) * 4;
            rgba[start..start + w * 4].iter().copied()
        })
        .collect()
}

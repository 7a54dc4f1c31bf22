//! Linking a trader's Telegram chat by proof, with the daemon in serve mode
//! against the stub Bot API ([`crate::support::bot_stub`]): every request
//! checked exactly, the database's row checked after each step.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use capture::telegram::{RetryPolicy, Telegram};
use capture::telegram_link::{Outcome, PRIVATE_ONLY, PollSettings};
use serde_json::json;
use service_runtime::SecretString;
use stack_harness::{TestDb, Trader};
use tokio_postgres::Client;

use crate::support::bot_stub::BotStub;
use crate::support::daemon::{Knobs, serve, worker};
use crate::support::{
    ChartServer, alert, fs_storage, row, stack, telegram_link_code, unlimited_trader,
};

const BOT_TOKEN: &str = "4242:test-bot-token";

/// Polling paced for tests: one-second long polls, quick take-over.
fn poll_settings() -> PollSettings {
    PollSettings {
        long_poll: Duration::from_secs(1),
        lease: Duration::from_secs(10),
        standby: Duration::from_millis(200),
        backoff: Duration::from_millis(200),
    }
}

fn knobs(api: &str) -> Knobs {
    let (storage, _) = fs_storage();
    let mut knobs = Knobs::new(storage);
    knobs.telegram = Some(Arc::new(Telegram::new(
        api.parse().unwrap(),
        SecretString::from(BOT_TOKEN),
        RetryPolicy {
            attempts: 2,
            backoff: Duration::from_millis(50),
            max_wait: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        },
    )));
    knobs.telegram_poll = poll_settings();
    knobs
}

/// Waits (at most 20 s) until `check` holds.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The trader's chat, whether notifications are on, and the pending code's expiry.
async fn telegram_row(db: &Client, trader: &Trader) -> (Option<String>, bool, bool) {
    let row = db
        .query_one(
            "select telegram_chat_id, notify_telegram, telegram_link_code_expires_at is not null \
               from public.user_config where user_id = $1",
            &[&trader.id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// The daemon holding the bot's poller lease, and the next offset.
async fn bot_state(db: &Client) -> (Option<String>, i64) {
    let row = db
        .query_one(
            "select poller, next_update_id from private.telegram_bots where bot_id = 4242",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn reply(chat: i64, text: &str) -> serde_json::Value {
    json!({ "chat_id": chat, "text": text })
}

/// The dashboard's code, sent as `/start <code>` in the trader's private
/// chat, links that chat; the bot says so, the next signal arrives there;
/// a code in a group or a wrong code links nothing; `/stop` unlinks.
#[tokio::test]
async fn the_chat_a_code_is_sent_from_is_linked_and_stop_unlinks_it() {
    let test_db = TestDb::create(&stack()).await;
    let mut db = test_db.client().await;
    let charts = ChartServer::start(50).await;
    let trader = unlimited_trader(&db).await;
    let code = telegram_link_code(&mut db, &trader).await;
    assert_eq!(telegram_row(&db, &trader).await, (None, false, true));

    let (bot, api) = BotStub::start(false).await;
    bot.message(
        500,
        -100_777,
        "supergroup",
        &format!("/start@signal_capture_bot {code}"),
    );
    bot.message(501, 111, "private", "/start not-the-code");
    bot.message(502, 111, "private", "hello");
    bot.message(503, 111, "private", &format!("/start {code}"));
    let daemon = serve(&test_db, worker(&test_db, &charts, knobs(&api))).await;

    eventually("the bot's answers", || async {
        bot.calls("sendMessage").len() >= 3
    })
    .await;
    assert_eq!(
        telegram_row(&db, &trader).await,
        (Some("111".into()), true, false),
        "the private chat the code came from, notifications on, the code spent"
    );
    // Exactly these requests: the first poll from offset 0, the answers in
    // order (nothing for "hello"), and the next poll confirming all four.
    let polls = bot.bodies("getUpdates");
    assert_eq!(
        polls[0],
        json!({ "offset": 0, "timeout": 1, "allowed_updates": ["message"] })
    );
    eventually("a poll confirming the updates", || async {
        bot.bodies("getUpdates").iter().any(|b| b["offset"] == 504)
    })
    .await;
    assert_eq!(
        bot.bodies("sendMessage"),
        [
            reply(-100_777, PRIVATE_ONLY),
            reply(111, Outcome::InvalidCode.reply().unwrap()),
            reply(111, Outcome::Linked.reply().unwrap()),
        ]
    );
    for call in bot.calls("sendMessage") {
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, format!("/bot{BOT_TOKEN}/sendMessage"));
        assert_eq!(call.content_type, "application/json");
    }
    assert_eq!(bot_state(&db).await.1, 504);

    // The linked chat gets the trader's next signal, with its screenshot.
    let signal = alert(&db, &trader, 101.5, "long").await;
    eventually("the signal's photo", || async {
        !bot.calls("sendPhoto").is_empty()
    })
    .await;
    assert_eq!(row(&db, signal).await.status, "completed");
    let photo = &bot.calls("sendPhoto")[0];
    assert_eq!(photo.path, format!("/bot{BOT_TOKEN}/sendPhoto"));
    let to_chat: &[u8] = b"name=\"chat_id\"\r\n\r\n111\r\n";
    assert!(
        photo.body.windows(to_chat.len()).any(|w| w == to_chat),
        "to the linked chat"
    );

    // /stop unlinks, and says so.
    bot.message(504, 111, "private", "/stop");
    eventually("the unlink answer", || async {
        bot.calls("sendMessage").len() >= 4
    })
    .await;
    assert_eq!(
        bot.bodies("sendMessage")[3],
        reply(111, Outcome::Unlinked.reply().unwrap())
    );
    assert_eq!(telegram_row(&db, &trader).await, (None, false, false));

    daemon.stop().await;
    assert_eq!(
        bot_state(&db).await,
        (None, 505),
        "the lease given back, the offset kept"
    );
    test_db.drop_db().await;
}

/// Telegram re-sends an update until a poll confirms it; a daemon that
/// died in between sees it again. The database acts on it once: one link,
/// one answer. A daemon started later polls from the stored offset.
#[tokio::test]
async fn each_update_is_acted_on_once_across_restarts() {
    let test_db = TestDb::create(&stack()).await;
    let mut db = test_db.client().await;
    let charts = ChartServer::start(50).await;
    let trader = unlimited_trader(&db).await;
    let code = telegram_link_code(&mut db, &trader).await;

    let (bot, api) = BotStub::start(true).await;
    bot.message(700, 222, "private", &format!("/start {code}"));
    let first = serve(&test_db, worker(&test_db, &charts, knobs(&api))).await;
    eventually("the update delivered three times", || async {
        bot.calls("getUpdates").len() >= 4
    })
    .await;
    first.stop().await;
    assert_eq!(
        bot.bodies("sendMessage"),
        [reply(222, Outcome::Linked.reply().unwrap())],
        "answered once"
    );
    assert_eq!(
        telegram_row(&db, &trader).await,
        (Some("222".into()), true, false)
    );

    let polls_before = bot.calls("getUpdates").len();
    let second = serve(&test_db, worker(&test_db, &charts, knobs(&api))).await;
    eventually("the next daemon's poll", || async {
        bot.calls("getUpdates").len() > polls_before
    })
    .await;
    second.stop().await;
    assert_eq!(
        bot.bodies("getUpdates")[polls_before],
        json!({ "offset": 701, "timeout": 1, "allowed_updates": ["message"] }),
        "a new daemon starts at the stored offset"
    );
    assert_eq!(
        bot.calls("sendMessage").len(),
        1,
        "and answers nothing again"
    );
    test_db.drop_db().await;
}

/// Telegram allows one long poll per bot: of two daemons, one polls; when
/// it stops, the other takes over.
#[tokio::test]
async fn one_daemon_polls_and_another_takes_over() {
    let test_db = TestDb::create(&stack()).await;
    let mut db = test_db.client().await;
    let charts = ChartServer::start(50).await;
    let (bot, api) = BotStub::start(false).await;

    let worker_a = worker(&test_db, &charts, knobs(&api));
    let a_id = worker_a.settings.worker_id.clone();
    let a = serve(&test_db, worker_a).await;
    eventually("daemon a polling", || async {
        !bot.calls("getUpdates").is_empty()
    })
    .await;
    let worker_b = worker(&test_db, &charts, knobs(&api));
    let b_id = worker_b.settings.worker_id.clone();
    let b = serve(&test_db, worker_b).await;
    // Long enough for b to have tried many times (standby 200 ms).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bot_state(&db).await.0, Some(a_id));
    assert_eq!(bot.most_polls_in_flight(), 1, "never two polls at once");
    // (When a stops, its poll is dropped mid-way: Telegram ends it with 409 when
    // the next one comes, so a moment of overlap there is harmless.)

    a.stop().await;
    eventually("daemon b taking over", || async {
        bot_state(&db).await.0.as_deref() == Some(b_id.as_str())
    })
    .await;
    let trader = unlimited_trader(&db).await;
    let code = telegram_link_code(&mut db, &trader).await;
    bot.message(1, 333, "private", &format!("/start {code}"));
    eventually("b linking the chat", || async {
        telegram_row(&db, &trader).await.0.is_some()
    })
    .await;
    b.stop().await;
    assert_eq!(telegram_row(&db, &trader).await.0.as_deref(), Some("333"));
    test_db.drop_db().await;
}

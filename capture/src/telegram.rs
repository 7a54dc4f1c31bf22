//! Telegram notifications: a trader who asked for them gets each signal, with
//! its screenshot, in their Telegram chat through the Bot API.
//!
//! Why it looks the way it does:
//!
//! - A notification is a courtesy, never part of the signal: [`Telegram::send`]
//!   returns an error the caller logs and drops. Nothing here touches the
//!   database or the job's lease.
//! - Captions use HTML, not Markdown: tickers such as `BTC_USDT` or
//!   `ES1!` break Telegram's Markdown parser, while HTML needs only `&`, `<`
//!   and `>` escaped ([`escape_html`]).
//! - Telegram answers a flood with `429` and `parameters.retry_after`; we
//!   wait that long (capped) and try again, a few times. Network errors and
//!   5xx get a short backoff. Any other `4xx` (a chat that does not exist,
//!   a bot the trader blocked) will not get better by retrying and ends the
//!   attempt at once.
//! - The same client is the bot's voice when traders link their chat
//!   ([`crate::telegram_link`]): [`Telegram::reply`] and the single
//!   [`Telegram::call`] that `getUpdates` needs.
//! - The bot token is part of every request path (`/bot<token>/sendPhoto`).
//!   reqwest puts the URL into its error messages, so every error is
//!   stripped of its URL before it leaves this module, and the token never
//!   reaches a log line.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use service_runtime::{ExposeSecret as _, SecretString};
use url::Url;

/// Telegram's limit on a photo caption, in characters.
const CAPTION_LIMIT: usize = 1024;

/// A Telegram chat to notify: a numeric chat id (negative for groups and
/// channels) or a public channel's `@username`. The same rule as the
/// `user_config.telegram_chat_id` check constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatId(String);

/// Why a string is not a Telegram chat id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "a Telegram chat id is a number of at most 16 digits without a leading zero (negative for \
     groups) or a channel @username of 5 to 32 letters, digits and underscores that starts with a \
     letter and does not end with an underscore"
)]
pub struct InvalidChatId;

impl FromStr for ChatId {
    type Err = InvalidChatId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = if let Some(name) = s.strip_prefix('@') {
            (5..=32).contains(&name.len())
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
                && !name.ends_with('_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        } else {
            let digits = s.strip_prefix('-').unwrap_or(s);
            (1..=16).contains(&digits.len())
                && !digits.starts_with('0')
                && digits.bytes().all(|b| b.is_ascii_digit())
        };
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidChatId)
        }
    }
}

impl ChatId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the trader is told about one signal.
#[derive(Debug, Clone)]
pub struct Notification {
    pub chat_id: ChatId,
    /// `EXCHANGE:SYMBOL` or the bare symbol.
    pub ticker: String,
    /// `long` or `short`, when the alert said.
    pub direction: Option<String>,
    /// The price as stored (a decimal string), when the alert carried one.
    pub price: Option<String>,
    pub indicator: Option<String>,
    /// When the alert fired, already formatted for people (UTC).
    pub time: String,
    pub screenshot: Screenshot,
}

/// How the capture of the signal's chart ended.
#[derive(Debug, Clone)]
pub enum Screenshot {
    /// The PNG that was stored; sent as the message's photo.
    Captured(Bytes),
    /// No picture: the reason the trader can read on the dashboard.
    Failed(String),
}

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Telegram refused the request for good (e.g. `400 chat not found`,
    /// `403 bot was blocked by the user`).
    #[error("Telegram refused the message ({status}): {description}")]
    Rejected { status: u16, description: String },
    /// Still failing after every attempt (flood limits, 5xx, network).
    #[error("Telegram did not accept the message after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
}

/// Why a single Bot API call ([`Telegram::call`]) returned no result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer, or not a Bot API answer (the URL, with the token, is
    /// never part of the message).
    #[error("the Bot API could not be reached: {0}")]
    Network(String),
    /// The Bot API answered `ok: false` (e.g. 409 when a webhook is set or
    /// another client is polling, 401 for a revoked token).
    #[error("the Bot API refused the call ({status}): {description}")]
    Refused { status: u16, description: String },
}

/// How hard [`Telegram::send`] tries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait after a network error or 5xx; doubled after each one.
    pub backoff: Duration,
    /// The longest wait honoured from a 429's `retry_after`; a longer one
    /// gives up instead of holding a capture slot's follow-up for minutes.
    pub max_wait: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(30),
            timeout: Duration::from_secs(15),
        }
    }
}

/// A Bot API client for one bot.
pub struct Telegram {
    http: reqwest::Client,
    /// `https://api.telegram.org` in production; a local stub in tests.
    api_base: Url,
    bot_token: SecretString,
    retry: RetryPolicy,
}

impl fmt::Debug for Telegram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telegram")
            .field("api_base", &self.api_base.as_str())
            .field("bot_token", &"[redacted]")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// The part of a Bot API answer we read.
#[derive(Debug, Deserialize)]
struct ApiAnswer {
    ok: bool,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<ResponseParameters>,
}

#[derive(Debug, Deserialize)]
struct ResponseParameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

/// What the trader reads when their TradingView session expired.
const SESSION_EXPIRED_TEXT: &str = "<b>Your TradingView session has expired or was signed out.</b>\n\
Paste fresh sessionid and sessionid_sign cookies in your settings to get chart screenshots again; \
until then your signals come with the built-in chart.";

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// Try again: after the time Telegram asked for (`retry_after`), or
    /// after the growing backoff when it said nothing.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    Rejected(NotifyError),
}

impl Telegram {
    pub fn new(api_base: Url, bot_token: SecretString, retry: RetryPolicy) -> Self {
        Self {
            http: reqwest::Client::new(),
            api_base,
            bot_token,
            retry,
        }
    }

    /// The bot's id: the number before the `:` in its token (not a secret;
    /// Telegram shows it as the bot's user id). `None` for a token that is
    /// not shaped like one.
    pub fn bot_id(&self) -> Option<i64> {
        bot_id_of(self.bot_token.expose_secret())
    }

    /// Sends the notification: `sendPhoto` with the screenshot and an HTML
    /// caption, or `sendMessage` with the failure reason.
    pub async fn send(&self, notification: &Notification) -> Result<(), NotifyError> {
        let caption = caption(notification);
        self.deliver(|| self.notification_request(notification, &caption))
            .await
    }

    /// Tells the trader their TradingView session expired (once per
    /// expiry: the caller sends it only when it expired the session).
    pub async fn send_session_expired(&self, chat_id: &ChatId) -> Result<(), NotifyError> {
        self.deliver(|| self.html_message(chat_id.as_str(), SESSION_EXPIRED_TEXT))
            .await
    }

    /// Sends `text` (plain, no parse mode) to `chat_id`: the bot's replies
    /// to the commands traders send it.
    pub async fn reply(&self, chat_id: i64, text: &str) -> Result<(), NotifyError> {
        self.deliver(|| {
            self.http
                .post(self.method_url("sendMessage"))
                .json(&serde_json::json!({ "chat_id": chat_id, "text": text }))
        })
        .await
    }

    /// One Bot API call with a JSON body, no retries: its `result`. For
    /// `getUpdates`, whose caller polls again anyway.
    pub async fn call(
        &self,
        method: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, CallError> {
        let response = self
            .http
            .post(self.method_url(method))
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| CallError::Network(e.without_url().to_string()))?;
        let status = response.status();
        let answer: serde_json::Value = response
            .json()
            .await
            .map_err(|e| CallError::Network(e.without_url().to_string()))?;
        if status.is_success() && answer["ok"] == true {
            return Ok(answer["result"].clone());
        }
        Err(CallError::Refused {
            status: status.as_u16(),
            description: answer["description"]
                .as_str()
                .map_or_else(|| status.to_string(), str::to_owned),
        })
    }

    /// Sends what `request` builds (anew for each attempt), retrying flood
    /// limits, 5xx and network errors as [`RetryPolicy`] says.
    async fn deliver(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(), NotifyError> {
        let mut backoff = self.retry.backoff;
        let mut last = String::new();
        for attempt in 1..=self.retry.attempts.max(1) {
            match self.attempt(request()).await {
                Attempt::Delivered => return Ok(()),
                Attempt::Rejected(error) => return Err(error),
                Attempt::Retry { after, why } => {
                    last = why;
                    let wait = after.unwrap_or_else(|| {
                        let wait = backoff;
                        backoff = backoff.saturating_mul(2);
                        wait
                    });
                    if attempt == self.retry.attempts || wait > self.retry.max_wait {
                        break;
                    }
                    tracing::debug!(attempt, wait_ms = wait.as_millis(), reason = %last, "Telegram: retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Err(NotifyError::GaveUp {
            attempts: self.retry.attempts.max(1),
            last,
        })
    }

    /// `sendPhoto` with the screenshot, or `sendMessage` with the reason.
    fn notification_request(
        &self,
        notification: &Notification,
        caption: &str,
    ) -> reqwest::RequestBuilder {
        let chat_id = notification.chat_id.as_str().to_owned();
        match &notification.screenshot {
            Screenshot::Captured(png) => {
                let photo = Part::stream(reqwest::Body::from(png.clone()))
                    .file_name("signal.png")
                    .mime_str("image/png")
                    .expect("image/png is a valid MIME type");
                let form = Form::new()
                    .text("chat_id", chat_id)
                    .text("caption", caption.to_owned())
                    .text("parse_mode", "HTML")
                    .part("photo", photo);
                self.http.post(self.method_url("sendPhoto")).multipart(form)
            }
            Screenshot::Failed(_) => self.html_message(&chat_id, caption),
        }
    }

    /// `sendMessage` with `text` as HTML, without a link preview.
    fn html_message(&self, chat_id: &str, text: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.method_url("sendMessage"))
            .json(&serde_json::json!({
                "chat_id": chat_id,
                "text": text,
                "parse_mode": "HTML",
                "link_preview_options": { "is_disabled": true },
            }))
    }

    async fn attempt(&self, request: reqwest::RequestBuilder) -> Attempt {
        let response = match request.timeout(self.retry.timeout).send().await {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Retry {
                    after: None,
                    why: error.without_url().to_string(),
                };
            }
        };
        let status = response.status();
        let answer: Option<ApiAnswer> = response.json().await.ok();
        if status.is_success() && answer.as_ref().is_some_and(|a| a.ok) {
            return Attempt::Delivered;
        }
        let description = answer
            .as_ref()
            .and_then(|a| a.description.clone())
            .unwrap_or_else(|| status.to_string());
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let seconds = answer
                .as_ref()
                .and_then(|a| a.parameters.as_ref())
                .and_then(|p| p.retry_after)
                .unwrap_or(1);
            return Attempt::Retry {
                after: Some(Duration::from_secs(seconds)),
                why: description,
            };
        }
        if status.is_server_error() || status.is_success() {
            return Attempt::Retry {
                after: None,
                why: description,
            };
        }
        Attempt::Rejected(NotifyError::Rejected {
            status: status.as_u16(),
            description,
        })
    }

    fn method_url(&self, method: &str) -> Url {
        let mut url = self.api_base.clone();
        url.set_path(&format!("/bot{}/{method}", self.bot_token.expose_secret()));
        url
    }
}

/// The bot id in a bot token (`<bot id>:<secret>`, as `@BotFather` gives
/// it); `None` when `token` is not shaped like one.
pub fn bot_id_of(token: &str) -> Option<i64> {
    let (id, secret) = token.split_once(':')?;
    (!secret.is_empty() && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| id.parse().ok())
        .flatten()
        .filter(|id| *id > 0)
}

/// The notification about `signal_id`, if its owner wants one for this
/// outcome: notifications switched on, and for a failed capture only when
/// they also asked to hear about failures. Read fresh from the database
/// (`private.signal_notification`) at send time, so a trader who has just
/// switched notifications off is not messaged from stale settings.
pub async fn notification_for(
    db: &tokio_postgres::Client,
    signal_id: uuid::Uuid,
    screenshot: Screenshot,
) -> Result<Option<Notification>, tokio_postgres::Error> {
    let Some(row) = db
        .query_opt(
            "select chat_id, notify_on_failure, ticker, direction, price::text, indicator_name, \
                    to_char(signal_time at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"') \
               from private.signal_notification($1)",
            &[&signal_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let notify_on_failure: bool = row.get(1);
    if matches!(screenshot, Screenshot::Failed(_)) && !notify_on_failure {
        return Ok(None);
    }
    let Ok(chat_id) = row.get::<_, String>(0).parse::<ChatId>() else {
        // The table's check constraint makes this unreachable; if the rule
        // ever drifts, skip the message rather than send it anywhere odd.
        tracing::warn!(%signal_id, "Telegram chat id failed validation; not notifying");
        return Ok(None);
    };
    Ok(Some(Notification {
        chat_id,
        ticker: row.get(2),
        direction: row.get(3),
        price: row.get(4),
        indicator: row.get(5),
        time: row.get(6),
        screenshot,
    }))
}

/// The message text: what fired, where, at what price, and the screenshot's
/// fate when there is none.
pub fn caption(n: &Notification) -> String {
    let mut headline = format!("<b>{}</b>", escape_html(&n.ticker));
    if let Some(direction) = &n.direction {
        let arrow = if direction.eq_ignore_ascii_case("short") {
            "🔴"
        } else {
            "🟢"
        };
        headline = format!(
            "{headline} {arrow} {}",
            escape_html(&direction.to_uppercase())
        );
    }
    if let Some(price) = &n.price {
        headline = format!("{headline} @ <code>{}</code>", escape_html(price));
    }
    let mut lines = vec![headline];
    lines.extend(n.indicator.as_deref().map(escape_html));
    lines.push(format!("<i>{}</i>", escape_html(&n.time)));
    if let Screenshot::Failed(reason) = &n.screenshot {
        lines.push(format!("No screenshot: {}", escape_html(reason)));
    }
    truncate_chars(&lines.join("\n"), CAPTION_LIMIT)
}

/// Escapes the three characters Telegram's HTML parse mode reserves (and
/// `"` for good measure, in case text ever lands in an attribute).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Cuts `s` to at most `limit` characters without splitting an HTML entity
/// or leaving a tag open: the caption's tags all close before the free
/// text starts, so cutting happens only in escaped text, backed up to before
/// any partial `&...;`.
fn truncate_chars(s: &str, limit: usize) -> String {
    if s.chars().count() <= limit {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(limit - 1).collect();
    if let Some(amp) = cut.rfind('&')
        && !cut[amp..].contains(';')
    {
        cut.truncate(amp);
    }
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_ids_follow_the_database_rule() {
        for ok in ["123456789", "-1001234567890", "@signal_room", "@abcde"] {
            assert!(ok.parse::<ChatId>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-",
            "0",
            "0123",
            "12a",
            "@abc",
            "@1abcde",
            "@bad-name",
            "@trailing_",
            "12345678901234567",
            " 123",
        ] {
            assert_eq!(bad.parse::<ChatId>(), Err(InvalidChatId), "{bad}");
        }
    }

    #[test]
    fn html_is_escaped_and_underscores_survive() {
        assert_eq!(
            escape_html("BTC_USDT <x> & \"y\""),
            "BTC_USDT &lt;x&gt; &amp; &quot;y&quot;"
        );
    }

    fn notification(screenshot: Screenshot) -> Notification {
        Notification {
            chat_id: "42".parse().expect("valid"),
            ticker: "BINANCE:BTC_USDT".into(),
            direction: Some("short".into()),
            price: Some("67890.5".into()),
            indicator: Some("Trend <Pro> & Co".into()),
            time: "2026-11-22 10:00:00 UTC".into(),
            screenshot,
        }
    }

    #[test]
    fn captions_carry_the_signal() {
        assert_eq!(
            caption(&notification(Screenshot::Captured(Bytes::new()))),
            "<b>BINANCE:BTC_USDT</b> 🔴 SHORT @ <code>67890.5</code>\nTrend &lt;Pro&gt; &amp; Co\n<i>2026-11-22 10:00:00 UTC</i>"
        );
        let failed = caption(&notification(Screenshot::Failed(
            "TradingView session expired".into(),
        )));
        assert!(failed.ends_with("\nNo screenshot: TradingView session expired"));
    }

    #[test]
    fn long_captions_are_cut_without_breaking_an_entity() {
        let mut n = notification(Screenshot::Failed("&".repeat(2000)));
        n.indicator = None;
        let text = caption(&n);
        assert!(text.chars().count() <= CAPTION_LIMIT);
        assert!(text.ends_with("&amp;…"), "{}", &text[text.len() - 20..]);
    }

    #[test]
    fn the_bot_id_is_the_tokens_number() {
        assert_eq!(bot_id_of("123456:AAH-secret_x"), Some(123_456));
        for bad in [
            "",
            "123456",
            "123456:",
            ":secret",
            "12a:secret",
            "0:secret",
            "-5:secret",
        ] {
            assert_eq!(bot_id_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let telegram = Telegram::new(
            "http://127.0.0.1:1".parse().expect("url"),
            SecretString::from("123:secret-bot-token"),
            RetryPolicy::default(),
        );
        assert!(!format!("{telegram:?}").contains("secret-bot-token"));
    }
}

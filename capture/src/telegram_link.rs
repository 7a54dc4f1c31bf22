//! Linking a trader's Telegram chat by proof: the bot's side.
//!
//! A trader gets a one-time code from the dashboard
//! (`public.telegram_link_code()`) and sends `/start <code>` to the bot, by
//! typing it or through the deep link `https://t.me/<bot>?start=<code>`.
//! The chat the code arrives in is the one the trader proved they write in;
//! the database links it (`private.handle_telegram_update`,
//! `sql/70_telegram_link.sql`) and the bot answers in the chat. `/stop`
//! unlinks every trader linked to the chat.
//!
//! Why long polling (`getUpdates`) and not a webhook route:
//!
//! - The daemon already holds the bot token and talks to the Bot API; a
//!   webhook would need a public HTTPS address for Telegram to call (ingest
//!   has one, but not the token, and Telegram's retries and the secret
//!   header would become ingest's business on its hot path), plus a
//!   `setWebhook` step for operators. Long polling needs nothing inbound,
//!   so it works the same behind NAT, in Kubernetes and on the local stack.
//! - Telegram allows one `getUpdates` at a time per bot (a second one gets
//!   409), and capture scales out to many daemons. So one daemon holds a
//!   poller lease in the database (`private.claim_telegram_poller`),
//!   renewed before every poll; the others stand by and take over when it
//!   lapses (a crashed daemon) or is given back (a clean shutdown).
//! - The offset is kept in the database, not in memory: each update is
//!   acted on in the same transaction that records `update_id + 1` as the
//!   next offset, and an update below the stored offset is a duplicate. A
//!   daemon that dies after linking but before its next `getUpdates`
//!   confirmed the update gets it again, and the database says
//!   `duplicate`; a new poller (after a restart, or another daemon) starts
//!   from the stored offset. So each `/start` links once and is answered
//!   once, also across restarts.
//!
//! Only private chats are linked: a code sent in a group would point every
//! signal at everyone in it. Messages other than `/start` and `/stop` are
//! recorded as seen and get no answer. The bot's replies go through
//! [`Telegram::reply`] (retried on flood limits and 5xx); a reply that
//! cannot be delivered is logged, and the link stands (the dashboard shows
//! it).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::telegram::{CallError, Telegram};

/// How the poll loop paces itself.
#[derive(Clone, Copy, Debug)]
pub struct PollSettings {
    /// How long one `getUpdates` waits for updates (Telegram's `timeout`,
    /// whole seconds).
    pub long_poll: Duration,
    /// The poller lease; longer than a poll plus the replies it brings.
    pub lease: Duration,
    /// How often a daemon that does not hold the lease checks whether it
    /// lapsed.
    pub standby: Duration,
    /// Wait after a failed poll or database call.
    pub backoff: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            long_poll: Duration::from_secs(25),
            lease: Duration::from_mins(1),
            standby: Duration::from_secs(15),
            backoff: Duration::from_secs(5),
        }
    }
}

/// What a message asks of the bot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `/start`, with the text after it (the link code), if any.
    Start(Option<String>),
    /// `/stop`.
    Stop,
    /// Anything else.
    Other,
}

impl Command {
    /// Parses a message's text: `/start CODE`, `/start@SomeBot CODE`,
    /// `/stop`; anything else is [`Command::Other`].
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let name = word.split_once('@').map_or(word, |(name, _)| name);
        match name.to_ascii_lowercase().as_str() {
            "/start" => {
                let argument = rest.split_whitespace().next().map(str::to_owned);
                Self::Start(argument)
            }
            "/stop" => Self::Stop,
            _ => Self::Other,
        }
    }
}

/// One update from `getUpdates`, as far as linking cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub update_id: i64,
    /// The chat of the message, when the update is a message.
    pub chat: Option<Chat>,
    pub command: Command,
}

/// The chat a message was sent in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chat {
    pub id: i64,
    /// Telegram's chat type: `private`, `group`, `supergroup`, `channel`.
    pub private: bool,
}

impl Update {
    /// Reads one element of `getUpdates`' result; `None` without an
    /// `update_id` (not an update at all).
    pub fn from_json(update: &Value) -> Option<Self> {
        let update_id = update["update_id"].as_i64()?;
        let message = &update["message"];
        let chat = message["chat"]["id"].as_i64().map(|id| Chat {
            id,
            private: message["chat"]["type"] == "private",
        });
        let command = message["text"]
            .as_str()
            .map_or(Command::Other, Command::parse);
        Some(Self {
            update_id,
            chat,
            command,
        })
    }
}

/// What the database did with an update (`private.handle_telegram_update`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Linked,
    InvalidCode,
    ExpiredCode,
    NoCode,
    Unlinked,
    NotLinked,
    Ignored,
    Duplicate,
    NotPoller,
}

impl Outcome {
    fn parse(outcome: &str) -> Option<Self> {
        Some(match outcome {
            "linked" => Self::Linked,
            "invalid_code" => Self::InvalidCode,
            "expired_code" => Self::ExpiredCode,
            "no_code" => Self::NoCode,
            "unlinked" => Self::Unlinked,
            "not_linked" => Self::NotLinked,
            "ignored" => Self::Ignored,
            "duplicate" => Self::Duplicate,
            "not_poller" => Self::NotPoller,
            _ => return None,
        })
    }

    /// What the bot answers in the chat, if anything.
    pub fn reply(self) -> Option<&'static str> {
        Some(match self {
            Self::Linked => {
                "Linked: your signals and their screenshots will arrive in this chat. Send /stop to unlink it."
            }
            Self::InvalidCode => {
                "That code is not valid (each code works once). Get a new one in your dashboard and send /start with it."
            }
            Self::ExpiredCode => {
                "That code has expired (codes last 10 minutes). Get a new one in your dashboard and send /start with it."
            }
            Self::NoCode => {
                "To get your signals here, get a link code in your dashboard and send /start followed by the code (or open the link the dashboard shows)."
            }
            Self::Unlinked => {
                "Unlinked: no more signals in this chat. Link it again any time with a new code from your dashboard."
            }
            Self::NotLinked => "This chat is not linked to any account.",
            Self::Ignored | Self::Duplicate | Self::NotPoller => return None,
        })
    }
}

/// The reply to a command sent in a group or channel.
pub const PRIVATE_ONLY: &str =
    "I link private chats only: open a chat with me and send /start with your code there.";

/// A database or Bot API step of the loop failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no database connection available")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database query failed")]
    Query(#[from] tokio_postgres::Error),
    #[error("the database answered an unknown outcome {0:?}")]
    UnknownOutcome(String),
    #[error(transparent)]
    Telegram(#[from] CallError),
}

/// The bot's chat-linking loop for one daemon.
#[derive(Debug)]
pub struct LinkBot {
    telegram: Arc<Telegram>,
    pool: Pool,
    bot_id: i64,
    worker_id: String,
    settings: PollSettings,
}

impl LinkBot {
    /// `None` when the token does not name a bot (`<bot id>:<secret>`);
    /// the daemon's settings check refuses such a token first.
    pub fn new(
        telegram: Arc<Telegram>,
        pool: Pool,
        worker_id: String,
        settings: PollSettings,
    ) -> Option<Self> {
        let bot_id = telegram.bot_id()?;
        Some(Self {
            telegram,
            pool,
            bot_id,
            worker_id,
            settings,
        })
    }

    /// Polls for updates while this daemon holds the poller lease, stands
    /// by otherwise, until `stop`; then gives the lease back.
    pub async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let pause = match self.round(&stop).await {
                Ok(true) => Duration::ZERO,
                Ok(false) => self.settings.standby,
                Err(error) => {
                    tracing::warn!(error = %error, "Telegram linking: poll failed");
                    self.settings.backoff
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        if let Err(error) = self.release().await {
            tracing::warn!(error = %error, "Telegram linking: could not give the poller lease back");
        }
    }

    /// One round: take or renew the lease, poll once, act on what came.
    /// `false` when another daemon holds the lease.
    async fn round(&self, stop: &CancellationToken) -> Result<bool, LinkError> {
        let Some(offset) = self.claim().await? else {
            return Ok(false);
        };
        let poll = self.poll(offset);
        let updates = tokio::select! {
            () = stop.cancelled() => return Ok(true),
            updates = poll => updates?,
        };
        for update in updates {
            self.handle(&update).await?;
        }
        Ok(true)
    }

    /// The poller lease; `Some(offset)` while this daemon holds it.
    async fn claim(&self) -> Result<Option<i64>, LinkError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "select private.claim_telegram_poller($1, $2, make_interval(secs => $3))",
                &[
                    &self.bot_id,
                    &self.worker_id,
                    &self.settings.lease.as_secs_f64(),
                ],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn release(&self) -> Result<(), LinkError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "select private.release_telegram_poller($1, $2)",
                &[&self.bot_id, &self.worker_id],
            )
            .await?;
        Ok(())
    }

    /// One long poll from `offset`: the updates, parsed.
    async fn poll(&self, offset: i64) -> Result<Vec<Update>, LinkError> {
        let seconds = self.settings.long_poll.as_secs();
        let result = self
            .telegram
            .call(
                "getUpdates",
                &json!({
                    "offset": offset,
                    "timeout": seconds,
                    "allowed_updates": ["message"],
                }),
                // The HTTP request outlives the long poll it asks for.
                self.settings.long_poll + Duration::from_secs(10),
            )
            .await?;
        Ok(result
            .as_array()
            .map(|updates| updates.iter().filter_map(Update::from_json).collect())
            .unwrap_or_default())
    }

    /// Acts on one update in the database, then answers in its chat.
    async fn handle(&self, update: &Update) -> Result<(), LinkError> {
        let private = update.chat.as_ref().filter(|chat| chat.private);
        let (command, code) = match (&update.command, private) {
            (Command::Start(code), Some(_)) => (Some("start"), code.as_deref()),
            (Command::Stop, Some(_)) => (Some("stop"), None),
            _ => (None, None),
        };
        let chat_id = update.chat.as_ref().map(|chat| chat.id);
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "select private.handle_telegram_update($1, $2, $3, $4, $5, $6)",
                &[
                    &self.bot_id,
                    &self.worker_id,
                    &update.update_id,
                    &chat_id,
                    &command,
                    &code,
                ],
            )
            .await?;
        drop(client);
        let answer: String = row.get(0);
        let outcome =
            Outcome::parse(&answer).ok_or_else(|| LinkError::UnknownOutcome(answer.clone()))?;
        tracing::info!(update_id = update.update_id, outcome = %answer, "Telegram update");
        let reply = match (&update.command, &update.chat) {
            // A command in a group: say where to send it instead.
            (Command::Start(_) | Command::Stop, Some(chat))
                if !chat.private && outcome == Outcome::Ignored =>
            {
                Some((chat.id, PRIVATE_ONLY))
            }
            (_, Some(chat)) => outcome.reply().map(|text| (chat.id, text)),
            (_, None) => None,
        };
        if let Some((chat_id, text)) = reply
            && let Err(error) = self.telegram.reply(chat_id, text).await
        {
            tracing::warn!(error = %error, "Telegram linking: the reply was not delivered");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_as_telegram_sends_them() {
        assert_eq!(
            Command::parse("/start AbC-12_xyz"),
            Command::Start(Some("AbC-12_xyz".into()))
        );
        assert_eq!(
            Command::parse("/start@SignalCaptureBot  AbC  trailing"),
            Command::Start(Some("AbC".into()))
        );
        assert_eq!(Command::parse("/start"), Command::Start(None));
        assert_eq!(Command::parse(" /STOP "), Command::Stop);
        assert_eq!(Command::parse("/stop@SignalCaptureBot"), Command::Stop);
        assert_eq!(Command::parse("hello"), Command::Other);
        assert_eq!(Command::parse("/starter x"), Command::Other);
        assert_eq!(Command::parse(""), Command::Other);
    }

    #[test]
    fn updates_are_read_leniently() {
        let update = Update::from_json(&json!({
            "update_id": 7,
            "message": {
                "message_id": 3,
                "from": { "id": 111, "is_bot": false, "first_name": "Ana" },
                "chat": { "id": 111, "first_name": "Ana", "type": "private" },
                "date": 1_700_000_000,
                "text": "/start code1",
                "entities": [{ "offset": 0, "length": 6, "type": "bot_command" }],
            },
        }))
        .expect("an update");
        assert_eq!(
            update,
            Update {
                update_id: 7,
                chat: Some(Chat {
                    id: 111,
                    private: true
                }),
                command: Command::Start(Some("code1".into())),
            }
        );
        let group = Update::from_json(&json!({
            "update_id": 8,
            "message": { "chat": { "id": -100_123, "type": "supergroup" }, "text": "/stop" },
        }))
        .expect("an update");
        assert_eq!(
            group.chat,
            Some(Chat {
                id: -100_123,
                private: false
            })
        );
        let edited =
            Update::from_json(&json!({ "update_id": 9, "edited_message": {} })).expect("an update");
        assert_eq!((edited.chat, edited.command), (None, Command::Other));
        assert_eq!(Update::from_json(&json!({ "message": {} })), None);
    }

    #[test]
    fn every_database_outcome_is_known_and_only_actions_are_answered() {
        for (name, answered) in [
            ("linked", true),
            ("invalid_code", true),
            ("expired_code", true),
            ("no_code", true),
            ("unlinked", true),
            ("not_linked", true),
            ("ignored", false),
            ("duplicate", false),
            ("not_poller", false),
        ] {
            let outcome = Outcome::parse(name).expect(name);
            assert_eq!(outcome.reply().is_some(), answered, "{name}");
        }
        assert_eq!(Outcome::parse("linked "), None);
    }
}

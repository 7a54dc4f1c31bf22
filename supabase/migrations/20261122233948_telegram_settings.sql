-- Telegram notification settings on user_config, validated where they are stored, so the capture
-- daemon can send to whatever it finds there.
--
-- What this migration guarantees:
--   * telegram_chat_id is a chat the Bot API's sendMessage/sendPhoto accept as `chat_id`: either a
--     numeric id (a user's positive id, a group's negative id, a supergroup's or channel's
--     -100... id; never 0, no leading zeros, at most 16 digits: Telegram ids fit in 52 bits) or a
--     public channel's @username (5 to 32 characters of letters, digits and underscores, starting
--     with a letter and not ending with an underscore).
--   * notify_telegram can be on only with a chat to send to; notify_on_failure (on by default)
--     says whether a failed capture is reported too.
--   * Rows the earlier, looser check let through can never have received a message (Telegram has no
--     such chats), so their chat id is cleared and notifications turned off, rather than letting
--     the new checks fail this migration on a live project.

update public.user_config
   set telegram_chat_id = null, notify_telegram = false
 where telegram_chat_id !~ '^(-?[1-9][0-9]{0,15}|@[A-Za-z][A-Za-z0-9_]{3,30}[A-Za-z0-9])$';
update public.user_config
   set notify_telegram = false
 where notify_telegram and telegram_chat_id is null;

alter table public.user_config drop constraint user_config_telegram_chat_id_check;
alter table public.user_config add constraint user_config_telegram_chat_id_check
  check (telegram_chat_id ~ '^(-?[1-9][0-9]{0,15}|@[A-Za-z][A-Za-z0-9_]{3,30}[A-Za-z0-9])$');
alter table public.user_config add constraint user_config_telegram_needs_chat_check
  check (not notify_telegram or telegram_chat_id is not null);

comment on column public.user_config.notify_telegram is
  'Send each completed capture (signal and screenshot) to telegram_chat_id. Needs a chat id.';
comment on column public.user_config.telegram_chat_id is
  'Telegram chat for notifications: a numeric chat id (negative for groups and channels) or a public channel''s @username.';
comment on column public.user_config.notify_on_failure is
  'With notify_telegram: also report captures that failed, with the reason.';

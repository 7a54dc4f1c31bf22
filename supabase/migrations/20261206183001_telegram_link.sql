-- Telegram chats linked by proof: what the tables hold for it.
--
-- What this migration guarantees:
--   * A trader's Telegram chat is one the trader proved they can write in: it is set only when the
--     bot receives `/start <code>` in that chat, with a code the trader got from
--     public.telegram_link_code() (sql/70_telegram_link.sql). telegram_linked_at records when; a
--     chat id without it (or the reverse) is refused by a check, so no unproven chat can be stored.
--   * Chat ids set before this migration were typed by the trader, not proven: any chat the bot
--     reaches could have been named (another user's, the operator's group). They are cleared here
--     and notify_telegram goes off with them; the trader links their chat again through the bot.
--     Nothing is sent to the old chats, not even a notice: that would be the very message they
--     never asked for.
--   * Link codes are kept only as SHA-256 hashes, one pending code per trader, in `private` (no
--     client reads it); the code's expiry is on the trader's row for the dashboard to show.
--   * The bot's getUpdates offset and which daemon polls Telegram (a lease: Telegram allows one
--     long poll per bot) are kept per bot, so a restart or another daemon resumes where the last
--     one stopped and an update is acted on once.

alter table public.user_config
  add column telegram_linked_at timestamptz,
  add column telegram_link_code_expires_at timestamptz;

update public.user_config
   set notify_telegram = false,
       telegram_chat_id = null
 where telegram_chat_id is not null or notify_telegram;

alter table public.user_config
  add constraint user_config_telegram_chat_linked_check
    check ((telegram_chat_id is null) = (telegram_linked_at is null));

comment on column public.user_config.telegram_chat_id is
  'The Telegram chat notifications go to: the private chat in which the bot received /start with the trader''s link code. Set only by the bot; cleared by unlink_telegram() or /stop.';
comment on column public.user_config.telegram_linked_at is
  'When the bot linked telegram_chat_id (null: no chat). Setting it to null unlinks the chat.';
comment on column public.user_config.telegram_link_code_expires_at is
  'Until when the code from telegram_link_code() is valid (null: no pending code).';

-- /stop finds every trader linked to the chat it was sent in.
create index user_config_telegram_chat_idx on public.user_config (telegram_chat_id)
  where telegram_chat_id is not null;

create table private.telegram_link_codes (
  user_id uuid primary key references public.user_config (user_id) on delete cascade,
  code_hash bytea not null unique check (octet_length(code_hash) = 32),
  created_at timestamptz not null default now()
);
comment on table private.telegram_link_codes is
  'The pending Telegram link code of each trader, as its SHA-256 hash (single use; expiry on user_config).';

create table private.telegram_bots (
  bot_id bigint primary key check (bot_id > 0),
  next_update_id bigint not null default 0 check (next_update_id >= 0),
  poller text check (length(poller) between 1 and 200),
  poller_lease_until timestamptz
);
comment on table private.telegram_bots is
  'Per bot: the next getUpdates offset, and the capture daemon that holds the long poll (under a lease).';

-- Telegram chats linked by proof: the trader asks the dashboard for a code, sends `/start <code>` to
-- the bot, and the capture daemon (which long-polls the bot's updates) links the chat the code
-- arrived in. A typed chat id would let a trader point the bot at any chat it can reach; a code
-- that only the signed-in trader sees, arriving in a chat, proves that the trader writes there.
--
-- What this file guarantees:
--   * public.telegram_link_code() (the signed-in trader, for themselves) returns a fresh code: 16
--     URL-safe characters (96 random bits, so it can ride in a t.me deep link), valid for 10
--     minutes, single use. Only its SHA-256 hash is stored; a new code replaces the pending one.
--   * telegram_chat_id and telegram_linked_at change only in two ways: the bot links a chat
--     (private.handle_telegram_update, with a valid code), or the chat is unlinked (the trader's
--     unlink_telegram() or a write of null to telegram_linked_at, the bot's /stop), which also turns
--     notify_telegram off. Anything else is refused with 42501, whoever the caller; the trader has no
--     UPDATE grant on telegram_chat_id at all (rls-policies/20_user_config.sql).
--   * Both trader functions run as the caller (SECURITY INVOKER): RLS scopes them to the trader's
--     row, and the trigger below does the privileged part (writing the hash into `private`). So, as
--     with rotate_webhook_token(), no SECURITY DEFINER function is executable by anon or
--     authenticated; the code's value is generated in the trigger, never chosen by the caller.
--   * private.handle_telegram_update acts on each Telegram update once: only the daemon holding the
--     bot's poller lease may act, and an update_id below the stored offset is a duplicate
--     (Telegram re-sends updates until getUpdates confirms them; a daemon may die in between).
--     Recording the new offset and linking commit together. Service role only.

create or replace function private.new_telegram_link_code()
returns text
language sql
volatile
set search_path = ''
as $$
  select translate(encode(extensions.gen_random_bytes(12), 'base64'), '+/', '-_');
$$;
comment on function private.new_telegram_link_code() is '96 random bits, URL-safe base64 (16 chars).';
revoke all on function private.new_telegram_link_code() from public, anon, authenticated, service_role;

create or replace function private.telegram_link_code_hash(p_code text)
returns bytea
language sql
immutable
set search_path = ''
as $$
  select extensions.digest(convert_to(p_code, 'UTF8'), 'sha256');
$$;
revoke all on function private.telegram_link_code_hash(text) from public, anon, authenticated, service_role;

-- The guard: what may change the Telegram columns. SECURITY DEFINER so it can write the code's hash
-- into private.telegram_link_codes, which no client role may touch; a trigger function cannot be
-- called directly.
create or replace function private.guard_telegram_link()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_code text;
begin
  -- A link code: issued only inside telegram_link_code() (which sets the flag); cleared (null) when
  -- it is used, cancelled by the trader, or replaced.
  if new.telegram_link_code_expires_at is distinct from old.telegram_link_code_expires_at then
    if coalesce(current_setting('signal_capture.telegram_link_code', true), '') = 'issue' then
      v_code := private.new_telegram_link_code();
      insert into private.telegram_link_codes (user_id, code_hash)
      values (new.user_id, private.telegram_link_code_hash(v_code))
      on conflict (user_id) do update set code_hash = excluded.code_hash, created_at = now();
      new.telegram_link_code_expires_at := now() + interval '10 minutes';
      -- Handed back to telegram_link_code() in this transaction only.
      perform set_config('signal_capture.telegram_link_code', v_code, true);
    elsif new.telegram_link_code_expires_at is null then
      delete from private.telegram_link_codes where user_id = new.user_id;
    else
      raise exception 'telegram_link_code_expires_at cannot be set directly: call telegram_link_code()'
        using errcode = '42501';
    end if;
  end if;

  -- The chat: linked only by the bot with a valid code (it sets the flag); unlinking (either column
  -- to null) is always allowed and takes the other column and notify_telegram with it. Writing any
  -- other value to either column (a chat, a link time, even beside a null) is refused.
  if (new.telegram_chat_id, new.telegram_linked_at) is distinct from (old.telegram_chat_id, old.telegram_linked_at) then
    if coalesce(current_setting('signal_capture.telegram_chat', true), '') = 'link' then
      null;
    elsif (new.telegram_chat_id is null or new.telegram_chat_id is not distinct from old.telegram_chat_id)
      and (new.telegram_linked_at is null or new.telegram_linked_at is not distinct from old.telegram_linked_at) then
      new.telegram_chat_id := null;
      new.telegram_linked_at := null;
      new.notify_telegram := false;
    else
      raise exception 'a Telegram chat is linked only by sending /start with a code from telegram_link_code() to the bot'
        using errcode = '42501';
    end if;
  end if;
  return new;
end;
$$;
comment on function private.guard_telegram_link() is
  'Trigger on user_config: link codes only through telegram_link_code(), chats only through the bot; unlinking always.';
revoke all on function private.guard_telegram_link() from public, anon, authenticated, service_role;

-- Only on writes naming these columns: ingest_signal updates every trader's quota counters on each
-- signal, and must not pay for this check.
create or replace trigger guard_telegram_link
  before update of telegram_chat_id, telegram_linked_at, telegram_link_code_expires_at on public.user_config
  for each row execute function private.guard_telegram_link();

-- The dashboard's "link Telegram" button: a code to send to the bot as `/start <code>` (or in the
-- deep link https://t.me/<bot>?start=<code>).
create or replace function public.telegram_link_code()
returns table (code text, expires_at timestamptz)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_expires timestamptz;
  v_code text;
begin
  if (select auth.uid()) is null then
    raise exception 'sign in to link a Telegram chat' using errcode = '42501';
  end if;
  perform set_config('signal_capture.telegram_link_code', 'issue', true);
  update public.user_config
     set telegram_link_code_expires_at = now()
   where user_id = (select auth.uid())
  returning telegram_link_code_expires_at into v_expires;
  v_code := current_setting('signal_capture.telegram_link_code', true);
  perform set_config('signal_capture.telegram_link_code', '', true);
  if v_expires is null then
    raise exception 'no settings row for this user' using errcode = 'P0002';
  end if;
  return query select v_code, v_expires;
end;
$$;
comment on function public.telegram_link_code() is
  'A fresh single-use code (valid 10 minutes) that links the Telegram chat it is sent from (/start <code>) to the signed-in trader.';
revoke all on function public.telegram_link_code() from public, anon, authenticated, service_role;
grant execute on function public.telegram_link_code() to authenticated;

create or replace function public.unlink_telegram()
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  if (select auth.uid()) is null then
    raise exception 'sign in to unlink your Telegram chat' using errcode = '42501';
  end if;
  update public.user_config
     set telegram_linked_at = null
   where user_id = (select auth.uid())
     and telegram_linked_at is not null;
  return found;
end;
$$;
comment on function public.unlink_telegram() is
  'Forgets the signed-in trader''s Telegram chat (notifications off); false when none was linked.';
revoke all on function public.unlink_telegram() from public, anon, authenticated, service_role;
grant execute on function public.unlink_telegram() to authenticated;

-- The daemon's side. Telegram allows one getUpdates long poll per bot, so among several daemons
-- one holds the poller lease; the others stand by and take over when it lapses.
--
-- claim_telegram_poller: takes or renews the lease; returns the offset to poll from, or null while
-- another daemon holds it.
create or replace function private.claim_telegram_poller(p_bot_id bigint, p_worker text, p_lease interval)
returns bigint
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  v_next bigint;
begin
  insert into private.telegram_bots (bot_id) values (p_bot_id) on conflict (bot_id) do nothing;
  update private.telegram_bots
     set poller = p_worker,
         poller_lease_until = now() + p_lease
   where bot_id = p_bot_id
     and (poller is null or poller = p_worker or poller_lease_until < now())
  returning next_update_id into v_next;
  return v_next;
end;
$$;
revoke all on function private.claim_telegram_poller(bigint, text, interval) from public, anon, authenticated, service_role;
grant execute on function private.claim_telegram_poller(bigint, text, interval) to service_role;

-- release_telegram_poller: a daemon shutting down lets another take over at once.
create or replace function private.release_telegram_poller(p_bot_id bigint, p_worker text)
returns void
language sql
volatile
security definer
set search_path = ''
as $$
  update private.telegram_bots
     set poller = null, poller_lease_until = null
   where bot_id = p_bot_id and poller = p_worker;
$$;
revoke all on function private.release_telegram_poller(bigint, text) from public, anon, authenticated, service_role;
grant execute on function private.release_telegram_poller(bigint, text) to service_role;

-- handle_telegram_update: one update from the bot's private chat with p_chat_id. p_command is
-- 'start' (p_code: its argument, may be null), 'stop', or null for anything else (the update is
-- only recorded as seen). Returns what happened, for the daemon's reply:
--   'linked', 'invalid_code' (unknown or used), 'expired_code', 'no_code', 'unlinked',
--   'not_linked', 'ignored', 'duplicate' (seen before: do nothing), 'not_poller' (this daemon lost
--   the lease: do nothing; the new poller gets the update again).
create or replace function private.handle_telegram_update(
  p_bot_id bigint,
  p_worker text,
  p_update_id bigint,
  p_chat_id bigint,
  p_command text,
  p_code text
)
returns text
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  v_next bigint;
  v_user uuid;
  v_expires timestamptz;
  v_count integer;
begin
  select b.next_update_id into v_next
    from private.telegram_bots b
   where b.bot_id = p_bot_id and b.poller = p_worker
     for update;
  if not found then
    return 'not_poller';
  end if;
  if p_update_id < v_next then
    return 'duplicate';
  end if;
  update private.telegram_bots set next_update_id = p_update_id + 1 where bot_id = p_bot_id;

  if p_command = 'start' then
    if p_code is null or p_code = '' then
      return 'no_code';
    end if;
    select c.user_id, u.telegram_link_code_expires_at into v_user, v_expires
      from private.telegram_link_codes c
      join public.user_config u on u.user_id = c.user_id
     where c.code_hash = private.telegram_link_code_hash(p_code)
       for update of u;
    if not found or v_expires is null then
      return 'invalid_code';
    end if;
    if v_expires <= now() then
      return 'expired_code';
    end if;
    perform set_config('signal_capture.telegram_chat', 'link', true);
    update public.user_config
       set telegram_chat_id = p_chat_id::text,
           telegram_linked_at = now(),
           notify_telegram = true,
           telegram_link_code_expires_at = null
     where user_id = v_user;
    perform set_config('signal_capture.telegram_chat', '', true);
    return 'linked';
  elsif p_command = 'stop' then
    update public.user_config
       set telegram_linked_at = null
     where telegram_chat_id = p_chat_id::text;
    get diagnostics v_count = row_count;
    return case when v_count > 0 then 'unlinked' else 'not_linked' end;
  end if;
  return 'ignored';
end;
$$;
comment on function private.handle_telegram_update(bigint, text, bigint, bigint, text, text) is
  'Acts once on one Telegram update for the daemon holding the bot''s poller lease: /start <code> links the chat, /stop unlinks it. Service role only.';
revoke all on function private.handle_telegram_update(bigint, text, bigint, bigint, text, text) from public, anon, authenticated, service_role;
grant execute on function private.handle_telegram_update(bigint, text, bigint, bigint, text, text) to service_role;

-- Tables in private are reached through the functions above only.
revoke all on table private.telegram_link_codes, private.telegram_bots from public, anon, authenticated, service_role;

-- user_config logic: every auth user gets a config row with a fresh webhook token; the token changes
-- only through rotate_webhook_token(), and only to a fresh random value.
--
-- Guarantees:
--   * private.new_webhook_token(): 32 random bytes (256 bits) from pgcrypto, URL-safe base64 without
--     padding: 43 characters of [A-Za-z0-9_-].
--   * A new row in auth.users gets its public.user_config row in the same transaction.
--   * Any change of user_config.webhook_token outside rotate_webhook_token() is refused (42501), and
--     even inside it the new value is generated here, never chosen by the caller. The old token stops
--     working at commit: ingest_signal looks tokens up in this table only.
--   * updated_at follows every change the trader makes.
--   * set_tradingview_session(user, sealed) is the one way a trader's TradingView session is stored
--     (reseal_tradingview_session only moves a stored one to another key)
--     or forgotten (ingest's session endpoint, on both of its database paths; capture's operator
--     commands): only a value in cookie-seal's format is stored, never plaintext; storing marks the
--     session valid and not yet checked (cookies_checked_at null), forgetting (null) marks it
--     invalid. Service role only.

create or replace function private.new_webhook_token()
returns text
language sql
volatile
set search_path = ''
as $$
  select translate(encode(extensions.gen_random_bytes(32), 'base64'), '+/=', '-_');
$$;
comment on function private.new_webhook_token() is '256 random bits, URL-safe base64 (43 chars).';
revoke all on function private.new_webhook_token() from public, anon, authenticated, service_role;

create or replace function private.handle_new_auth_user()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.user_config (user_id, webhook_token)
  values (new.id, private.new_webhook_token())
  on conflict (user_id) do nothing;
  return new;
end;
$$;
comment on function private.handle_new_auth_user() is 'Trigger on auth.users: creates the user''s user_config row with a fresh webhook token.';
revoke all on function private.handle_new_auth_user() from public, anon, authenticated, service_role;

create or replace trigger on_auth_user_created
  after insert on auth.users
  for each row execute function private.handle_new_auth_user();

create or replace function private.guard_user_config_update()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.webhook_token is distinct from old.webhook_token then
    if coalesce(current_setting('signal_capture.rotating_token', true), '') <> 'on' then
      raise exception 'webhook_token cannot be set directly: call rotate_webhook_token()'
        using errcode = '42501';
    end if;
    new.webhook_token := private.new_webhook_token();
    new.webhook_token_rotated_at := now();
  end if;
  -- Quota counters churn on every signal; only what the trader or an operator changes moves updated_at.
  if (new.webhook_token, new.webhook_enabled, new.default_chart_id, new.tradingview_cookies_sealed,
      new.cookies_valid, new.plan, new.screenshot_resolution, new.chart_theme, new.notify_telegram,
      new.telegram_chat_id, new.notify_on_failure)
     is distinct from
     (old.webhook_token, old.webhook_enabled, old.default_chart_id, old.tradingview_cookies_sealed,
      old.cookies_valid, old.plan, old.screenshot_resolution, old.chart_theme, old.notify_telegram,
      old.telegram_chat_id, old.notify_on_failure) then
    new.updated_at := now();
  end if;
  return new;
end;
$$;
comment on function private.guard_user_config_update() is 'Trigger on user_config: the token only rotates to a generated value; updated_at follows setting changes.';
revoke all on function private.guard_user_config_update() from public, anon, authenticated, service_role;

create or replace trigger guard_user_config_update
  before update on public.user_config
  for each row execute function private.guard_user_config_update();

-- Security invoker on purpose: it runs as the signed-in trader, so RLS limits it to their own row,
-- and the guard trigger above generates the new token.
create or replace function public.rotate_webhook_token()
returns text
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_token text;
begin
  if (select auth.uid()) is null then
    raise exception 'sign in to rotate your webhook token' using errcode = '42501';
  end if;
  perform set_config('signal_capture.rotating_token', 'on', true);
  update public.user_config
     set webhook_token = ''
   where user_id = (select auth.uid())
  returning webhook_token into v_token;
  perform set_config('signal_capture.rotating_token', 'off', true);
  if v_token is null then
    raise exception 'no webhook configuration for this user' using errcode = 'P0002';
  end if;
  return v_token;
end;
$$;
comment on function public.rotate_webhook_token() is 'Replaces the signed-in trader''s webhook token with a fresh random one and returns it; the old token stops working at once.';
revoke all on function public.rotate_webhook_token() from public, anon, authenticated, service_role;
grant execute on function public.rotate_webhook_token() to authenticated;

create or replace function private.touch_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end;
$$;
revoke all on function private.touch_updated_at() from public, anon, authenticated, service_role;

create or replace trigger touch_signals_updated_at
  before update on public.signals
  for each row execute function private.touch_updated_at();

-- The sealed TradingView session. The database never sees the plaintext and cannot open the value;
-- it checks only the envelope cookie-seal writes (format version 1, a key id of 1-32 bytes, a
-- 24-byte nonce and at least the 16-byte tag), so a caller that passes plaintext by mistake gets an
-- error instead of storing it.
create or replace function private.require_sealed_session(p_sealed bytea)
returns void
language plpgsql
immutable
set search_path = ''
as $$
declare
  v_envelope boolean;
begin
  -- CASE, not OR: its branches are evaluated in order, so get_byte never reads past a short value.
  -- (Assigned first: PL/pgSQL would end an IF's condition at the CASE's first THEN.)
  v_envelope := case
    when p_sealed is null or octet_length(p_sealed) < 1 + 1 + 1 + 24 + 16 then false
    else get_byte(p_sealed, 0) = 1
         and get_byte(p_sealed, 1) between 1 and 32
         and octet_length(p_sealed) >= 1 + 1 + get_byte(p_sealed, 1) + 24 + 16
  end;
  if not v_envelope then
    raise exception 'not a sealed TradingView session (cookie-seal format 1)'
      using errcode = '22023';
  end if;
end;
$$;
revoke all on function private.require_sealed_session(bytea) from public, anon, authenticated, service_role;
grant execute on function private.require_sealed_session(bytea) to service_role;

-- The writers of that session, both security invoker on purpose: they grant nothing the caller
-- lacks. The service role (PostgREST) and Supabase's postgres role (the direct pool) may update
-- user_config and bypass RLS; any other role either cannot call them or is refused by the table's
-- grants.
--
-- set_tradingview_session stores a new session (valid from now) or, with null, forgets it. ingest's
-- PUT/DELETE /v1/tradingview-session and `capture set-session` call it.
create or replace function public.set_tradingview_session(p_user_id uuid, p_sealed bytea)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  if p_sealed is not null then
    perform private.require_sealed_session(p_sealed);
  end if;
  update public.user_config
     set tradingview_cookies_sealed = p_sealed,
         cookies_valid = p_sealed is not null,
         cookies_updated_at = now(),
         cookies_checked_at = null
   where user_id = p_user_id;
  return found;
end;
$$;
comment on function public.set_tradingview_session(uuid, bytea) is
  'Stores the trader''s sealed TradingView session (valid) or, with null, forgets it (invalid); false when the user has no config row. Service role only.';
revoke all on function public.set_tradingview_session(uuid, bytea) from public, anon, authenticated, service_role;
grant execute on function public.set_tradingview_session(uuid, bytea) to service_role;

-- reseal_tradingview_session moves one stored session to another key (`capture reseal-cookies`):
-- the same session sealed anew, so its validity and cookies_updated_at stay as they are, and only
-- while the row still holds p_old: a trader who stored a new session meanwhile is never overwritten.
create or replace function public.reseal_tradingview_session(p_user_id uuid, p_old bytea, p_new bytea)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  perform private.require_sealed_session(p_new);
  update public.user_config
     set tradingview_cookies_sealed = p_new
   where user_id = p_user_id
     and tradingview_cookies_sealed = p_old;
  return found;
end;
$$;
comment on function public.reseal_tradingview_session(uuid, bytea, bytea) is
  'Replaces the trader''s sealed session p_old by p_new (the same session under another key) if it is still stored; validity unchanged. Service role only.';
revoke all on function public.reseal_tradingview_session(uuid, bytea, bytea) from public, anon, authenticated, service_role;
grant execute on function public.reseal_tradingview_session(uuid, bytea, bytea) to service_role;

-- TradingView sessions checked before they fail, and the trader told when one expires.
--
-- What this file guarantees:
--   * Every stored, valid session has a row in private.tradingview_session_checks (a trigger on
--     user_config keeps it, whoever writes the session): due now when a session is stored or
--     becomes valid again, 'infinity' once it expired (the trader must store a new one; checking a
--     dead session again would only cost requests), gone when the session is forgotten. Re-sealing
--     under another key keeps the schedule.
--   * claim_session_checks(n, interval) hands out at most n due, valid sessions and moves each one's
--     due_at to now() + interval in the same statement (FOR UPDATE SKIP LOCKED): however many
--     daemons or `capture check-sessions` runs share the database, a session is claimed at most once
--     per interval.
--   * expire_tradingview_session(user, sealed) marks the session invalid only while the row still
--     holds that sealed value and it is still valid, so a session stored meanwhile is never marked,
--     and the trader gets exactly one notice (public.trader_notices) per expiry; it returns whether
--     this call was the one that expired it, so the caller sends the Telegram message once.
--   * record_session_check(user, sealed, signed_in) records a check's result the same way.
--   * tradingview_session_counts() gives the capture_tradingview_sessions gauge: stored sessions
--     that are valid (checked), expired, or unchecked (valid as stored, never checked since).
-- All are service role only; the trigger function runs as its owner.

create or replace function private.schedule_tradingview_session_check()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.tradingview_cookies_sealed is null then
    delete from private.tradingview_session_checks where user_id = new.user_id;
  elsif not new.cookies_valid then
    update private.tradingview_session_checks set due_at = 'infinity' where user_id = new.user_id;
  elsif tg_op = 'INSERT'
     or old.tradingview_cookies_sealed is null
     or not old.cookies_valid
     or new.cookies_updated_at is distinct from old.cookies_updated_at then
    -- A session stored (or made valid again): check it soon.
    insert into private.tradingview_session_checks (user_id, due_at)
    values (new.user_id, now())
    on conflict (user_id) do update set due_at = excluded.due_at;
  end if;
  return null;
end;
$$;
comment on function private.schedule_tradingview_session_check() is
  'Trigger on user_config: keeps the stored session''s check schedule (due now when stored, infinity when expired, gone when forgotten).';
revoke all on function private.schedule_tradingview_session_check() from public, anon, authenticated, service_role;

create or replace trigger schedule_tradingview_session_check
  after insert or update of tradingview_cookies_sealed, cookies_valid, cookies_updated_at on public.user_config
  for each row execute function private.schedule_tradingview_session_check();

create or replace function private.claim_session_checks(p_limit integer, p_interval interval)
returns table (user_id uuid, tradingview_cookies_sealed bytea)
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  if p_limit is null or p_limit not between 1 and 1000 then
    raise exception 'claim_session_checks: limit must be between 1 and 1000' using errcode = '22023';
  end if;
  if p_interval is null or p_interval < interval '1 second' then
    raise exception 'claim_session_checks: interval must be at least 1 second' using errcode = '22023';
  end if;
  return query
  with due as materialized (
    select c.user_id
      from private.tradingview_session_checks c
     where c.due_at <= now()
     order by c.due_at
     limit p_limit
       for update skip locked
  ), claimed as (
    update private.tradingview_session_checks c
       set due_at = now() + p_interval
      from due
     where c.user_id = due.user_id
    returning c.user_id
  )
  select u.user_id, u.tradingview_cookies_sealed
    from claimed c
    join public.user_config u on u.user_id = c.user_id
   where u.cookies_valid and u.tradingview_cookies_sealed is not null;
end;
$$;
comment on function private.claim_session_checks(integer, interval) is
  'Claims up to p_limit stored sessions due for a check and schedules each one''s next check p_interval ahead. Service role only.';

create or replace function private.expire_tradingview_session(p_user_id uuid, p_sealed bytea)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  update public.user_config
     set cookies_valid = false, cookies_checked_at = now()
   where user_id = p_user_id
     and tradingview_cookies_sealed = p_sealed
     and cookies_valid;
  if not found then
    return false;
  end if;
  insert into public.trader_notices (user_id, kind, message)
  values (p_user_id, 'tradingview_session_expired',
          'Your TradingView session has expired or was signed out. Paste fresh sessionid and '
          || 'sessionid_sign cookies in your settings to get chart screenshots again.');
  return true;
end;
$$;
comment on function private.expire_tradingview_session(uuid, bytea) is
  'Marks the stored session invalid and leaves the trader a notice, if it is still that session and valid; true when this call expired it. Service role only.';

create or replace function private.record_session_check(p_user_id uuid, p_sealed bytea, p_signed_in boolean)
returns text
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  if p_signed_in is null then
    raise exception 'record_session_check: signed_in must be true or false' using errcode = '22023';
  end if;
  if not p_signed_in then
    return case when private.expire_tradingview_session(p_user_id, p_sealed) then 'expired' else 'stale' end;
  end if;
  update public.user_config
     set cookies_checked_at = now()
   where user_id = p_user_id
     and tradingview_cookies_sealed = p_sealed
     and cookies_valid;
  return case when found then 'valid' else 'stale' end;
end;
$$;
comment on function private.record_session_check(uuid, bytea, boolean) is
  'Records a session check: ''valid'', ''expired'' (this call expired it and left a notice) or ''stale'' (the session changed meanwhile). Service role only.';

create or replace function private.session_expiry_chat(p_user_id uuid)
returns text
language sql
stable
security definer
set search_path = ''
as $$
  select u.telegram_chat_id
    from public.user_config u
   where u.user_id = p_user_id and u.notify_telegram and u.telegram_chat_id is not null;
$$;
comment on function private.session_expiry_chat(uuid) is
  'The Telegram chat to tell about an expired session, if the trader switched notifications on. Service role only.';

create or replace function private.tradingview_session_counts()
returns table (valid bigint, expired bigint, unchecked bigint)
language sql
stable
security definer
set search_path = ''
as $$
  select count(*) filter (where u.cookies_valid and u.cookies_checked_at is not null),
         count(*) filter (where not u.cookies_valid),
         count(*) filter (where u.cookies_valid and u.cookies_checked_at is null)
    from public.user_config u
   where u.tradingview_cookies_sealed is not null;
$$;
comment on function private.tradingview_session_counts() is
  'Stored TradingView sessions by state, for the capture_tradingview_sessions gauge. Service role only.';

do $$
declare
  f text;
begin
  foreach f in array array[
    'private.claim_session_checks(integer, interval)',
    'private.expire_tradingview_session(uuid, bytea)',
    'private.record_session_check(uuid, bytea, boolean)',
    'private.session_expiry_chat(uuid)',
    'private.tradingview_session_counts()'
  ] loop
    execute format('revoke all on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end;
$$;

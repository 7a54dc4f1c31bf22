-- Telegram notifications: what the capture daemon needs to tell a trader about one signal, and
-- whether it should at all.
--
-- What this file guarantees:
--   * signal_notification(signal) returns one row only when the signal's owner has switched
--     notify_telegram on (which the table's check ties to a valid chat id); otherwise none, so the
--     daemon never guesses from stale settings it cached.
--   * The row carries exactly what the message shows (ticker, direction, price, indicator, the
--     alert's time) and the owner's notify_on_failure choice. Service role only.

create or replace function private.signal_notification(p_signal_id uuid)
returns table (
  chat_id text,
  notify_on_failure boolean,
  ticker text,
  direction text,
  price numeric,
  indicator_name text,
  signal_time timestamptz
)
language sql
stable
security definer
set search_path = ''
as $$
  select u.telegram_chat_id, u.notify_on_failure, s.ticker, s.direction, s.price, s.indicator_name, s."timestamp"
    from public.signals s
    join public.user_config u on u.user_id = s.user_id
   where s.id = p_signal_id
     and u.notify_telegram
     and u.telegram_chat_id is not null;
$$;
comment on function private.signal_notification(uuid) is
  'What a Telegram notification about the signal shows, if its owner wants one. Service role only.';

revoke all on function private.signal_notification(uuid) from public, anon, authenticated, service_role;
grant execute on function private.signal_notification(uuid) to service_role;

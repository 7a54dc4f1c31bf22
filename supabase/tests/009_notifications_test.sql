-- Telegram notifications: a row only for owners who asked, with what the message shows.
begin;
set local search_path = extensions, public;
select plan(6);

insert into auth.users (id, aud, role, email)
values ('aaaaaaaa-0000-0000-0000-00000000ff01', 'authenticated', 'authenticated', 'notify-on@example.test'),
       ('aaaaaaaa-0000-0000-0000-00000000ff02', 'authenticated', 'authenticated', 'notify-off@example.test');
-- Chats as the bot links them (sql/70_telegram_link.sql; the codes are tested in 011).
do $$
begin
  perform set_config('signal_capture.telegram_chat', 'link', true);
  update public.user_config set notify_telegram = true, telegram_chat_id = '-1001234567890',
                                telegram_linked_at = now(), notify_on_failure = false
   where user_id = 'aaaaaaaa-0000-0000-0000-00000000ff01';
  update public.user_config set notify_telegram = false, telegram_chat_id = '12345', telegram_linked_at = now()
   where user_id = 'aaaaaaaa-0000-0000-0000-00000000ff02';
  perform set_config('signal_capture.telegram_chat', '', true);
end;
$$;

create function pg_temp.ingest(p_user uuid, p_body text) returns uuid language sql as $$
  select (public.ingest_signal((select webhook_token from public.user_config where user_id = p_user),
                               '2026-11-22 10:00:00+00', p_body, null, 'BINANCE:BTCUSDT', 'BINANCE', 'BTCUSDT',
                               67890.5, 'short', 'alert', '1h', 'Trend Pro') ->> 'signal_id')::uuid
$$;
create temp table s on commit drop as
  select pg_temp.ingest('aaaaaaaa-0000-0000-0000-00000000ff01', 'on') as on_id,
         pg_temp.ingest('aaaaaaaa-0000-0000-0000-00000000ff02', 'off') as off_id;

select is((select count(*)::int from private.signal_notification((select on_id from s))), 1,
  'an owner with notifications on gets one');
select row_eq($$ select chat_id, notify_on_failure, ticker, direction, price, indicator_name
                  from private.signal_notification((select on_id from s)) $$,
  row('-1001234567890'::text, false, 'BINANCE:BTCUSDT'::text, 'short'::text, 67890.5::numeric, 'Trend Pro'::text),
  'with what the message shows and the failure preference');
select is((select signal_time from private.signal_notification((select on_id from s))),
  (select "timestamp" from public.signals where id = (select on_id from s)), 'and the alert''s time');
select is((select count(*)::int from private.signal_notification((select off_id from s))), 0,
  'a chat id alone does not switch notifications on');
select is((select count(*)::int from private.signal_notification(gen_random_uuid())), 0,
  'an unknown signal gets none');
select ok(not has_function_privilege('authenticated', 'private.signal_notification(uuid)', 'execute')
          and has_function_privilege('service_role', 'private.signal_notification(uuid)', 'execute'),
  'service role only');

select * from finish();
rollback;

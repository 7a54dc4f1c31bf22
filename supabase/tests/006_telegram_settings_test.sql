-- Telegram notification settings: only chats the Bot API can send to are stored, only the bot links
-- one (sql/70_telegram_link.sql: the 'link' flag is what private.handle_telegram_update sets with a
-- valid code), notifications are on only with a chat, and unlinking always works.
begin;
set local search_path = extensions, public;
select plan(40);

insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)
values ('cccccccc-0000-0000-0000-000000000003', 'authenticated', 'authenticated', 'c@example.test', '{}', '{}');

-- What the bot's link does to the row, here without the code (tested in 011).
create function pg_temp.link(p_chat text, p_at timestamptz default now()) returns void language plpgsql as $$
begin
  perform set_config('signal_capture.telegram_chat', 'link', true);
  update public.user_config set telegram_chat_id = p_chat, telegram_linked_at = p_at
   where user_id = 'cccccccc-0000-0000-0000-000000000003';
  perform set_config('signal_capture.telegram_chat', '', true);
end;
$$;

select results_eq($$ select notify_telegram, telegram_chat_id, telegram_linked_at, notify_on_failure from public.user_config
                     where user_id = 'cccccccc-0000-0000-0000-000000000003' $$,
  $$ values (false, null::text, null::timestamptz, true) $$, 'new traders start with Telegram off and no chat');

-- Accepted: every shape of chat_id Telegram uses.
select lives_ok(format($$ select pg_temp.link(%L) $$, chat), format('accepts %s (%s)', chat, what))
  from (values ('123456789', 'a user'),
               ('-987654321', 'a basic group'),
               ('-1001234567890', 'a supergroup or channel'),
               ('4503599627370495', 'the largest 52-bit id'),
               ('-1999999999999', 'the lowest channel id'),
               ('@signal_alerts', 'a public channel'),
               ('@abcde', 'a five-character username'),
               ('@A1234567890123456789012345678901', 'a 32-character username'),
               ('@Trade_2_Win', 'letters, digits and underscores')) as ok(chat, what);

-- Refused: anything Telegram would answer "chat not found" to, or worse.
select throws_ok(format($$ select pg_temp.link(%L) $$, chat), '23514', null, format('refuses %L (%s)', chat, why))
  from (values ('', 'empty'),
               ('0', 'zero'),
               ('-0', 'negative zero'),
               ('0123', 'a leading zero'),
               ('12345678901234567', 'seventeen digits'),
               ('+123456', 'a plus sign'),
               (' 123456', 'a leading space'),
               ('123456 ', 'a trailing space'),
               ('12e5', 'an exponent'),
               ('signal_alerts', 'a username without @'),
               ('@abcd', 'a four-character username'),
               ('@A12345678901234567890123456789012', 'a 33-character username'),
               ('@1channel', 'a username starting with a digit'),
               ('@_channel', 'a username starting with an underscore'),
               ('@channel_', 'a username ending with an underscore'),
               ('@chan-nel', 'a hyphen'),
               ('@chan nel', 'a space in a username'),
               ('https://t.me/signal_alerts', 'a link')) as bad(chat, why);

-- A chat is stored only with the time it was linked, and only by the bot's link.
select throws_ok($$ select pg_temp.link('777', null) $$, '23514', null, 'no chat without telegram_linked_at');
select throws_ok($$ update public.user_config set telegram_chat_id = '777', telegram_linked_at = now()
                     where user_id = 'cccccccc-0000-0000-0000-000000000003' $$,
  '42501', null, 'not even the service side can type a chat id: only the bot links');
select lives_ok($$ update public.user_config set notify_telegram = true, telegram_chat_id = null, telegram_linked_at = null
                    where user_id = 'cccccccc-0000-0000-0000-000000000003' $$,
  'unlinking works even when asked to keep notifications on');
select is((select notify_telegram from public.user_config where user_id = 'cccccccc-0000-0000-0000-000000000003'),
  false, 'unlinking turned notifications off');
select throws_ok($$ update public.user_config set notify_telegram = true
                    where user_id = 'cccccccc-0000-0000-0000-000000000003' $$,
  '23514', null, 'notifications cannot be on without a chat');

-- As the trader, through row level security and the column grants.
select lives_ok($$ select pg_temp.link('123456789') $$, 'the bot links the trader''s private chat');
set local role authenticated;
set local request.jwt.claims = '{"sub": "cccccccc-0000-0000-0000-000000000003", "role": "authenticated"}';
select lives_ok($$ update public.user_config set notify_telegram = true, notify_on_failure = false $$,
  'the trader turns notifications on for their linked chat');
select throws_ok($$ update public.user_config set telegram_chat_id = '-1001234567890' $$, '42501', null,
  'the trader cannot point the bot at another chat');
select throws_ok($$ update public.user_config set telegram_linked_at = now() - interval '1 day' $$, '42501', null,
  'nor back-date or invent a link');
select lives_ok($$ update public.user_config set telegram_linked_at = null $$,
  'unlinking (telegram_linked_at to null) always works');
select throws_ok($$ update public.user_config set telegram_linked_at = now() $$, '42501', null,
  'a link time without a chat is refused too, not taken as unlinking');
reset role;

select results_eq($$ select notify_telegram, telegram_chat_id, telegram_linked_at, notify_on_failure from public.user_config
                     where user_id = 'cccccccc-0000-0000-0000-000000000003' $$,
  $$ values (false, null::text, null::timestamptz, false) $$, 'unlinking took the chat and notifications with it');

select * from finish();
rollback;

-- Telegram notification settings: only chats the Bot API can send to are stored, and
-- notifications are on only with a chat. The trader edits them through RLS like any setting.
begin;
set local search_path = extensions, public;
select plan(33);

insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)
values ('cccccccc-0000-0000-0000-000000000003', 'authenticated', 'authenticated', 'c@example.test', '{}', '{}');

select results_eq($$ select notify_telegram, telegram_chat_id, notify_on_failure from public.user_config
                     where user_id = 'cccccccc-0000-0000-0000-000000000003' $$,
  $$ values (false, null::text, true) $$, 'new traders start with Telegram off and no chat');

-- Accepted: every shape of chat_id Telegram uses.
select lives_ok(format($$ update public.user_config set telegram_chat_id = %L
                          where user_id = 'cccccccc-0000-0000-0000-000000000003' $$, chat),
  format('accepts %s (%s)', chat, what))
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
select throws_ok(format($$ update public.user_config set telegram_chat_id = %L
                           where user_id = 'cccccccc-0000-0000-0000-000000000003' $$, chat),
  '23514', null, format('refuses %L (%s)', chat, why))
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

select throws_ok($$ update public.user_config set notify_telegram = true, telegram_chat_id = null
                    where user_id = 'cccccccc-0000-0000-0000-000000000003' $$,
  '23514', null, 'notifications cannot be on without a chat');

-- As the trader, through row level security.
set local role authenticated;
set local request.jwt.claims = '{"sub": "cccccccc-0000-0000-0000-000000000003", "role": "authenticated"}';
select lives_ok($$ update public.user_config
                      set notify_telegram = true, telegram_chat_id = '-1001234567890', notify_on_failure = false $$,
  'the trader turns notifications on for their channel');
select throws_ok($$ update public.user_config set telegram_chat_id = null $$, '23514', null,
  'the chat cannot be removed while notifications are on');
select lives_ok($$ update public.user_config set notify_telegram = false, telegram_chat_id = null $$,
  'turning notifications off and removing the chat together works');
reset role;

select results_eq($$ select notify_telegram, telegram_chat_id, notify_on_failure from public.user_config
                     where user_id = 'cccccccc-0000-0000-0000-000000000003' $$,
  $$ values (false, null::text, false) $$, 'the trader''s last settings are stored');

select * from finish();
rollback;

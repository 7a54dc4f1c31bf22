-- Telegram chats linked by proof (sql/70_telegram_link.sql): codes from the dashboard, the bot's
-- /start and /stop, once per update, only for the daemon holding the poller lease.
begin;
set local search_path = extensions, public;
select plan(44);

insert into auth.users (id, aud, role, email)
values ('dddddddd-0000-0000-0000-000000000001', 'authenticated', 'authenticated', 'link-a@example.test'),
       ('dddddddd-0000-0000-0000-000000000002', 'authenticated', 'authenticated', 'link-b@example.test');

-- A code, as the signed-in trader gets it through PostgREST.
create function pg_temp.code_for(p_user uuid) returns text language plpgsql as $$
declare
  v_code text;
begin
  perform set_config('request.jwt.claims', json_build_object('sub', p_user, 'role', 'authenticated')::text, true);
  set local role authenticated;
  select code into v_code from public.telegram_link_code();
  reset role;
  perform set_config('request.jwt.claims', '', true);
  return v_code;
end;
$$;
create temp table codes (name text primary key, code text) on commit drop;
insert into codes values ('a1', pg_temp.code_for('dddddddd-0000-0000-0000-000000000001'));

-- The code.
select matches((select code from codes where name = 'a1'), '^[A-Za-z0-9_-]{16}$',
  'a code is 16 URL-safe characters (fits a t.me deep link)');
select ok((select telegram_link_code_expires_at between now() + interval '9 minutes 59 seconds' and now() + interval '10 minutes'
             from public.user_config where user_id = 'dddddddd-0000-0000-0000-000000000001'),
  'valid for 10 minutes, shown on the trader''s row');
select is((select code_hash from private.telegram_link_codes where user_id = 'dddddddd-0000-0000-0000-000000000001'),
  digest(convert_to((select code from codes where name = 'a1'), 'UTF8'), 'sha256'),
  'only its SHA-256 hash is stored');
select is((select count(*)::int from private.telegram_link_codes c
            where position(convert_to((select code from codes where name = 'a1'), 'UTF8') in c.code_hash) > 0), 0,
  'not the code itself');
insert into codes values ('a2', pg_temp.code_for('dddddddd-0000-0000-0000-000000000001'));
select isnt((select code from codes where name = 'a2'), (select code from codes where name = 'a1'), 'each call gives a new code');
select is((select count(*)::int from private.telegram_link_codes where user_id = 'dddddddd-0000-0000-0000-000000000001'), 1,
  'which replaces the pending one');

-- Who may do what.
select throws_ok($$ select * from public.telegram_link_code() $$, '42501', null, 'nobody signed in: no code');
select ok(not has_function_privilege('anon', 'public.telegram_link_code()', 'execute')
          and not has_function_privilege('anon', 'public.unlink_telegram()', 'execute'), 'anon may call neither');
select ok(not has_function_privilege('authenticated', 'private.handle_telegram_update(bigint, text, bigint, bigint, text, text)', 'execute')
          and has_function_privilege('service_role', 'private.handle_telegram_update(bigint, text, bigint, bigint, text, text)', 'execute')
          and not has_function_privilege('authenticated', 'private.claim_telegram_poller(bigint, text, interval)', 'execute')
          and has_function_privilege('service_role', 'private.claim_telegram_poller(bigint, text, interval)', 'execute'),
  'only the service role acts for the bot');
select ok(not has_table_privilege('authenticated', 'private.telegram_link_codes', 'select')
          and not has_table_privilege('service_role', 'private.telegram_link_codes', 'select')
          and not has_table_privilege('service_role', 'private.telegram_bots', 'update'),
  'the codes and the bot state are reached through the functions only');
set local role authenticated;
set local request.jwt.claims = '{"sub": "dddddddd-0000-0000-0000-000000000001", "role": "authenticated"}';
select throws_ok($$ update public.user_config set telegram_link_code_expires_at = now() + interval '1 year' $$, '42501', null,
  'the trader cannot stretch a code''s life');
reset role;

-- The poller lease: one daemon at a time per bot.
select is(private.claim_telegram_poller(4242, 'daemon-1', interval '1 minute'), 0::bigint,
  'the first daemon gets the lease and the offset to poll from');
select is(private.claim_telegram_poller(4242, 'daemon-2', interval '1 minute'), null::bigint,
  'a second daemon stands by');
select is(private.handle_telegram_update(4242, 'daemon-2', 100, 555, 'start', (select code from codes where name = 'a2')),
  'not_poller', 'and may not act on updates');
select is(private.claim_telegram_poller(4242, 'daemon-1', interval '1 minute'), 0::bigint, 'the holder renews');

-- /start with a valid code links the chat it came from.
select is(private.handle_telegram_update(4242, 'daemon-1', 100, 555, 'start', (select code from codes where name = 'a1')),
  'invalid_code', 'a replaced code no longer works');
select is(private.handle_telegram_update(4242, 'daemon-1', 101, 555, 'start', (select code from codes where name = 'a2')),
  'linked', 'the pending code links the chat');
select results_eq($$ select telegram_chat_id, notify_telegram, telegram_linked_at is not null, telegram_link_code_expires_at
                       from public.user_config where user_id = 'dddddddd-0000-0000-0000-000000000001' $$,
  $$ values ('555'::text, true, true, null::timestamptz) $$, 'chat stored, notifications on, code spent');
select is((select count(*)::int from private.telegram_link_codes where user_id = 'dddddddd-0000-0000-0000-000000000001'), 0,
  'the spent code''s hash is gone');
select is(private.handle_telegram_update(4242, 'daemon-1', 101, 555, 'start', (select code from codes where name = 'a2')),
  'duplicate', 'the same update again (redelivered after a crash) does nothing');
select is(private.handle_telegram_update(4242, 'daemon-1', 102, 666, 'start', (select code from codes where name = 'a2')),
  'invalid_code', 'a code works once: another chat cannot take it over');
select is((select telegram_chat_id from public.user_config where user_id = 'dddddddd-0000-0000-0000-000000000001'), '555',
  'the first chat stays linked');
select is(private.claim_telegram_poller(4242, 'daemon-1', interval '1 minute'), 103::bigint,
  'the offset moved past every update acted on');

-- Expired codes, missing codes, other messages.
insert into codes values ('b1', pg_temp.code_for('dddddddd-0000-0000-0000-000000000002'));
update public.user_config set telegram_link_code_expires_at = null
 where user_id = 'dddddddd-0000-0000-0000-000000000002';
select is(private.handle_telegram_update(4242, 'daemon-1', 103, 777, 'start', (select code from codes where name = 'b1')),
  'invalid_code', 'a cancelled code does not work');
insert into codes values ('b2', pg_temp.code_for('dddddddd-0000-0000-0000-000000000002'));
-- Ten minutes later: the expiry moved by hand, past the guard that lets only telegram_link_code()
-- set it (one transaction has one now()).
alter table public.user_config disable trigger guard_telegram_link;
update public.user_config set telegram_link_code_expires_at = now() - interval '1 second'
 where user_id = 'dddddddd-0000-0000-0000-000000000002';
alter table public.user_config enable trigger guard_telegram_link;
select is(private.handle_telegram_update(4242, 'daemon-1', 104, 777, 'start', (select code from codes where name = 'b2')),
  'expired_code', 'an expired code does not link');
select is((select telegram_chat_id from public.user_config where user_id = 'dddddddd-0000-0000-0000-000000000002'), null,
  'nothing linked');
select is(private.handle_telegram_update(4242, 'daemon-1', 105, 777, 'start', null), 'no_code',
  '/start alone asks for a code');
select is(private.handle_telegram_update(4242, 'daemon-1', 106, 777, null, null), 'ignored',
  'other messages are only recorded as seen');
select is(private.handle_telegram_update(4242, 'daemon-1', 107, 777, 'stop', null), 'not_linked',
  '/stop in a chat nobody linked');

-- Two traders in one chat, then /stop: both unlinked.
insert into codes values ('b3', pg_temp.code_for('dddddddd-0000-0000-0000-000000000002'));
select is(private.handle_telegram_update(4242, 'daemon-1', 108, 555, 'start', (select code from codes where name = 'b3')),
  'linked', 'a second account links the same chat');
select is(private.handle_telegram_update(4242, 'daemon-1', 109, 555, 'stop', null), 'unlinked', '/stop unlinks');
select results_eq($$ select telegram_chat_id, notify_telegram, telegram_linked_at from public.user_config
                       where user_id in ('dddddddd-0000-0000-0000-000000000001', 'dddddddd-0000-0000-0000-000000000002') $$,
  $$ values (null::text, false, null::timestamptz), (null::text, false, null::timestamptz) $$,
  'every account linked to that chat, notifications off');

-- The trader unlinks from the dashboard.
insert into codes values ('a3', pg_temp.code_for('dddddddd-0000-0000-0000-000000000001'));
select is(private.handle_telegram_update(4242, 'daemon-1', 110, 555, 'start', (select code from codes where name = 'a3')),
  'linked', 'linked again with a new code');
set local role authenticated;
set local request.jwt.claims = '{"sub": "dddddddd-0000-0000-0000-000000000002", "role": "authenticated"}';
select is(public.unlink_telegram(), false, 'another trader''s unlink touches nothing of theirs');
set local request.jwt.claims = '{"sub": "dddddddd-0000-0000-0000-000000000001", "role": "authenticated"}';
select is(public.unlink_telegram(), true, 'unlink_telegram() forgets the chat');
select is(public.unlink_telegram(), false, 'and says so when there is none');
reset role;
select results_eq($$ select telegram_chat_id, notify_telegram from public.user_config
                       where user_id = 'dddddddd-0000-0000-0000-000000000001' $$,
  $$ values (null::text, false) $$, 'no chat, no notifications');

-- The lease lapses or is given back; the next daemon resumes at the stored offset.
select lives_ok($$ select private.release_telegram_poller(4242, 'daemon-1') $$, 'a daemon shutting down gives the lease back');
select is(private.claim_telegram_poller(4242, 'daemon-2', interval '1 minute'), 111::bigint,
  'the next daemon starts where the last one stopped');
select is(private.handle_telegram_update(4242, 'daemon-2', 110, 555, 'start', (select code from codes where name = 'a3')),
  'duplicate', 'and does not act on what was acted on');
update private.telegram_bots set poller_lease_until = now() - interval '1 second' where bot_id = 4242;
select is(private.claim_telegram_poller(4242, 'daemon-3', interval '1 minute'), 111::bigint, 'a lapsed lease is taken over');
select is(private.claim_telegram_poller(4343, 'daemon-3', interval '1 minute'), 0::bigint, 'each bot has its own offset');

-- The chats set before linking existed were cleared by the migration; none can come back unproven.
select is((select count(*)::int from public.user_config where telegram_chat_id is not null and telegram_linked_at is null), 0,
  'no chat without proof');
select col_has_check('public', 'user_config', array['telegram_chat_id', 'telegram_linked_at'],
  'a check ties the chat to its link time');

select * from finish();
rollback;

-- TradingView session checks: a stored session is scheduled, claimed at most once per interval,
-- recorded valid or expired (with exactly one notice per expiry), rescheduled when a new session is
-- stored and dropped when it is forgotten; the gauge's counts; who may call what; the notices' RLS.
begin;
set local search_path = extensions, public;
select plan(44);

insert into auth.users (id, aud, role, email)
values ('aaaaaaaa-0000-0000-0000-0000000d0001', 'authenticated', 'authenticated', 'check-a@example.test'),
       ('aaaaaaaa-0000-0000-0000-0000000d0002', 'authenticated', 'authenticated', 'check-b@example.test'),
       ('aaaaaaaa-0000-0000-0000-0000000d0003', 'authenticated', 'authenticated', 'check-c@example.test');

-- cookie-seal envelopes (version 1, key id "k1", a nonce, ciphertext and tag); the database cannot
-- open them and does not try.
create temp table sealed on commit drop as
  select decode('01' || '02' || encode('k1', 'hex') || repeat('00', 24) || repeat('ab', 20), 'hex') as a,
         decode('01' || '02' || encode('k1', 'hex') || repeat('11', 24) || repeat('cd', 20), 'hex') as b,
         decode('01' || '02' || encode('k2', 'hex') || repeat('22', 24) || repeat('ef', 20), 'hex') as b_new,
         decode('01' || '02' || encode('k2', 'hex') || repeat('33', 24) || repeat('ab', 20), 'hex') as a_resealed;
-- Sessions of earlier tests in the same database stay out of the way: only ours are counted.
create temp table ours on commit drop as
  select unnest(array['aaaaaaaa-0000-0000-0000-0000000d0001', 'aaaaaaaa-0000-0000-0000-0000000d0002',
                      'aaaaaaaa-0000-0000-0000-0000000d0003']::uuid[]) as user_id;
create function pg_temp.claimed(p_limit integer, p_interval interval) returns setof uuid language sql as $$
  select c.user_id from private.claim_session_checks(p_limit, p_interval) c where c.user_id in (select user_id from ours)
   order by c.user_id;
$$;
create function pg_temp.due_at(p_user uuid) returns timestamptz language sql as $$
  select due_at from private.tradingview_session_checks where user_id = p_user;
$$;
-- Everything else's sessions are pushed out of the claim's way for this transaction.
update private.tradingview_session_checks set due_at = 'infinity' where user_id not in (select user_id from ours);

select is(pg_temp.due_at('aaaaaaaa-0000-0000-0000-0000000d0001'), null::timestamptz, 'a trader without a session has no check');
select ok(public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000d0001', (select a from sealed))
          and public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000d0002', (select b from sealed)),
  'two traders store a session');
select is(pg_temp.due_at('aaaaaaaa-0000-0000-0000-0000000d0001'), now(), 'a stored session is due for a check at once');
select results_eq($$ select valid, expired, unchecked from private.tradingview_session_counts() $$,
  $$ select (select count(*) from public.user_config where tradingview_cookies_sealed is not null and cookies_valid and cookies_checked_at is not null),
            (select count(*) from public.user_config where tradingview_cookies_sealed is not null and not cookies_valid),
            (select count(*) from public.user_config where tradingview_cookies_sealed is not null and cookies_valid and cookies_checked_at is null) $$,
  'the gauge counts stored sessions by state');
select ok((select unchecked from private.tradingview_session_counts()) >= 2, 'stored and never checked: unchecked');

select results_eq($$ select * from pg_temp.claimed(1, '1 hour') $$,
  $$ values ('aaaaaaaa-0000-0000-0000-0000000d0001'::uuid) $$, 'the limit is honoured, oldest due first');
select results_eq($$ select * from pg_temp.claimed(10, '1 hour') $$,
  $$ values ('aaaaaaaa-0000-0000-0000-0000000d0002'::uuid) $$, 'the rest is claimed next');
select is_empty($$ select * from pg_temp.claimed(10, '1 hour') $$, 'a claimed session is not due again within the interval');
select is(pg_temp.due_at('aaaaaaaa-0000-0000-0000-0000000d0001'), now() + interval '1 hour', 'its next check is one interval ahead');
select is((select tradingview_cookies_sealed from private.claim_session_checks(10, '1 hour')
            where user_id = 'aaaaaaaa-0000-0000-0000-0000000d0001'), null, '(nothing is handed out twice)');
update private.tradingview_session_checks set due_at = now() where user_id = 'aaaaaaaa-0000-0000-0000-0000000d0001';
select is((select tradingview_cookies_sealed from private.claim_session_checks(10, '1 hour')
            where user_id = 'aaaaaaaa-0000-0000-0000-0000000d0001'), (select a from sealed),
  'a claim hands out the sealed session to check');

select is(private.record_session_check('aaaaaaaa-0000-0000-0000-0000000d0001', (select a from sealed), true), 'valid',
  'a signed-in answer records the session valid');
select results_eq($$ select cookies_valid, cookies_checked_at from public.user_config where user_id = 'aaaaaaaa-0000-0000-0000-0000000d0001' $$,
  $$ values (true, now()) $$, 'with the time it was checked');
select is(private.record_session_check('aaaaaaaa-0000-0000-0000-0000000d0001', (select b from sealed), false), 'stale',
  'a check of a session the row no longer holds changes nothing');
select ok((select cookies_valid from public.user_config where user_id = 'aaaaaaaa-0000-0000-0000-0000000d0001'), 'still valid');

select is(private.record_session_check('aaaaaaaa-0000-0000-0000-0000000d0002', (select b from sealed), false), 'expired',
  'a signed-out answer expires the session');
select results_eq($$ select cookies_valid, cookies_checked_at from public.user_config where user_id = 'aaaaaaaa-0000-0000-0000-0000000d0002' $$,
  $$ values (false, now()) $$, 'cookies_valid is false, and when it was found out is kept');
select results_eq($$ select kind, message from public.trader_notices where user_id = 'aaaaaaaa-0000-0000-0000-0000000d0002' $$,
  $$ values ('tradingview_session_expired'::text,
             'Your TradingView session has expired or was signed out. Paste fresh sessionid and sessionid_sign cookies in your settings to get chart screenshots again.'::text) $$,
  'the trader gets a notice saying what to do');
select is(pg_temp.due_at('aaaaaaaa-0000-0000-0000-0000000d0002'), 'infinity'::timestamptz, 'an expired session is not checked again');
select is(private.record_session_check('aaaaaaaa-0000-0000-0000-0000000d0002', (select b from sealed), false), 'stale',
  'expiring it again is a no-op');
select ok(not private.expire_tradingview_session('aaaaaaaa-0000-0000-0000-0000000d0002', (select b from sealed)),
  '(also from a capture that met the sign-in wall)');
select is((select count(*)::int from public.trader_notices where user_id = 'aaaaaaaa-0000-0000-0000-0000000d0002'), 1,
  'the trader is told once');
select throws_ok($$ select private.record_session_check('aaaaaaaa-0000-0000-0000-0000000d0002', '\x01', null) $$,
  '22023', null, 'a check without an answer is refused');

select ok(public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000d0002', (select b_new from sealed)),
  'the trader stores a fresh session');
select results_eq($$ select cookies_valid, cookies_checked_at is null from public.user_config where user_id = 'aaaaaaaa-0000-0000-0000-0000000d0002' $$,
  $$ values (true, true) $$, 'a fresh session is valid and unchecked');
select is(pg_temp.due_at('aaaaaaaa-0000-0000-0000-0000000d0002'), now(), 'and due for a check at once');
select ok(private.expire_tradingview_session('aaaaaaaa-0000-0000-0000-0000000d0002', (select b_new from sealed)),
  'when it expires in turn');
select is((select count(*)::int from public.trader_notices where user_id = 'aaaaaaaa-0000-0000-0000-0000000d0002'), 2,
  'the trader is told again: once per expired session');

update private.tradingview_session_checks set due_at = now() + interval '5 minutes' where user_id = 'aaaaaaaa-0000-0000-0000-0000000d0001';
select ok(public.reseal_tradingview_session('aaaaaaaa-0000-0000-0000-0000000d0001', (select a from sealed), (select a_resealed from sealed)),
  're-sealing under another key');
select is(pg_temp.due_at('aaaaaaaa-0000-0000-0000-0000000d0001'), now() + interval '5 minutes', 'keeps the schedule');
select ok(public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000d0001', null), 'a trader forgets their session');
select is(pg_temp.due_at('aaaaaaaa-0000-0000-0000-0000000d0001'), null::timestamptz, 'a forgotten session is not checked');

-- A session written straight into the row (not through set_tradingview_session) is scheduled too.
update public.user_config set tradingview_cookies_sealed = (select a from sealed), cookies_valid = true
 where user_id = 'aaaaaaaa-0000-0000-0000-0000000d0003';
select is(pg_temp.due_at('aaaaaaaa-0000-0000-0000-0000000d0003'), now(), 'whoever stores the session');

select throws_ok($$ select * from private.claim_session_checks(0, '1 hour') $$, '22023', null, 'a claim of nothing is refused');
select throws_ok($$ select * from private.claim_session_checks(10, '0 seconds') $$, '22023', null, 'so is an interval of zero');

-- As the bot links a chat once it got the trader's code (the code itself: 013_telegram_link_test).
set local signal_capture.telegram_chat = 'link';
update public.user_config set notify_telegram = true, telegram_chat_id = '-100555', telegram_linked_at = now()
 where user_id = 'aaaaaaaa-0000-0000-0000-0000000d0002';
set local signal_capture.telegram_chat = '';
select is(private.session_expiry_chat('aaaaaaaa-0000-0000-0000-0000000d0002'), '-100555', 'the chat of a trader who wants messages');
select is(private.session_expiry_chat('aaaaaaaa-0000-0000-0000-0000000d0003'), null, 'none for one who does not');

select ok(not has_function_privilege('authenticated', 'private.claim_session_checks(integer, interval)', 'execute')
          and not has_function_privilege('authenticated', 'private.expire_tradingview_session(uuid, bytea)', 'execute')
          and not has_function_privilege('anon', 'private.record_session_check(uuid, bytea, boolean)', 'execute')
          and not has_function_privilege('authenticated', 'private.tradingview_session_counts()', 'execute'),
  'end users cannot claim, record or count session checks');
select ok(has_function_privilege('service_role', 'private.record_session_check(uuid, bytea, boolean)', 'execute')
          and has_function_privilege('service_role', 'private.claim_session_checks(integer, interval)', 'execute'),
  'the service role can');

-- The notices as the dashboard reads them.
set local role authenticated;
set local request.jwt.claims = '{"sub": "aaaaaaaa-0000-0000-0000-0000000d0002", "role": "authenticated"}';
select is((select count(*)::int from public.trader_notices), 2, 'the trader reads their own notices');
select lives_ok($$ update public.trader_notices set read_at = now() $$, 'and marks them read');
select throws_ok($$ update public.trader_notices set message = 'x' $$, '42501', null, 'but cannot rewrite them');
set local request.jwt.claims = '{"sub": "aaaaaaaa-0000-0000-0000-0000000d0003", "role": "authenticated"}';
select is_empty($$ select id from public.trader_notices $$, 'another trader sees none of them');
select throws_ok($$ insert into public.trader_notices (user_id, kind, message)
                    values ('aaaaaaaa-0000-0000-0000-0000000d0003', 'tradingview_session_expired', 'x') $$,
  '42501', null, 'and nobody inserts notices through the API');
reset role;

select * from finish();
rollback;

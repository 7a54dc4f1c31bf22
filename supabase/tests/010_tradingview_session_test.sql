-- set_tradingview_session: the one writer of a trader's sealed TradingView session. Stores only
-- cookie-seal envelopes (never plaintext), marks the session valid or, when forgotten, invalid,
-- touches only the named trader's row, and is callable by the service role only.
begin;
set local search_path = extensions, public;
select plan(28);

insert into auth.users (id, aud, role, email)
values ('aaaaaaaa-0000-0000-0000-0000000c0001', 'authenticated', 'authenticated', 'session-a@example.test'),
       ('aaaaaaaa-0000-0000-0000-0000000c0002', 'authenticated', 'authenticated', 'session-b@example.test');

-- An envelope as cookie-seal writes it: version 1, key id "k1", a 24-byte nonce, 20 bytes of
-- ciphertext and tag. The database cannot open it and does not try.
create temp table sealed on commit drop as
  select decode('01' || '02' || encode('k1', 'hex') || repeat('00', 24) || repeat('ab', 20), 'hex') as v;
grant select on sealed to service_role, authenticated;

set local role service_role;
select ok(public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000c0001', (select v from sealed)),
  'the service role stores a sealed session and is told the trader exists');
reset role;
select results_eq($$ select tradingview_cookies_sealed = (select v from sealed), cookies_valid, cookies_updated_at is not null
                       from public.user_config where user_id = 'aaaaaaaa-0000-0000-0000-0000000c0001' $$,
  $$ values (true, true, true) $$, 'the value is stored as given, valid, with the time it was stored');
select results_eq($$ select tradingview_cookies_sealed is null, cookies_valid
                       from public.user_config where user_id = 'aaaaaaaa-0000-0000-0000-0000000c0002' $$,
  $$ values (true, false) $$, 'no other trader''s row changes');

set local role service_role;
select ok(not public.set_tradingview_session('aaaaaaaa-0000-0000-0000-00000000dead', (select v from sealed)),
  'an unknown user is reported, not created');
select throws_ok($$ select public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000c0002',
                          convert_to('{"sessionid":"abc123","sessionid_sign":"v3:sig"}', 'UTF8')) $$,
  '22023', 'not a sealed TradingView session (cookie-seal format 1)', 'plaintext is refused');
select throws_ok($$ select public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000c0002', '\x'::bytea) $$,
  '22023', null, 'an empty value is refused');
select throws_ok($$ select public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000c0002', '\x01'::bytea) $$,
  '22023', null, 'a value shorter than the envelope is refused');
select throws_ok($$ select public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000c0002',
                          set_byte((select v from sealed), 0, 2)) $$,
  '22023', null, 'another format version is refused');
select throws_ok($$ select public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000c0002',
                          set_byte((select v from sealed), 1, 0)) $$,
  '22023', null, 'an empty key id is refused');
select throws_ok($$ select public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000c0002',
                          set_byte((select v from sealed), 1, 33)) $$,
  '22023', null, 'a key id longer than 32 bytes is refused');
select throws_ok($$ select public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000c0002',
                          set_byte((select v from sealed), 1, 30)) $$,
  '22023', null, 'a key id that leaves no room for the nonce and tag is refused');
reset role;
select results_eq($$ select tradingview_cookies_sealed is null, cookies_valid
                       from public.user_config where user_id = 'aaaaaaaa-0000-0000-0000-0000000c0002' $$,
  $$ values (true, false) $$, 'a refused value leaves the row as it was');

set local role service_role;
select ok(public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000c0001', null),
  'null forgets the session');
reset role;
select results_eq($$ select tradingview_cookies_sealed is null, cookies_valid
                       from public.user_config where user_id = 'aaaaaaaa-0000-0000-0000-0000000c0001' $$,
  $$ values (true, false) $$, 'a forgotten session is gone and marked invalid');

-- pg_prove and `supabase test db` connect as postgres, the role a direct pool uses on Supabase.
select is(current_user::text, 'postgres', 'these checks run as postgres');
select ok(public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000c0002', (select v from sealed)),
  'the postgres role (the direct pool''s) may call it');
select ok((select cookies_valid from public.user_config where user_id = 'aaaaaaaa-0000-0000-0000-0000000c0002'),
  'and it stores: security invoker needs no more than postgres has');

select ok(not has_function_privilege('anon', 'public.set_tradingview_session(uuid, bytea)', 'execute')
          and not has_function_privilege('authenticated', 'public.set_tradingview_session(uuid, bytea)', 'execute')
          and has_function_privilege('service_role', 'public.set_tradingview_session(uuid, bytea)', 'execute'),
  'service role only');
set local role authenticated;
set local request.jwt.claims = '{"sub": "aaaaaaaa-0000-0000-0000-0000000c0001", "role": "authenticated"}';
select throws_ok($$ select public.set_tradingview_session('aaaaaaaa-0000-0000-0000-0000000c0001', (select v from sealed)) $$,
  '42501', null, 'a signed-in trader cannot call it, not even for their own row');
reset role;
select ok((select not p.prosecdef and p.proconfig = array['search_path=""']::text[] from pg_proc p
            where p.oid = 'public.set_tradingview_session(uuid, bytea)'::regprocedure),
  'security invoker, search_path pinned');
select is((select count(*)::int from pg_proc where proname = 'set_tradingview_session'), 1,
  'one signature, so PostgREST never has to choose between overloads');

-- reseal_tradingview_session: the same session under another key, only while the row still holds
-- the old value; its validity and the time it was stored stay.
create temp table resealed on commit drop as
  select decode('01' || '02' || encode('k2', 'hex') || repeat('11', 24) || repeat('cd', 20), 'hex') as v;
grant select on resealed to service_role, authenticated;
update public.user_config set cookies_valid = false, cookies_updated_at = '2026-01-01'
 where user_id = 'aaaaaaaa-0000-0000-0000-0000000c0002';
set local role service_role;
select ok(not public.reseal_tradingview_session('aaaaaaaa-0000-0000-0000-0000000c0002',
                                                (select v from resealed), (select v from resealed)),
  'a re-seal of a value no longer stored changes nothing');
select ok(public.reseal_tradingview_session('aaaaaaaa-0000-0000-0000-0000000c0002',
                                            (select v from sealed), (select v from resealed)),
  'a re-seal of the stored value replaces it');
select throws_ok($$ select public.reseal_tradingview_session('aaaaaaaa-0000-0000-0000-0000000c0002',
                          (select v from resealed), convert_to('plaintext session', 'UTF8')) $$,
  '22023', null, 'a re-seal into plaintext is refused');
reset role;
select results_eq($$ select tradingview_cookies_sealed = (select v from resealed), cookies_valid,
                            cookies_updated_at = '2026-01-01'
                       from public.user_config where user_id = 'aaaaaaaa-0000-0000-0000-0000000c0002' $$,
  $$ values (true, false, true) $$, 'the new value is stored; validity and cookies_updated_at stay');
select ok(not has_function_privilege('anon', 'public.reseal_tradingview_session(uuid, bytea, bytea)', 'execute')
          and not has_function_privilege('authenticated', 'public.reseal_tradingview_session(uuid, bytea, bytea)', 'execute')
          and has_function_privilege('service_role', 'public.reseal_tradingview_session(uuid, bytea, bytea)', 'execute'),
  're-seal: service role only');
select ok((select not p.prosecdef and p.proconfig = array['search_path=""']::text[] from pg_proc p
            where p.oid = 'public.reseal_tradingview_session(uuid, bytea, bytea)'::regprocedure),
  're-seal: security invoker, search_path pinned');
select ok(not has_function_privilege('authenticated', 'private.require_sealed_session(bytea)', 'execute')
          and not has_function_privilege('anon', 'private.require_sealed_session(bytea)', 'execute'),
  'the envelope check is not callable by clients');

select * from finish();
rollback;

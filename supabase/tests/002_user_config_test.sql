-- Every new auth user gets a config row with a token; rotation replaces it and the old one dies.
begin;
set local search_path = extensions, public;
select plan(16);

insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)
values ('aaaaaaaa-0000-0000-0000-000000000001', 'authenticated', 'authenticated', 'a@example.test', '{}', '{}'),
       ('bbbbbbbb-0000-0000-0000-000000000002', 'authenticated', 'authenticated', 'b@example.test', '{}', '{}');

select is((select count(*)::int from public.user_config
            where user_id in ('aaaaaaaa-0000-0000-0000-000000000001', 'bbbbbbbb-0000-0000-0000-000000000002')), 2,
  'a config row is created for each new auth user');
select ok((select bool_and(webhook_token ~ '^[A-Za-z0-9_-]{43}$') from public.user_config
            where user_id in ('aaaaaaaa-0000-0000-0000-000000000001', 'bbbbbbbb-0000-0000-0000-000000000002')),
  'tokens are 43 URL-safe characters (256 random bits)');
select isnt((select webhook_token from public.user_config where user_id = 'aaaaaaaa-0000-0000-0000-000000000001'),
            (select webhook_token from public.user_config where user_id = 'bbbbbbbb-0000-0000-0000-000000000002'),
  'two users get different tokens');
select results_eq($$ select plan, webhook_enabled, cookies_valid, signals_this_period from public.user_config
                     where user_id = 'aaaaaaaa-0000-0000-0000-000000000001' $$,
  $$ values ('free'::text, true, false, 0) $$, 'new traders start on the free plan, enabled, without a session');

create temp table old_token on commit drop as
  select webhook_token as token from public.user_config where user_id = 'aaaaaaaa-0000-0000-0000-000000000001';
grant select on old_token to authenticated;

set local role authenticated;
set local request.jwt.claims = '{"sub": "aaaaaaaa-0000-0000-0000-000000000001", "role": "authenticated"}';

create temp table new_token on commit drop as select public.rotate_webhook_token() as token;
select isnt((select token from new_token), (select token from old_token), 'rotation returns a new token');
select is((select webhook_token from public.user_config), (select token from new_token),
  'the new token is stored');
select throws_ok($$ update public.user_config set webhook_token = 'chosen-by-the-trader-0000000000000000000000' $$,
  '42501', null, 'the token cannot be set directly');
select throws_ok($$ update public.user_config set plan = 'premium' $$, '42501', null, 'the plan cannot be changed by the trader');
select throws_ok($$ update public.user_config set signals_this_period = 0 $$, '42501', null, 'quota counters are not editable');
select throws_ok($$ update public.user_config set tradingview_cookies_sealed = '\x00' $$, '42501', null,
  'sealed cookies are written server-side only');
select throws_ok($$ update public.user_config set cookies_valid = true $$, '42501', null, 'cookies_valid is server-side only');
select lives_ok($$ update public.user_config set webhook_enabled = false, default_chart_id = 'AbC123xy', chart_theme = 'light' $$,
  'the trader edits their own settings');
select is((select count(*)::int from public.user_config), 1, 'a trader sees only their own config row');
update public.user_config set webhook_enabled = false, chart_theme = 'light'
 where user_id = 'bbbbbbbb-0000-0000-0000-000000000002';
reset role;
select results_eq($$ select webhook_enabled, chart_theme from public.user_config
                      where user_id = 'bbbbbbbb-0000-0000-0000-000000000002' $$,
  $$ values (true, 'dark'::text) $$, 'a trader cannot update another trader''s config');

select is(public.ingest_signal((select token from old_token), now(), 'NASDAQ:AAPL buy') ->> 'outcome', 'unknown_token',
  'the old token stops working at once');
update public.user_config set webhook_enabled = true where user_id = 'aaaaaaaa-0000-0000-0000-000000000001';
select is(public.ingest_signal((select token from new_token), now(), 'NASDAQ:AAPL buy', null, 'NASDAQ:AAPL', 'NASDAQ', 'AAPL')
            ->> 'outcome', 'accepted', 'the new token works');

select * from finish();
rollback;

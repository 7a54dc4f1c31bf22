-- A trader reads their settings and cookies_valid, but never the sealed TradingView session: SELECT
-- on user_config is granted column by column (rls-policies/20_user_config.sql).
begin;
set local search_path = extensions, public;
select plan(9);

select ok(not has_column_privilege('authenticated', 'public.user_config', 'tradingview_cookies_sealed', 'select'),
  'authenticated has no SELECT on the sealed session');
select ok(not has_table_privilege('authenticated', 'public.user_config', 'select'),
  'authenticated has no table-wide SELECT on user_config');
select is(
  (select array_agg(a.attname::text order by a.attname)
     from pg_attribute a
    where a.attrelid = 'public.user_config'::regclass and a.attnum > 0 and not a.attisdropped
      and not has_column_privilege('authenticated', a.attrelid, a.attnum, 'select')),
  array['tradingview_cookies_sealed'],
  'every other column of user_config is readable by authenticated');
select ok(has_column_privilege('service_role', 'public.user_config', 'tradingview_cookies_sealed', 'select'),
  'the service role still reads the sealed session');

insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)
values ('aaaaaaaa-0000-0000-0000-000000000013', 'authenticated', 'authenticated', 'grants@example.test', '{}', '{}');
update public.user_config set tradingview_cookies_sealed = '\x0102', cookies_valid = true
 where user_id = 'aaaaaaaa-0000-0000-0000-000000000013';

set local role authenticated;
set local request.jwt.claims = '{"sub": "aaaaaaaa-0000-0000-0000-000000000013", "role": "authenticated"}';

select results_eq($$ select cookies_valid, plan, chart_theme from public.user_config $$,
  $$ values (true, 'free'::text, 'dark'::text) $$, 'the owner reads their settings and cookies_valid');
select throws_ok($$ select tradingview_cookies_sealed from public.user_config $$, '42501', null,
  'the owner cannot read their sealed session');
select throws_ok($$ select * from public.user_config $$, '42501', null,
  'select * is refused (it names the sealed column)');
select throws_ok($$ select user_id from public.user_config where tradingview_cookies_sealed is not null $$,
  '42501', null, 'the sealed column cannot be probed through a filter either');
select lives_ok($$ update public.user_config set chart_theme = 'light' $$,
  'the owner still updates their settings');

select * from finish();
rollback;

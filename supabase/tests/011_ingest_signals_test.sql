-- ingest_signals: a batch of alerts decided by ingest_signal's own rules, in order, one outcome
-- each; an alert that raises fails no other; the quota stays exact; at most one wake-up per batch.
begin;
set local search_path = extensions, public;
select plan(35);

insert into auth.users (id, aud, role, email)
values ('aaaaaaaa-0000-0000-0000-000000000011', 'authenticated', 'authenticated', 'a11@example.test'),
       ('bbbbbbbb-0000-0000-0000-000000000011', 'authenticated', 'authenticated', 'b11@example.test'),
       ('cccccccc-0000-0000-0000-000000000011', 'authenticated', 'authenticated', 'c11@example.test');
update public.user_config set plan = 'pro', quota_period_start = '2026-03-01'
 where user_id in ('aaaaaaaa-0000-0000-0000-000000000011', 'bbbbbbbb-0000-0000-0000-000000000011');
-- A free-plan trader with 4 signals of the month's 100 left (free allows 10 a minute, so the quota,
-- not the rate limit, is what stops them).
update public.user_config set plan = 'free', quota_period_start = '2026-03-01', signals_this_period = 96
 where user_id = 'cccccccc-0000-0000-0000-000000000011';
create temp table tok on commit drop as
  select user_id, webhook_token as token from public.user_config
   where user_id in ('aaaaaaaa-0000-0000-0000-000000000011', 'bbbbbbbb-0000-0000-0000-000000000011',
                     'cccccccc-0000-0000-0000-000000000011');

-- One alert as the edge sends it: ingest_signal's named arguments as a JSON object.
create function pg_temp.alert(p_user uuid, p_body text, p_at text default '2026-03-10 12:00:00+00',
                              p_direction text default 'long', p_reject text default null)
returns jsonb language sql as $$
  select jsonb_strip_nulls(jsonb_build_object(
    'p_token', (select token from tok where user_id = p_user),
    'p_received_at', p_at, 'p_raw_message', p_body,
    'p_ticker', case when p_reject is null then 'BINANCE:BTCUSDT' end,
    'p_exchange', case when p_reject is null then 'BINANCE' end,
    'p_symbol', case when p_reject is null then 'BTCUSDT' end,
    'p_price', case when p_reject is null then '67890.5' end,
    'p_direction', case when p_reject is null then p_direction end,
    'p_reject_code', p_reject, 'p_reject_message', case when p_reject is not null then 'no ticker found' end,
    'p_delivery_id', gen_random_uuid()))
$$;
create function pg_temp.signals_of(p_user uuid) returns int language sql as $$
  select count(*)::int from public.signals where user_id = p_user
$$;

-- Count the wake-ups: the function is replaced for this transaction only (rolled back at the end).
create temp table wakeups (n int not null) on commit drop;
insert into wakeups values (0);
grant all on wakeups to public;
create or replace function private.wake_capture_daemon() returns void language sql
  set search_path = '' as $$ update pg_temp.wakeups set n = n + 1 $$;

-- Privileges: the service role only; the rules function is nobody's to call.
select ok(has_function_privilege('service_role', 'public.ingest_signals(jsonb)', 'execute')
          and not has_function_privilege('authenticated', 'public.ingest_signals(jsonb)', 'execute')
          and not has_function_privilege('anon', 'public.ingest_signals(jsonb)', 'execute'),
  'only the service role can call ingest_signals');
select ok(not has_function_privilege('service_role', 'private.ingest_alert(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text, uuid)', 'execute')
          and not has_function_privilege('authenticated', 'private.ingest_alert(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text, uuid)', 'execute'),
  'private.ingest_alert is reachable only through ingest_signal and ingest_signals');

-- A mixed batch: one outcome per alert, in order.
create temp table mixed on commit drop as
  select public.ingest_signals(jsonb_build_array(
    pg_temp.alert('aaaaaaaa-0000-0000-0000-000000000011', 'A one'),
    jsonb_build_object('p_token', 'no-such-token-000000000000000000000000000000', 'p_received_at', '2026-03-10 12:00:00+00',
                       'p_raw_message', 'guess'),
    pg_temp.alert('bbbbbbbb-0000-0000-0000-000000000011', 'hello', p_reject => 'no_ticker'),
    pg_temp.alert('aaaaaaaa-0000-0000-0000-000000000011', 'A one', '2026-03-10 12:00:02+00'),
    pg_temp.alert('bbbbbbbb-0000-0000-0000-000000000011', 'B one'))) as r;
select is((select jsonb_array_length(r) from mixed), 5, 'one outcome per alert');
select is((select array_agg(o ->> 'outcome' order by n) from mixed, jsonb_array_elements(r) with ordinality as x(o, n)),
  array['accepted', 'unknown_token', 'no_ticker', 'duplicate', 'accepted'], 'each alert gets its own outcome, in order');
select is((select array_agg((o ->> 'http_status')::int order by n) from mixed, jsonb_array_elements(r) with ordinality as x(o, n)),
  array[200, 404, 422, 200, 200], 'with its own status');
select is((select r -> 3 ->> 'signal_id' from mixed), (select r -> 0 ->> 'signal_id' from mixed),
  'a retry later in the same batch gets the first signal''s id');
select is(pg_temp.signals_of('aaaaaaaa-0000-0000-0000-000000000011') + pg_temp.signals_of('bbbbbbbb-0000-0000-0000-000000000011'), 2,
  'two signals stored');
select is((select count(*)::int from public.webhook_deliveries
            where user_id in ('aaaaaaaa-0000-0000-0000-000000000011', 'bbbbbbbb-0000-0000-0000-000000000011')), 4,
  'every alert on a known token is in its trader''s delivery log');
select is((select n from wakeups), 1, 'a batch with accepted alerts wakes a daemon once');

-- One alert raises: it gets its own error; everything else of the batch is stored.
create temp table raising on commit drop as
  select public.ingest_signals(jsonb_build_array(
    pg_temp.alert('aaaaaaaa-0000-0000-0000-000000000011', 'A two', '2026-03-10 12:01:00+00'),
    pg_temp.alert('aaaaaaaa-0000-0000-0000-000000000011', 'A sideways', '2026-03-10 12:01:00+00', p_direction => 'sideways'),
    pg_temp.alert('bbbbbbbb-0000-0000-0000-000000000011', 'B two', 'yesterday-ish'),
    '"not an object"'::jsonb,
    pg_temp.alert('bbbbbbbb-0000-0000-0000-000000000011', 'B three', '2026-03-10 12:01:00+00'))) as r;
select is((select array_agg(o ->> 'outcome' order by n) from raising, jsonb_array_elements(r) with ordinality as x(o, n)),
  array['accepted', 'error', 'error', 'error', 'accepted'], 'the alerts that raise get outcome error, the others theirs');
select is((select array_agg(o ->> 'sqlstate' order by n) from raising, jsonb_array_elements(r) with ordinality as x(o, n)
            where o ->> 'outcome' = 'error'),
  array['22023', '22007', '22023'], 'each error carries its own SQLSTATE');
select is((select (r -> 1 ->> 'http_status')::int from raising), 500, 'an error is a 500 to the edge');
select ok((select r -> 1 ->> 'message' like '%p_direction must be long or short%' from raising), 'and says why');
select is(pg_temp.signals_of('aaaaaaaa-0000-0000-0000-000000000011'), 2, 'A''s good alert is stored');
select is(pg_temp.signals_of('bbbbbbbb-0000-0000-0000-000000000011'), 2, 'B''s good alert after the failures is stored');
select is((select count(*)::int from public.webhook_deliveries where body_excerpt in ('A sideways', 'B two')), 0,
  'nothing of a failed alert is written');
select is((select signals_this_period from public.user_config where user_id = 'aaaaaaaa-0000-0000-0000-000000000011'), 2,
  'the failed alert did not count against the quota');
select is((select n from wakeups), 2, 'one more wake-up for the second batch');

-- No accepted alert, no wake-up.
select is((select array_agg(o ->> 'outcome') from jsonb_array_elements(public.ingest_signals(jsonb_build_array(
            pg_temp.alert('aaaaaaaa-0000-0000-0000-000000000011', 'A two', '2026-03-10 12:01:05+00')))) o),
  array['duplicate'], 'a batch of one retry');
select is((select n from wakeups), 2, 'a batch without accepted alerts wakes nobody');
select is(public.ingest_signals('[]'::jsonb), '[]'::jsonb, 'an empty batch is an empty answer');

-- 500 alerts at once for one free-plan trader with 4 signals left this month.
create temp table flood on commit drop as
  select public.ingest_signals((select jsonb_agg(pg_temp.alert('cccccccc-0000-0000-0000-000000000011', 'C ' || i,
                                                               '2026-03-10 12:00:00+00') order by i)
                                  from generate_series(1, 500) i)) as r;
select is((select array_agg(o ->> 'outcome' order by n) from flood, jsonb_array_elements(r) with ordinality as x(o, n) where n <= 5),
  array['accepted', 'accepted', 'accepted', 'accepted', 'quota_exceeded'], 'the first four are accepted, then the quota holds');
select is((select count(*)::int from flood, jsonb_array_elements(r) o where o ->> 'outcome' = 'quota_exceeded'), 496,
  'the other 496 are refused');
select is((select count(*)::int from flood, jsonb_array_elements(r) o
            where o ->> 'outcome' = 'quota_exceeded' and (o ->> 'http_status')::int = 429 and (o ->> 'retry_after')::int > 0), 496,
  'each with 429 and a retry_after');
select is(pg_temp.signals_of('cccccccc-0000-0000-0000-000000000011'), 4, 'exactly the remaining quota is stored');
select results_eq($$ select s.raw_message from public.signals s where s.user_id = 'cccccccc-0000-0000-0000-000000000011' order by s.raw_message $$,
  $$ values ('C 1'), ('C 2'), ('C 3'), ('C 4') $$, 'the first four in arrival order');
select results_eq($$ select s.raw_message from public.signals s where s.user_id = 'cccccccc-0000-0000-0000-000000000011' order by s.created_at $$,
  $$ values ('C 1'), ('C 2'), ('C 3'), ('C 4') $$, 'and they list in that order by created_at, though one transaction stored them');
select is((select signals_this_period from public.user_config where user_id = 'cccccccc-0000-0000-0000-000000000011'), 100,
  'the counter stops at the quota');
select is((select count(*)::int from public.webhook_deliveries where user_id = 'cccccccc-0000-0000-0000-000000000011'), 500,
  'every alert is in the delivery log');
select is((select n from wakeups), 3, 'one wake-up for all 500');

-- Bad calls are refused whole.
select throws_ok($$ select public.ingest_signals('{"p_token": "x"}'::jsonb) $$, '22023', null, 'an object is not a batch');
select throws_ok($$ select public.ingest_signals((select jsonb_agg('{}'::jsonb) from generate_series(1, 1001))) $$, '54000', null,
  'more than 1000 alerts are refused');

-- ingest_signal still works on its own, with its wake-up.
select is((select public.ingest_signal((select token from tok where user_id = 'bbbbbbbb-0000-0000-0000-000000000011'),
                                       '2026-03-10 12:05:00+00', 'B four', null, 'BINANCE:BTCUSDT', 'BINANCE', 'BTCUSDT')
           ->> 'outcome'), 'accepted', 'ingest_signal keeps working');
select is((select n from wakeups), 4, 'and wakes a daemon');

-- The batch's traders are found through the token's index, not by reading every trader's row: with
-- 3,000 traders a batch scans user_config sequentially not once.
insert into auth.users (id, aud, role, email)
select ('dddddddd-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid, 'authenticated', 'authenticated',
       'scan' || n || '@example.test'
  from generate_series(1, 3000) n;
analyze public.user_config;
create temp table scans_before on commit drop as
  select seq_scan from pg_stat_xact_user_tables where relid = 'public.user_config'::regclass;
select public.ingest_signals(jsonb_build_array(
  pg_temp.alert('aaaaaaaa-0000-0000-0000-000000000011', 'A scan 1', '2026-03-10 12:06:00+00'),
  pg_temp.alert('bbbbbbbb-0000-0000-0000-000000000011', 'B scan 1', '2026-03-10 12:06:00+00'),
  pg_temp.alert('aaaaaaaa-0000-0000-0000-000000000011', 'A scan 2', '2026-03-10 12:06:01+00')));
select is((select seq_scan from pg_stat_xact_user_tables where relid = 'public.user_config'::regclass),
          (select seq_scan from scans_before),
  'a batch finds its traders through the token index, not by reading all 3,000');

select * from finish();
rollback;

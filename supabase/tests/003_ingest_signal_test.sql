-- ingest_signal: one test per outcome, with the quota's lazy monthly reset and the rate limit window.
begin;
set local search_path = extensions, public;
select plan(33);

insert into auth.users (id, aud, role, email)
values ('cccccccc-0000-0000-0000-000000000003', 'authenticated', 'authenticated', 'c@example.test');
update public.user_config set quota_period_start = '2026-03-01' where user_id = 'cccccccc-0000-0000-0000-000000000003';
create temp table t on commit drop as
  select webhook_token as token, user_id from public.user_config where user_id = 'cccccccc-0000-0000-0000-000000000003';

create function pg_temp.ingest(p_body text, p_at timestamptz default '2026-03-10 12:00:00+00', p_chart text default null)
returns jsonb language sql as $$
  select public.ingest_signal((select token from t), p_at, p_body, p_chart,
                              'BINANCE:BTCUSDT', 'BINANCE', 'BTCUSDT', 67890.5, 'long', 'alert', '1h', 'Trend Pro', null)
$$;

-- accepted
create temp table first on commit drop as select pg_temp.ingest('BTC long 1') as r;
select is((select r ->> 'outcome' from first), 'accepted', 'a valid alert is accepted');
select is((select (r ->> 'http_status')::int from first), 200, 'accepted maps to 200');
select is((select r ->> 'screenshot_status' from first), 'pending', 'the screenshot starts pending');
select ok((select (r ->> 'estimated_wait')::int > 0 from first), 'an estimated wait is given');
select results_eq($$ select ticker, exchange, symbol, price, direction, interval, indicator_name, raw_message, "timestamp"
                       from public.signals where id = (select (r ->> 'signal_id')::uuid from first) $$,
  $$ values ('BINANCE:BTCUSDT'::text, 'BINANCE'::text, 'BTCUSDT'::text, 67890.5::numeric, 'long'::text, '1h'::text,
             'Trend Pro'::text, 'BTC long 1'::text, '2026-03-10 12:00:00+00'::timestamptz) $$,
  'the signal row carries the parsed fields and the untouched body');
select results_eq($$ select state, priority, attempts from private.capture_jobs
                      where signal_id = (select (r ->> 'signal_id')::uuid from first) $$,
  $$ values ('queued'::text, 4::smallint, 0::smallint) $$, 'a capture job is queued with the free plan''s priority');
select results_eq($$ select outcome, http_status, signal_id from public.webhook_deliveries where user_id = (select user_id from t) $$,
  $$ select 'accepted'::text, 200::smallint, (r ->> 'signal_id')::uuid from first $$, 'the delivery is logged as accepted');
select is((select signals_this_period from public.user_config where user_id = (select user_id from t)), 1,
  'the quota counter counts the signal');

-- duplicate retry: same chart and body within 30 s returns the first signal
select is(pg_temp.ingest('BTC long 1', '2026-03-10 12:00:05+00') ->> 'signal_id', (select r ->> 'signal_id' from first),
  'a retry 5 s later returns the first signal id');
select is(pg_temp.ingest('BTC long 1', '2026-03-10 12:00:20+00') ->> 'outcome', 'duplicate', 'a retry 20 s later is a duplicate');
select is((select count(*)::int from public.signals where user_id = (select user_id from t)), 1, 'retries create no second signal');
select is((select count(*)::int from public.webhook_deliveries where user_id = (select user_id from t) and outcome = 'duplicate'), 2,
  'each retry is logged as a duplicate');
select is(pg_temp.ingest('BTC long 1', '2026-03-10 12:00:05+00', 'ChartB') ->> 'outcome', 'accepted',
  'the same body on another chart is a new signal');
select is(pg_temp.ingest('BTC long 1', '2026-03-10 12:01:00+00') ->> 'outcome', 'accepted',
  'the same body after the window is a new signal');

-- unknown token: 404, nothing written
select results_eq($$ select r ->> 'outcome', (r ->> 'http_status')::int
                       from (select public.ingest_signal('no-such-token-000000000000000000000000000000', now(), 'x') r) x $$,
  $$ values ('unknown_token', 404) $$, 'an unknown token is a 404');
select is((select count(*)::int from public.webhook_deliveries where user_id = (select user_id from t)), 5,
  'an unknown token writes no delivery row');

-- edge rejections are logged for the trader
select results_eq($$ select r ->> 'outcome', (r ->> 'http_status')::int from (select public.ingest_signal((select token from t),
                       '2026-03-10 12:02:00+00', 'hello', null, null, null, null, null, null, null, null, null, null,
                       'no_ticker', 'no ticker found') r) x $$,
  $$ values ('no_ticker', 422) $$, 'a body without ticker is a 422');
select results_eq($$ select outcome, reason, http_status, message, body_excerpt from public.webhook_deliveries
                      where user_id = (select user_id from t) order by id desc limit 1 $$,
  $$ values ('rejected'::text, 'no_ticker'::text, 422::smallint, 'no ticker found'::text, 'hello'::text) $$,
  'the 422 is in the trader''s delivery log with what was sent');
select throws_ok($$ select public.ingest_signal((select token from t), now(), 'x', null, null, null, null, null, null, null,
                      null, null, null, 'made_up', null) $$, '22023', null, 'an unknown rejection code is refused');

-- disabled webhook: 403, logged
update public.user_config set webhook_enabled = false where user_id = (select user_id from t);
select results_eq($$ select r ->> 'outcome', (r ->> 'http_status')::int from (select pg_temp.ingest('BTC long 2', '2026-03-10 12:03:00+00') r) x $$,
  $$ values ('webhook_disabled', 403) $$, 'a disabled webhook is a 403');
select is((select reason from public.webhook_deliveries where user_id = (select user_id from t) order by id desc limit 1),
  'webhook_disabled', 'the 403 is logged');
update public.user_config set webhook_enabled = true where user_id = (select user_id from t);

-- quota: the free plan allows 100 a month; the period resets lazily in the next month
update public.user_config set signals_this_period = 100 where user_id = (select user_id from t);
create temp table over on commit drop as select pg_temp.ingest('BTC long 3', '2026-03-31 23:59:00+00') as r;
select is((select r ->> 'outcome' from over), 'quota_exceeded', 'over the monthly quota is refused');
select is((select (r ->> 'http_status')::int from over), 429, 'quota maps to 429');
select is((select (r ->> 'retry_after')::int from over), 60, 'Retry-After points at the next month (UTC)');
select is(pg_temp.ingest('BTC long 3', '2026-04-01 00:00:30+00') ->> 'outcome', 'accepted',
  'the first alert of the next month is accepted');
select results_eq($$ select quota_period_start, signals_this_period from public.user_config where user_id = (select user_id from t) $$,
  $$ values ('2026-04-01'::date, 1) $$, 'the period reset lazily and counts from one');

-- rate limit: the free plan allows 10 a minute
select is((select count(*)::int from generate_series(2, 10) i
            where pg_temp.ingest('rate ' || i, '2026-04-01 00:00:40+00') ->> 'outcome' = 'accepted'), 9,
  'up to the per-minute limit is accepted');
create temp table limited on commit drop as select pg_temp.ingest('rate 11', '2026-04-01 00:00:50+00') as r;
select is((select r ->> 'outcome' from limited), 'rate_limited', 'one more in the same minute is rate limited');
select is((select (r ->> 'retry_after')::int from limited), 40, 'Retry-After is the rest of the window');
select is((select reason from public.webhook_deliveries where user_id = (select user_id from t) order by id desc limit 1),
  'rate_limited', 'the 429 is logged');
select is(pg_temp.ingest('rate 12', '2026-04-01 00:01:31+00') ->> 'outcome', 'accepted', 'a new window accepts again');

-- callers
set local role authenticated;
set local request.jwt.claims = '{"sub": "cccccccc-0000-0000-0000-000000000003", "role": "authenticated"}';
select throws_ok($$ select public.ingest_signal('x', now(), 'y') $$, '42501', null, 'signed-in users cannot call ingest_signal');
reset role;
set local role service_role;
select is(public.ingest_signal('no-such-token-000000000000000000000000000000', now(), 'x') ->> 'outcome', 'unknown_token',
  'the service role can call ingest_signal');
reset role;

select * from finish();
rollback;

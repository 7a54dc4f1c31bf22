-- ingest_signal's delivery id: a webhook whose first call committed but whose answer was lost, and
-- which the edge spooled and replays later with the same delivery id, is stored once.
begin;
set local search_path = extensions, public;
select plan(24);

insert into auth.users (id, aud, role, email)
values ('dddddddd-0000-0000-0000-000000000008', 'authenticated', 'authenticated', 'd8@example.test'),
       ('eeeeeeee-0000-0000-0000-000000000008', 'authenticated', 'authenticated', 'e8@example.test');
update public.user_config set quota_period_start = '2026-03-01'
 where user_id in ('dddddddd-0000-0000-0000-000000000008', 'eeeeeeee-0000-0000-0000-000000000008');
create temp table t on commit drop as
  select webhook_token as token, user_id from public.user_config where user_id = 'dddddddd-0000-0000-0000-000000000008';
create temp table other on commit drop as
  select webhook_token as token, user_id from public.user_config where user_id = 'eeeeeeee-0000-0000-0000-000000000008';

create function pg_temp.ingest(p_body text, p_at timestamptz, p_delivery uuid,
                               p_token text default null, p_reject text default null)
returns jsonb language sql as $$
  select public.ingest_signal(coalesce(p_token, (select token from t)), p_at, p_body, null,
                              'BINANCE:BTCUSDT', 'BINANCE', 'BTCUSDT', 67890.5, 'long', 'alert', '1h', 'Trend Pro', null,
                              p_reject, case when p_reject is not null then 'no ticker found' end, p_delivery)
$$;
create function pg_temp.signals_with(p_body text) returns int language sql as $$
  select count(*)::int from public.signals where raw_message = p_body
$$;

-- The signature: one function, the delivery id last and optional, for the service role only.
select is((select count(*)::int from pg_proc where proname = 'ingest_signal' and pronamespace = 'public'::regnamespace), 1,
  'ingest_signal has no overload left (PostgREST refuses ambiguous overloads)');
select is((select pg_get_function_arguments('public.ingest_signal'::regproc) like '%, p_delivery_id uuid DEFAULT NULL::uuid'), true,
  'p_delivery_id is the last parameter, defaulting to null');
select ok(has_function_privilege('service_role', 'public.ingest_signal(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text, uuid)', 'execute')
          and not has_function_privilege('authenticated', 'public.ingest_signal(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text, uuid)', 'execute')
          and not has_function_privilege('anon', 'public.ingest_signal(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text, uuid)', 'execute'),
  'only the service role can call it');
select has_index('public', 'webhook_deliveries', 'webhook_deliveries_user_delivery_idx', array['user_id', 'delivery_id'],
  'accepted delivery ids are indexed per trader');

-- The first call commits (its answer is lost on the way back to the edge).
create temp table first on commit drop as
  select pg_temp.ingest('BTC long spooled', '2026-03-10 12:00:00+00', '01890a5d-ac96-774b-bcce-b302099a8057') as r;
select is((select r ->> 'outcome' from first), 'accepted', 'the first call is accepted');
select is((select delivery_id from public.webhook_deliveries where signal_id = (select (r ->> 'signal_id')::uuid from first)),
  '01890a5d-ac96-774b-bcce-b302099a8057'::uuid, 'the delivery log records the delivery id');

-- Other alerts of the same trader arrive meanwhile.
select is(pg_temp.ingest('ETH short', '2026-03-10 12:01:00+00', gen_random_uuid()) ->> 'outcome', 'accepted', 'another alert');
select is(pg_temp.ingest('SOL long', '2026-03-10 12:02:00+00', null) ->> 'outcome', 'accepted', 'an alert without delivery id');

-- The replay, ten minutes later: far outside the 30 s fingerprint window.
create temp table quota_before on commit drop as
  select signals_this_period, rate_window_count from public.user_config where user_id = (select user_id from t);
create temp table replay on commit drop as
  select pg_temp.ingest('BTC long spooled', '2026-03-10 12:00:00+00', '01890a5d-ac96-774b-bcce-b302099a8057') as r;
select is((select r ->> 'outcome' from replay), 'duplicate', 'the replay is a duplicate');
select is((select (r ->> 'http_status')::int from replay), 200, 'a duplicate maps to 200');
select is((select r ->> 'signal_id' from replay), (select r ->> 'signal_id' from first), 'the replay returns the first signal id');
select is((select r ->> 'screenshot_status' from replay), 'pending', 'with the first signal''s screenshot status');
select is(pg_temp.signals_with('BTC long spooled'), 1, 'no second signal');
select results_eq($$ select signals_this_period, rate_window_count from public.user_config where user_id = (select user_id from t) $$,
  $$ select * from quota_before $$, 'a replay uses no quota and no rate limit');
select results_eq($$ select outcome, http_status, signal_id from public.webhook_deliveries
                      where user_id = (select user_id from t) and delivery_id = '01890a5d-ac96-774b-bcce-b302099a8057' order by id $$,
  $$ select 'accepted'::text, 200::smallint, (r ->> 'signal_id')::uuid from first
     union all select 'duplicate'::text, 200::smallint, (r ->> 'signal_id')::uuid from first $$,
  'the trader''s log shows the delivery accepted once and its replay as a duplicate');

-- Without the delivery id the same late resend would have been a second signal.
select is(pg_temp.ingest('BTC long spooled', '2026-03-10 12:10:00+00', null) ->> 'outcome', 'accepted',
  'the fingerprint window alone does not catch a late replay');

-- A replay gets the first answer even when the webhook was disabled meanwhile.
update public.user_config set webhook_enabled = false where user_id = (select user_id from t);
select is(pg_temp.ingest('BTC long spooled', '2026-03-10 12:00:00+00', '01890a5d-ac96-774b-bcce-b302099a8057') ->> 'outcome',
  'duplicate', 'a replay after the webhook was disabled is still the first answer');
update public.user_config set webhook_enabled = true where user_id = (select user_id from t);

-- Ids are per trader: another trader's delivery with the same id is theirs alone.
create temp table theirs on commit drop as
  select pg_temp.ingest('BTC long spooled', '2026-03-10 12:20:00+00', '01890a5d-ac96-774b-bcce-b302099a8057',
                        (select token from other)) as r;
select is((select r ->> 'outcome' from theirs), 'accepted', 'the same id on another trader''s token is a new delivery');
select isnt((select r ->> 'signal_id' from theirs), (select r ->> 'signal_id' from first), 'and never reveals the first trader''s signal');

-- Only accepted deliveries count: a rejected first call is decided afresh at replay.
select is(pg_temp.ingest('no ticker here', '2026-03-10 12:30:00+00', '01890a5d-ac96-774b-bcce-b302099a8058', null, 'no_ticker') ->> 'outcome',
  'no_ticker', 'a first call can be rejected');
select is(pg_temp.ingest('BTC long after fix', '2026-03-10 12:31:00+00', '01890a5d-ac96-774b-bcce-b302099a8058') ->> 'outcome',
  'accepted', 'a later call with that id is decided on its own');

-- The trader deleted the signal: a replay still stores nothing new.
delete from public.signals where id = (select (r ->> 'signal_id')::uuid from first);
select is(pg_temp.ingest('BTC long spooled', '2026-03-10 12:00:00+00', '01890a5d-ac96-774b-bcce-b302099a8057') ->> 'outcome',
  'duplicate', 'a replay of a delivery whose signal was deleted is still a duplicate');
select is(pg_temp.signals_with('BTC long spooled'), 2, 'and does not bring the deleted signal back (two others remain)');

-- The database itself refuses a second accepted row for one trader and delivery id.
select throws_ok($$ insert into public.webhook_deliveries (user_id, received_at, outcome, http_status, delivery_id)
                    values ((select user_id from t), now(), 'accepted', 200, '01890a5d-ac96-774b-bcce-b302099a8057') $$,
  '23505', null, 'at most one accepted delivery per trader and delivery id');

select * from finish();
rollback;

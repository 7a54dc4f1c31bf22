-- ingest_signal and ingest_signals: how the webhook edge stores alerts. Every business rule lives
-- in one function, private.ingest_alert, so that every ingest replica, the PostgREST path, the
-- direct-pool path and the spool's replay obey the same rules, one alert at a time or in batches.
--
--   public.ingest_signal(...)    one alert: private.ingest_alert, then the wake-up. Kept for anyone
--                                who calls it (and for scripts/bench db, which measures the wake-up).
--   public.ingest_signals(jsonb) the edge's call: an array of alerts, each an object of
--                                ingest_signal's named arguments. In one transaction, in array
--                                order, each alert is decided by the same private.ingest_alert in a
--                                subtransaction of its own: one alert that raises is answered with
--                                its own error (outcome 'error' with its SQLSTATE) and never fails the
--                                others. One outcome per alert comes back, in order, and a daemon is
--                                woken at most once per batch. Every trader of the batch is locked up
--                                front in user_id order, so two batches that share traders wait for
--                                each other instead of deadlocking, and each trader's alerts are
--                                decided in array order: the quota admits exactly the remaining
--                                signals, the first ones. Batches stay small (the edge sends at most
--                                64; more than 1000 are refused): each alert that writes takes a
--                                subtransaction id, and past 64 in one transaction Postgres's
--                                per-backend cache of them overflows, which slows every other
--                                session's snapshots.
--
-- What private.ingest_alert decides for one alert, in this order:
--   1. unknown token           -> unknown_token (404); nothing is written (no trader to attribute to).
--   2. replay of a delivery that was already accepted (p_delivery_id seen before for this trader)
--                              -> duplicate (200) with the first signal's id, however late it comes
--                                 and whatever arrived in between. The edge sends one delivery id
--                                 with every call for one webhook, so a call that committed but whose
--                                 answer was lost (timeout, crash), spooled and replayed minutes
--                                 later, is not stored twice: it gets the answer the first call got.
--   3. webhook disabled        -> webhook_disabled (403), logged in webhook_deliveries.
--   4. edge rejection          -> the edge's code (no_ticker 422, invalid_body 400, body_too_large
--                                 413), logged, so the trader sees why an alert did not land.
--   5. retry of an accepted alert (same trader, chart and body within 30 s of each other)
--                              -> duplicate (200) with the first signal's id; no second signal.
--                                 Checked before quota and rate limit: a retry gets the first answer.
--   6. monthly quota           -> quota_exceeded (429, retry_after = seconds to the next month, UTC).
--                                 The period resets lazily here when a signal arrives in a new month.
--   7. per-minute rate limit   -> rate_limited (429, retry_after = seconds to the window's end).
--   8. accepted (200)          -> signal row (pending), capture job with the plan's priority, dedup
--                                 fingerprint, counters, delivery row; the caller then wakes a daemon.
-- The trader's user_config row is locked (FOR UPDATE) until the transaction ends, so concurrent alerts
-- of one trader are decided one after another: the quota admits exactly its limit, never one more,
-- and a replay waits for a first call still in flight with the same delivery id, then sees it.
-- Delivery ids are kept on webhook_deliveries (a unique partial index over accepted rows), as long
-- as the delivery log itself; without p_delivery_id (older callers) the call costs nothing extra.
--
-- The wake-up: NOTIFY serialises every committing transaction on a global lock, so it is sent only
-- when a capture daemon has said it is idle (private.capture_daemon_idle()), once per idle period.

create or replace function private.wake_capture_daemon()
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  -- Shared with every other ingest; conflicts only with capture_daemon_idle()'s exclusive lock,
  -- which therefore waits until this transaction has committed its job before the daemon rescans.
  perform pg_advisory_xact_lock_shared(private.capture_wakeup_lock_key());
  if (select w.daemon_waiting from private.capture_wakeup w) then
    update private.capture_wakeup set daemon_waiting = false where daemon_waiting;
    if found then
      perform pg_notify('capture_jobs', '');
    end if;
  end if;
end;
$$;
comment on function private.wake_capture_daemon() is 'NOTIFY capture_jobs, but only when a daemon announced it is idle (once per idle period).';
revoke all on function private.wake_capture_daemon() from public, anon, authenticated, service_role;

-- The signature before p_delivery_id: dropped so that no overload remains (PostgREST refuses to
-- choose between overloads that both match a call).
drop function if exists public.ingest_signal(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text);

create or replace function private.ingest_alert(
  p_token text,
  p_received_at timestamptz,
  p_raw_message text,
  p_chart_id text default null,
  p_ticker text default null,
  p_exchange text default null,
  p_symbol text default null,
  p_price numeric default null,
  p_direction text default null,
  p_signal_type text default null,
  p_interval text default null,
  p_indicator_name text default null,
  p_signal_time timestamptz default null,
  p_reject_code text default null,
  p_reject_message text default null,
  p_delivery_id uuid default null
)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  c_dedup_window constant interval := interval '30 seconds';
  c_rate_window constant interval := interval '1 minute';
  v_cfg public.user_config;
  v_plan public.plans;
  v_fingerprint bytea;
  v_dup record;
  v_period date;
  v_signal_id uuid;
  v_retry_after integer;
  v_status smallint;
  v_message text;
  v_excerpt text := left(p_raw_message, 500);
begin
  if p_token is null or p_received_at is null or p_raw_message is null then
    raise exception 'ingest_alert: p_token, p_received_at and p_raw_message are required'
      using errcode = '22004';
  end if;

  select * into v_cfg from public.user_config where webhook_token = p_token for update;
  if not found then
    return jsonb_build_object('outcome', 'unknown_token', 'http_status', 404,
      'message', 'no webhook exists for this token');
  end if;
  select * into strict v_plan from public.plans where id = v_cfg.plan;

  if p_delivery_id is not null then
    select d.signal_id, s.screenshot_status into v_dup
      from public.webhook_deliveries d
      left join public.signals s on s.id = d.signal_id
     where d.user_id = v_cfg.user_id
       and d.delivery_id = p_delivery_id
       and d.outcome = 'accepted';
    if found then
      insert into public.webhook_deliveries (user_id, received_at, outcome, http_status, message, signal_id, chart_id,
                                             body_excerpt, delivery_id)
      values (v_cfg.user_id, p_received_at, 'duplicate', 200,
              'this delivery was already accepted (a replay after a lost answer): the first signal was kept',
              v_dup.signal_id, left(p_chart_id, 64), v_excerpt, p_delivery_id);
      return jsonb_build_object('outcome', 'duplicate', 'http_status', 200, 'signal_id', v_dup.signal_id,
        'screenshot_status', v_dup.screenshot_status,
        'estimated_wait', private.estimated_capture_wait(v_plan.capture_priority));
    end if;
  end if;

  if not v_cfg.webhook_enabled then
    v_message := 'this webhook is disabled; enable it in your dashboard';
    insert into public.webhook_deliveries (user_id, received_at, outcome, reason, http_status, message, chart_id, body_excerpt, delivery_id)
    values (v_cfg.user_id, p_received_at, 'rejected', 'webhook_disabled', 403, v_message, left(p_chart_id, 64), v_excerpt, p_delivery_id);
    return jsonb_build_object('outcome', 'webhook_disabled', 'http_status', 403, 'message', v_message);
  end if;

  if p_reject_code is not null then
    v_status := case p_reject_code
      when 'no_ticker' then 422
      when 'invalid_body' then 400
      when 'body_too_large' then 413
    end;
    if v_status is null then
      raise exception 'ingest_alert: unknown p_reject_code %', p_reject_code using errcode = '22023';
    end if;
    v_message := left(coalesce(p_reject_message, p_reject_code), 1000);
    insert into public.webhook_deliveries (user_id, received_at, outcome, reason, http_status, message, chart_id, body_excerpt, delivery_id)
    values (v_cfg.user_id, p_received_at, 'rejected', p_reject_code, v_status, v_message, left(p_chart_id, 64), v_excerpt, p_delivery_id);
    return jsonb_build_object('outcome', p_reject_code, 'http_status', v_status, 'message', v_message);
  end if;

  if p_ticker is null or p_symbol is null then
    raise exception 'ingest_alert: p_ticker and p_symbol are required for a signal' using errcode = '22004';
  end if;
  if p_direction is not null and p_direction not in ('long', 'short') then
    raise exception 'ingest_alert: p_direction must be long or short' using errcode = '22023';
  end if;

  v_fingerprint := sha256(convert_to(coalesce(p_chart_id, '') || E'\n' || p_raw_message, 'UTF8'));
  select d.signal_id, s.screenshot_status into v_dup
    from private.signal_dedup d
    join public.signals s on s.id = d.signal_id
   where d.user_id = v_cfg.user_id
     and d.fingerprint = v_fingerprint
     and d.received_at >= p_received_at - c_dedup_window
     and d.received_at <= p_received_at + c_dedup_window;
  if found then
    insert into public.webhook_deliveries (user_id, received_at, outcome, http_status, message, signal_id, chart_id, body_excerpt, delivery_id)
    values (v_cfg.user_id, p_received_at, 'duplicate', 200,
            'same alert received again within 30 seconds (a retry): the first signal was kept',
            v_dup.signal_id, left(p_chart_id, 64), v_excerpt, p_delivery_id);
    return jsonb_build_object('outcome', 'duplicate', 'http_status', 200, 'signal_id', v_dup.signal_id,
      'screenshot_status', v_dup.screenshot_status,
      'estimated_wait', private.estimated_capture_wait(v_plan.capture_priority));
  end if;

  -- Lazy monthly reset: the first signal of a new month (UTC) starts the new period.
  v_period := (date_trunc('month', p_received_at at time zone 'UTC'))::date;
  if v_period > v_cfg.quota_period_start then
    v_cfg.quota_period_start := v_period;
    v_cfg.signals_this_period := 0;
  end if;
  if v_cfg.signals_this_period >= v_plan.monthly_signal_quota then
    v_retry_after := greatest(1, ceil(extract(epoch from
      ((v_cfg.quota_period_start + interval '1 month')::timestamp at time zone 'UTC') - p_received_at)))::integer;
    v_message := format('monthly quota of %s signals reached on the %s plan; it resets at the start of next month (UTC)',
                        v_plan.monthly_signal_quota, v_plan.name);
    insert into public.webhook_deliveries (user_id, received_at, outcome, reason, http_status, message, chart_id, body_excerpt, delivery_id)
    values (v_cfg.user_id, p_received_at, 'rejected', 'quota_exceeded', 429, v_message, left(p_chart_id, 64), v_excerpt, p_delivery_id);
    return jsonb_build_object('outcome', 'quota_exceeded', 'http_status', 429, 'message', v_message,
      'retry_after', v_retry_after);
  end if;

  if p_received_at >= v_cfg.rate_window_started_at + c_rate_window then
    v_cfg.rate_window_started_at := p_received_at;
    v_cfg.rate_window_count := 0;
  end if;
  if v_cfg.rate_window_count >= v_plan.rate_limit_per_minute then
    v_retry_after := greatest(1, ceil(extract(epoch from
      v_cfg.rate_window_started_at + c_rate_window - p_received_at)))::integer;
    v_message := format('rate limit of %s signals per minute reached on the %s plan',
                        v_plan.rate_limit_per_minute, v_plan.name);
    insert into public.webhook_deliveries (user_id, received_at, outcome, reason, http_status, message, chart_id, body_excerpt, delivery_id)
    values (v_cfg.user_id, p_received_at, 'rejected', 'rate_limited', 429, v_message, left(p_chart_id, 64), v_excerpt, p_delivery_id);
    return jsonb_build_object('outcome', 'rate_limited', 'http_status', 429, 'message', v_message,
      'retry_after', v_retry_after);
  end if;

  -- created_at is the clock, not now(): the alerts of one ingest_signals batch share a transaction,
  -- and a trader's signals must still list in the order they were decided.
  insert into public.signals (user_id, indicator_name, ticker, exchange, symbol, price, signal_type,
                              direction, interval, chart_id, raw_message, "timestamp", created_at)
  values (v_cfg.user_id, p_indicator_name, p_ticker, p_exchange, p_symbol, p_price, p_signal_type,
          p_direction, p_interval, coalesce(p_chart_id, v_cfg.default_chart_id), p_raw_message,
          coalesce(p_signal_time, p_received_at), clock_timestamp())
  returning id into v_signal_id;

  insert into private.capture_jobs (signal_id, priority, run_at)
  values (v_signal_id, v_plan.capture_priority, now());

  insert into private.signal_dedup as d (user_id, fingerprint, signal_id, received_at)
  values (v_cfg.user_id, v_fingerprint, v_signal_id, p_received_at)
  on conflict (fingerprint, user_id) do update
    set signal_id = excluded.signal_id, received_at = excluded.received_at;
  -- Fingerprints older than the window can never match again; each accept clears its trader's.
  delete from private.signal_dedup
   where user_id = v_cfg.user_id and received_at < p_received_at - c_dedup_window;

  update public.user_config
     set quota_period_start = v_cfg.quota_period_start,
         signals_this_period = v_cfg.signals_this_period + 1,
         rate_window_started_at = v_cfg.rate_window_started_at,
         rate_window_count = v_cfg.rate_window_count + 1
   where user_id = v_cfg.user_id;

  insert into public.webhook_deliveries (user_id, received_at, outcome, http_status, signal_id, chart_id, body_excerpt, delivery_id)
  values (v_cfg.user_id, p_received_at, 'accepted', 200, v_signal_id, left(p_chart_id, 64), v_excerpt, p_delivery_id);

  return jsonb_build_object('outcome', 'accepted', 'http_status', 200, 'signal_id', v_signal_id,
    'screenshot_status', 'pending',
    'estimated_wait', private.estimated_capture_wait(v_plan.capture_priority));
end;
$$;
comment on function private.ingest_alert(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text, uuid) is
  'The rules of one alert (unknown/duplicate delivery/disabled/rejected/retry/quota/rate limit/accepted), without the wake-up: called by ingest_signal and ingest_signals only.';
revoke all on function private.ingest_alert(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text, uuid) from public, anon, authenticated, service_role;

create or replace function public.ingest_signal(
  p_token text,
  p_received_at timestamptz,
  p_raw_message text,
  p_chart_id text default null,
  p_ticker text default null,
  p_exchange text default null,
  p_symbol text default null,
  p_price numeric default null,
  p_direction text default null,
  p_signal_type text default null,
  p_interval text default null,
  p_indicator_name text default null,
  p_signal_time timestamptz default null,
  p_reject_code text default null,
  p_reject_message text default null,
  p_delivery_id uuid default null
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  v_outcome jsonb;
begin
  v_outcome := private.ingest_alert(p_token, p_received_at, p_raw_message, p_chart_id, p_ticker, p_exchange,
                                    p_symbol, p_price, p_direction, p_signal_type, p_interval,
                                    p_indicator_name, p_signal_time, p_reject_code, p_reject_message,
                                    p_delivery_id);
  if v_outcome ->> 'outcome' = 'accepted' then
    perform private.wake_capture_daemon();
  end if;
  return v_outcome;
end;
$$;
comment on function public.ingest_signal(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text, uuid) is
  'One alert: decides unknown/disabled/rejected/duplicate/quota/rate limit/accepted in one transaction (private.ingest_alert), then wakes a daemon. p_delivery_id makes a replayed call idempotent. The edge calls ingest_signals. Service role only.';
revoke all on function public.ingest_signal(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text, uuid)
  from public, anon, authenticated, service_role;
grant execute on function public.ingest_signal(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text, uuid)
  to service_role;

create or replace function public.ingest_signals(p_alerts jsonb)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  c_max_alerts constant integer := 1000;
  v_alert jsonb;
  v_outcome jsonb;
  v_outcomes jsonb[] := array[]::jsonb[];
  v_any_accepted boolean := false;
  v_state text;
  v_message text;
begin
  if p_alerts is null or jsonb_typeof(p_alerts) <> 'array' then
    raise exception 'ingest_signals: p_alerts must be a JSON array of alerts' using errcode = '22023';
  end if;
  if jsonb_array_length(p_alerts) > c_max_alerts then
    raise exception 'ingest_signals: at most % alerts per call', c_max_alerts using errcode = '54000';
  end if;

  -- Every trader of the batch, locked in one order (see the header). The tokens as an array, so
  -- the rows are found through the token's index: written as `in (select ...)` the planner guesses
  -- a hundred tokens and reads every trader's row instead, once per batch (with the visibility
  -- checks of rows other batches hold locked): at a few thousand traders that scan was most of the
  -- database's time per alert.
  perform 1 from public.user_config c
   where c.webhook_token = any (array(select distinct a ->> 'p_token' from jsonb_array_elements(p_alerts) a))
   order by c.user_id
     for update;

  for v_alert in select a from jsonb_array_elements(p_alerts) with ordinality as t(a, n) order by n loop
    begin
      if jsonb_typeof(v_alert) <> 'object' then
        raise exception 'ingest_signals: each alert must be a JSON object' using errcode = '22023';
      end if;
      v_outcome := private.ingest_alert(
        p_token => v_alert ->> 'p_token',
        p_received_at => (v_alert ->> 'p_received_at')::timestamptz,
        p_raw_message => v_alert ->> 'p_raw_message',
        p_chart_id => v_alert ->> 'p_chart_id',
        p_ticker => v_alert ->> 'p_ticker',
        p_exchange => v_alert ->> 'p_exchange',
        p_symbol => v_alert ->> 'p_symbol',
        p_price => (v_alert ->> 'p_price')::numeric,
        p_direction => v_alert ->> 'p_direction',
        p_signal_type => v_alert ->> 'p_signal_type',
        p_interval => v_alert ->> 'p_interval',
        p_indicator_name => v_alert ->> 'p_indicator_name',
        p_signal_time => (v_alert ->> 'p_signal_time')::timestamptz,
        p_reject_code => v_alert ->> 'p_reject_code',
        p_reject_message => v_alert ->> 'p_reject_message',
        p_delivery_id => (v_alert ->> 'p_delivery_id')::uuid);
    exception when others then
      -- Everything this alert wrote is rolled back with its subtransaction; the others stand.
      get stacked diagnostics v_state = returned_sqlstate, v_message = message_text;
      v_outcome := jsonb_build_object('outcome', 'error', 'http_status', 500, 'sqlstate', v_state,
                                      'message', v_message);
    end;
    v_any_accepted := v_any_accepted or v_outcome ->> 'outcome' = 'accepted';
    v_outcomes := v_outcomes || v_outcome;
  end loop;

  if v_any_accepted then
    perform private.wake_capture_daemon();
  end if;
  return to_jsonb(v_outcomes);
end;
$$;
comment on function public.ingest_signals(jsonb) is
  'The webhook edge''s batched call: ingest_signal''s rules for each alert of a JSON array, in order, one outcome each (an alert that raises gets outcome error and fails no other), one transaction, at most one wake-up. Service role only.';
revoke all on function public.ingest_signals(jsonb) from public, anon, authenticated, service_role;
grant execute on function public.ingest_signals(jsonb) to service_role;

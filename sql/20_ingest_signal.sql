-- ingest_signal: the one call the webhook edge makes per alert. Every business rule lives here so
-- that every ingest replica, the PostgREST path and the direct-pool path obey the same rules.
--
-- Guarantees, in the order they are decided, in one transaction:
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
--                                 fingerprint, counters, delivery row, and a daemon wake-up.
-- The trader's user_config row is locked (FOR UPDATE) for the whole decision, so concurrent alerts
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
    raise exception 'ingest_signal: p_token, p_received_at and p_raw_message are required'
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
      raise exception 'ingest_signal: unknown p_reject_code %', p_reject_code using errcode = '22023';
    end if;
    v_message := left(coalesce(p_reject_message, p_reject_code), 1000);
    insert into public.webhook_deliveries (user_id, received_at, outcome, reason, http_status, message, chart_id, body_excerpt, delivery_id)
    values (v_cfg.user_id, p_received_at, 'rejected', p_reject_code, v_status, v_message, left(p_chart_id, 64), v_excerpt, p_delivery_id);
    return jsonb_build_object('outcome', p_reject_code, 'http_status', v_status, 'message', v_message);
  end if;

  if p_ticker is null or p_symbol is null then
    raise exception 'ingest_signal: p_ticker and p_symbol are required for a signal' using errcode = '22004';
  end if;
  if p_direction is not null and p_direction not in ('long', 'short') then
    raise exception 'ingest_signal: p_direction must be long or short' using errcode = '22023';
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

  insert into public.signals (user_id, indicator_name, ticker, exchange, symbol, price, signal_type,
                              direction, interval, chart_id, raw_message, "timestamp")
  values (v_cfg.user_id, p_indicator_name, p_ticker, p_exchange, p_symbol, p_price, p_signal_type,
          p_direction, p_interval, coalesce(p_chart_id, v_cfg.default_chart_id), p_raw_message,
          coalesce(p_signal_time, p_received_at))
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

  perform private.wake_capture_daemon();

  return jsonb_build_object('outcome', 'accepted', 'http_status', 200, 'signal_id', v_signal_id,
    'screenshot_status', 'pending',
    'estimated_wait', private.estimated_capture_wait(v_plan.capture_priority));
end;
$$;
comment on function public.ingest_signal(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text, uuid) is
  'The webhook edge''s one call per alert: decides unknown/disabled/rejected/duplicate/quota/rate limit/accepted in one transaction. p_delivery_id makes a replayed call idempotent. Service role only.';
revoke all on function public.ingest_signal(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text, uuid)
  from public, anon, authenticated, service_role;
grant execute on function public.ingest_signal(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text, uuid)
  to service_role;

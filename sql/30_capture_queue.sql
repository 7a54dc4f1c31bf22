-- The capture queue: private.capture_jobs, worked by capture daemons over a direct Postgres session.
--
-- Guarantees:
--   * claim_capture_jobs() hands out up to N due jobs by (priority, run_at) in one short statement
--     (FOR UPDATE SKIP LOCKED in a materialized CTE over capture_jobs_ready_idx), so two workers never
--     hold the same job. Each claim counts an attempt and sets a fresh lease token and a lease that
--     must outlive the job timeout (at least 10 s; the daemon uses timeout + margin).
--   * complete/skip/fail/release act only with the current lease token: a worker whose lease expired
--     and was reclaimed gets `false`/'stale' and its result is thrown away.
--   * complete_capture_job() may carry a note for the trader about the stored picture (the chart
--     showed another symbol than the alert's, say); it lands in screenshot_error, null otherwise.
--   * complete_capture_job() records which worker (the lease holder's id) completed the job, at which
--     attempt, in private.capture_completions: the job row is deleted, and the per-daemon share of
--     the work would be lost with it. At most one such row per signal (its primary key).
--   * capture_queue_status() counts dead letters over capture_jobs_failed_idx, not the whole queue.
--   * fail_capture_job() retries after 2 s, 4 s, 8 s ... (2^attempt s, + up to 10 % jitter) and
--     dead-letters the job as `failed`, keeping the reason, once max_attempts (default 3) are used or
--     the failure is not retryable (an expired TradingView session, say).
--   * reclaim_expired_capture_jobs() returns jobs whose worker vanished to the queue, or dead-letters
--     them when their attempts are used up, so a crash-looping job still runs out.
--   * What the trader sees on public.signals moves only pending -> processing -> completed | failed |
--     skipped. Re-claims, retries and lease renewals do not touch the signal row, so Realtime
--     subscribers see no churn.
--   * capture_daemon_idle() + private.wake_capture_daemon(): a daemon about to sleep raises a flag
--     under an exclusive advisory lock (waiting for in-flight ingests to commit), then rescans; the
--     next ingest that sees the flag clears it and sends one NOTIFY capture_jobs. No lost wake-ups,
--     and no NOTIFY on the hot path while daemons are busy.
-- All are SECURITY DEFINER with an empty search_path and executable by service_role only.

create or replace function private.capture_retry_delay(p_attempts integer)
returns interval
language sql
volatile
set search_path = ''
as $$
  select make_interval(secs => power(2, least(greatest(p_attempts, 1), 10)) * (1 + 0.1 * random()));
$$;
comment on function private.capture_retry_delay(integer) is 'Backoff after the Nth failed attempt: 2^N seconds plus up to 10% jitter (2 s, 4 s, 8 s, ...).';
revoke all on function private.capture_retry_delay(integer) from public, anon, authenticated, service_role;

create or replace function private.claim_capture_jobs(
  p_worker_id text,
  p_limit integer,
  p_lease interval default interval '90 seconds'
)
returns table (
  signal_id uuid,
  lease_token uuid,
  attempt smallint,
  max_attempts smallint,
  priority smallint,
  user_id uuid,
  ticker text,
  exchange text,
  symbol text,
  price numeric,
  direction text,
  chart_interval text,
  chart_id text,
  signal_time timestamptz,
  indicator_name text,
  tradingview_cookies_sealed bytea,
  cookies_valid boolean,
  screenshot_resolution text,
  chart_theme text
)
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  if p_worker_id is null or length(p_worker_id) not between 1 and 200 then
    raise exception 'claim_capture_jobs: worker id must be 1 to 200 characters' using errcode = '22023';
  end if;
  if p_limit is null or p_limit not between 1 and 100 then
    raise exception 'claim_capture_jobs: limit must be between 1 and 100' using errcode = '22023';
  end if;
  if p_lease is null or p_lease < interval '10 seconds' or p_lease > interval '1 hour' then
    raise exception 'claim_capture_jobs: lease must be between 10 seconds and 1 hour' using errcode = '22023';
  end if;

  return query
  with next as materialized (
    select j.signal_id
      from private.capture_jobs j
     where j.state = 'queued' and j.run_at <= now()
     order by j.priority, j.run_at
     limit p_limit
       for update skip locked
  ), claimed as (
    update private.capture_jobs j
       set state = 'running',
           attempts = j.attempts + 1,
           lease_token = gen_random_uuid(),
           locked_by = p_worker_id,
           lease_expires_at = now() + p_lease
      from next
     where j.signal_id = next.signal_id
    returning j.signal_id, j.lease_token, j.attempts, j.max_attempts, j.priority, j.run_at
  ), shown as (
    update public.signals s
       set screenshot_status = 'processing'
      from claimed c
     where s.id = c.signal_id and s.screenshot_status = 'pending'
    returning s.id
  )
  select c.signal_id, c.lease_token, c.attempts, c.max_attempts, c.priority,
         s.user_id, s.ticker, s.exchange, s.symbol, s.price, s.direction, s.interval, s.chart_id,
         s."timestamp", s.indicator_name,
         u.tradingview_cookies_sealed, u.cookies_valid, u.screenshot_resolution, u.chart_theme
    from claimed c
    join public.signals s on s.id = c.signal_id
    join public.user_config u on u.user_id = s.user_id
   order by c.priority, c.run_at;
end;
$$;
comment on function private.claim_capture_jobs(text, integer, interval) is
  'Claims up to p_limit due jobs by (priority, run_at) under a lease, with everything a capture needs.';

-- p_note (since issue 13): what the trader should know about a picture that was stored, e.g. that
-- the chart showed another symbol than the alert's. It lands in screenshot_error (null otherwise):
-- on a completed signal that column is a note about the picture, as retention's is.
drop function if exists private.complete_capture_job(uuid, uuid, text, text);
create or replace function private.complete_capture_job(
  p_signal_id uuid,
  p_lease_token uuid,
  p_screenshot_path text,
  p_screenshot_url text default null,
  p_note text default null
)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  v_worker text;
  v_attempt smallint;
begin
  if p_screenshot_path is null or length(p_screenshot_path) not between 1 and 1024 then
    raise exception 'complete_capture_job: screenshot path must be 1 to 1024 characters' using errcode = '22023';
  end if;
  delete from private.capture_jobs j
   where j.signal_id = p_signal_id and j.lease_token = p_lease_token and j.state = 'running'
  returning j.locked_by, j.attempts into v_worker, v_attempt;
  if not found then
    return false;
  end if;
  insert into private.capture_completions (signal_id, worker_id, attempt)
  -- Every claim sets locked_by; only a row edited by hand could lack it.
  values (p_signal_id, coalesce(v_worker, 'unknown'), greatest(v_attempt, 1));
  update public.signals
     set screenshot_status = 'completed', screenshot_path = p_screenshot_path,
         screenshot_url = p_screenshot_url, screenshot_error = left(nullif(p_note, ''), 2000)
   where id = p_signal_id;
  return true;
end;
$$;
comment on function private.complete_capture_job(uuid, uuid, text, text, text) is
  'Marks the signal completed with its screenshot (and a note for the trader, if any), if the caller still holds the lease; false for a stale worker.';

create or replace function private.skip_capture_job(p_signal_id uuid, p_lease_token uuid, p_reason text)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  delete from private.capture_jobs
   where signal_id = p_signal_id and lease_token = p_lease_token and state = 'running';
  if not found then
    return false;
  end if;
  update public.signals
     set screenshot_status = 'skipped', screenshot_error = left(p_reason, 2000)
   where id = p_signal_id;
  return true;
end;
$$;
comment on function private.skip_capture_job(uuid, uuid, text) is
  'Marks the signal skipped (no screenshot will be taken) with the reason, if the caller still holds the lease.';

create or replace function private.fail_capture_job(
  p_signal_id uuid,
  p_lease_token uuid,
  p_reason text,
  p_retryable boolean default true
)
returns table (outcome text, retry_at timestamptz)
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  v_job private.capture_jobs;
  v_reason text := left(coalesce(nullif(p_reason, ''), 'capture failed'), 2000);
begin
  select * into v_job
    from private.capture_jobs j
   where j.signal_id = p_signal_id and j.lease_token = p_lease_token and j.state = 'running'
     for update;
  if not found then
    return query select 'stale'::text, null::timestamptz;
    return;
  end if;

  if p_retryable and v_job.attempts < v_job.max_attempts then
    update private.capture_jobs j
       set state = 'queued', run_at = now() + private.capture_retry_delay(v_job.attempts),
           lease_token = null, locked_by = null, lease_expires_at = null, last_error = v_reason
     where j.signal_id = p_signal_id
    returning 'retry'::text, j.run_at into outcome, retry_at;
    return next;
    return;
  end if;

  update private.capture_jobs j
     set state = 'failed', lease_token = null, locked_by = null, lease_expires_at = null, last_error = v_reason
   where j.signal_id = p_signal_id;
  update public.signals s
     set screenshot_status = 'failed', screenshot_error = v_reason
   where s.id = p_signal_id;
  return query select 'failed'::text, null::timestamptz;
end;
$$;
comment on function private.fail_capture_job(uuid, uuid, text, boolean) is
  'Records a failed attempt: retry after 2^attempt s (+jitter), or dead-letter as failed with the reason. ''stale'' when the lease was lost.';

create or replace function private.release_capture_job(p_signal_id uuid, p_lease_token uuid)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  -- A job given back on shutdown was not the job's fault: its attempt is returned too.
  update private.capture_jobs
     set state = 'queued', run_at = now(), attempts = greatest(attempts - 1, 0),
         lease_token = null, locked_by = null, lease_expires_at = null
   where signal_id = p_signal_id and lease_token = p_lease_token and state = 'running';
  return found;
end;
$$;
comment on function private.release_capture_job(uuid, uuid) is
  'Gives a claimed job back to the queue at once (daemon shutdown), without counting the attempt.';

create or replace function private.reclaim_expired_capture_jobs()
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  v_requeued integer;
  v_dead integer;
begin
  with expired as (
    select j.signal_id from private.capture_jobs j
     where j.state = 'running' and j.lease_expires_at < now() and j.attempts < j.max_attempts
       for update skip locked
  )
  update private.capture_jobs j
     set state = 'queued', run_at = now(), lease_token = null, locked_by = null, lease_expires_at = null,
         last_error = 'the capture worker stopped responding; retrying'
    from expired
   where j.signal_id = expired.signal_id;
  get diagnostics v_requeued = row_count;

  with expired as (
    select j.signal_id from private.capture_jobs j
     where j.state = 'running' and j.lease_expires_at < now() and j.attempts >= j.max_attempts
       for update skip locked
  ), dead as (
    update private.capture_jobs j
       set state = 'failed', lease_token = null, locked_by = null, lease_expires_at = null,
           last_error = format('the capture did not finish after %s attempts (the capture worker stopped responding)', j.attempts)
      from expired
     where j.signal_id = expired.signal_id
    returning j.signal_id, j.last_error
  )
  update public.signals s
     set screenshot_status = 'failed', screenshot_error = dead.last_error
    from dead
   where s.id = dead.signal_id;
  get diagnostics v_dead = row_count;

  return v_requeued + v_dead;
end;
$$;
comment on function private.reclaim_expired_capture_jobs() is
  'Returns jobs with an expired lease to the queue, or dead-letters them when their attempts are used up.';

create or replace function private.capture_daemon_idle()
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  -- Waits for ingests in flight (they hold the shared lock until commit), so that the daemon's rescan
  -- after this call sees their jobs, and every later ingest sees the flag.
  perform pg_advisory_xact_lock(private.capture_wakeup_lock_key());
  update private.capture_wakeup set daemon_waiting = true where not daemon_waiting;
end;
$$;
comment on function private.capture_daemon_idle() is
  'A daemon about to wait for NOTIFY capture_jobs calls this, then rescans once before sleeping.';

create or replace function private.capture_worker_heartbeat(p_worker_id text, p_concurrency integer)
returns void
language sql
volatile
security definer
set search_path = ''
as $$
  insert into private.capture_workers (worker_id, concurrency)
  values (p_worker_id, p_concurrency)
  on conflict (worker_id) do update
    set concurrency = excluded.concurrency, heartbeat_at = now();
  delete from private.capture_workers where heartbeat_at < now() - interval '1 hour';
$$;
comment on function private.capture_worker_heartbeat(text, integer) is
  'A daemon says it is alive and how many captures it runs at once (for /health and estimated waits).';

create or replace function private.capture_worker_stopped(p_worker_id text)
returns void
language sql
volatile
security definer
set search_path = ''
as $$
  delete from private.capture_workers where worker_id = p_worker_id;
$$;
comment on function private.capture_worker_stopped(text) is 'A daemon that shuts down cleanly removes itself.';

create or replace function public.capture_queue_status()
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select jsonb_build_object(
    'queue_length', (select count(*) from private.capture_jobs where state = 'queued'),
    'running', (select count(*) from private.capture_jobs where state = 'running'),
    'dead_letter', (select count(*) from private.capture_jobs where state = 'failed'),
    'oldest_queued_seconds', coalesce((select floor(extract(epoch from now() - min(run_at)))::bigint
                                         from private.capture_jobs where state = 'queued' and run_at <= now()), 0),
    'active_workers', (select count(*) from private.capture_workers where heartbeat_at > now() - interval '30 seconds')
  );
$$;
comment on function public.capture_queue_status() is 'Queue depth and live capture daemons, for the services'' /health. Service role only.';

do $$
declare
  f text;
begin
  foreach f in array array[
    'private.claim_capture_jobs(text, integer, interval)',
    'private.complete_capture_job(uuid, uuid, text, text, text)',
    'private.skip_capture_job(uuid, uuid, text)',
    'private.fail_capture_job(uuid, uuid, text, boolean)',
    'private.release_capture_job(uuid, uuid)',
    'private.reclaim_expired_capture_jobs()',
    'private.capture_daemon_idle()',
    'private.capture_worker_heartbeat(text, integer)',
    'private.capture_worker_stopped(text)',
    'public.capture_queue_status()'
  ] loop
    execute format('revoke all on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end;
$$;

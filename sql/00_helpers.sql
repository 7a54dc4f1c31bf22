-- Small private helpers shared by the functions in this folder. None is callable by clients.
--
-- Guarantees:
--   * capture_wakeup_lock_key(): the one advisory-lock key that orders ingest_signal's wake-up check
--     against a capture daemon going idle (see sql/20_ingest_signal.sql and sql/30_capture_queue.sql).
--   * estimated_capture_wait(priority): seconds until a new job of that priority is likely captured,
--     from the jobs queued ahead of it and the capture slots of the daemons alive right now.

create or replace function private.capture_wakeup_lock_key()
returns bigint
language sql
immutable
parallel safe
set search_path = ''
as $$
  -- 'sigcapwk' as eight ASCII bytes: stable, and unlikely to collide with anyone else's key.
  select 8315173925036453739::bigint;
$$;
revoke all on function private.capture_wakeup_lock_key() from public, anon, authenticated, service_role;

create or replace function private.estimated_capture_wait(p_priority smallint)
returns integer
language plpgsql
stable
set search_path = ''
as $$
begin
  -- plpgsql, not sql: ingest_signals decides each alert in a subtransaction of its own, and a SQL
  -- function's cached plan does not outlive the subtransaction it was made in, so as a SQL function
  -- this query was parsed and planned again for every alert (a fifth of the database's time per
  -- alert). plpgsql keeps its plan for the session.
  -- About 2 s per capture, spread over the capture slots of live daemons. Every accepted alert asks,
  -- so the count of jobs ahead is capped at 30: past that the answer is "a minute or more" anyway.
  return ceil(
           (1 + (select count(*) from (select 1 from private.capture_jobs j
                                        where j.state = 'queued' and j.priority <= p_priority
                                        limit 30) ahead)) * 2.0
           / greatest(1, coalesce((select sum(w.concurrency) from private.capture_workers w
                                    where w.heartbeat_at > now() - interval '30 seconds'), 1))
         )::integer;
end;
$$;
revoke all on function private.estimated_capture_wait(smallint) from public, anon, authenticated, service_role;

-- Deleting a signal deletes its screenshot: the delete queues the object's removal here, and the
-- capture daemon (periodically) or `capture prune` removes it through the Storage API. SQL never
-- calls Storage: Supabase refuses SQL deletes on storage.objects (the bytes live outside Postgres).
--
-- What this file guarantees:
--   * Every deleted signal, however it was deleted (the trader through the API, an operator, the
--     cascade from auth.users), queues the removal of its object in the same transaction: its
--     screenshot_path, or where its object would be ({user_id}/{signal_id}.png) when none is
--     recorded, because an upload may still be in flight. Storage answers a delete of a missing
--     object with success, so queueing one that was never stored costs one entry of a batch.
--   * queue_orphan_screenshot(signal, path) queues an object uploaded after its signal was
--     deleted (the capture finished just after the delete): only when the signal is gone.
--   * claim_screenshot_deletions(n, lease) hands out at most n due paths (FOR UPDATE SKIP LOCKED)
--     and moves them lease ahead, so two daemons never delete the same batch at once and a daemon
--     that dies mid-batch leaves them due again after the lease.
--   * finish_screenshot_deletions(paths, queued_ats) removes the entries that were deleted, unless
--     a path was queued again meanwhile; retry_screenshot_deletions(paths, error) schedules the
--     next attempt after 2^attempts seconds (+ up to 10 % jitter), at most an hour apart, and keeps
--     the error: entries stay until Storage confirms the delete.
-- Service role only; the trigger function runs as its owner.

create or replace function private.queue_deleted_screenshots()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into private.screenshot_deletions (object_path)
  select distinct coalesce(g.screenshot_path, g.user_id::text || '/' || g.id::text || '.png')
    from gone g
  on conflict (object_path) do update
    set queued_at = now(), next_attempt_at = now();
  return null;
end;
$$;
comment on function private.queue_deleted_screenshots() is
  'Trigger on signals: queues the removal of every deleted signal''s Storage object.';
revoke all on function private.queue_deleted_screenshots() from public, anon, authenticated, service_role;

create or replace trigger queue_deleted_screenshots
  after delete on public.signals
  referencing old table as gone
  for each statement execute function private.queue_deleted_screenshots();

create or replace function private.queue_orphan_screenshot(p_signal_id uuid, p_object_path text)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  if p_object_path is null or length(p_object_path) not between 1 and 1024 then
    raise exception 'queue_orphan_screenshot: path must be 1 to 1024 characters' using errcode = '22023';
  end if;
  if exists (select from public.signals where id = p_signal_id) then
    return false;
  end if;
  insert into private.screenshot_deletions (object_path)
  values (p_object_path)
  on conflict (object_path) do update
    set queued_at = now(), next_attempt_at = now();
  return true;
end;
$$;
comment on function private.queue_orphan_screenshot(uuid, text) is
  'Queues the removal of an object uploaded for a signal that no longer exists; false when the signal exists. Service role only.';

create or replace function private.claim_screenshot_deletions(p_limit integer, p_lease interval)
returns table (object_path text, queued_at timestamptz)
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  if p_limit is null or p_limit not between 1 and 1000 then
    raise exception 'claim_screenshot_deletions: limit must be between 1 and 1000' using errcode = '22023';
  end if;
  if p_lease is null or p_lease < interval '10 seconds' or p_lease > interval '1 hour' then
    raise exception 'claim_screenshot_deletions: lease must be between 10 seconds and 1 hour' using errcode = '22023';
  end if;
  return query
  with due as materialized (
    select d.object_path
      from private.screenshot_deletions d
     where d.next_attempt_at <= now()
     order by d.next_attempt_at
     limit p_limit
       for update skip locked
  )
  update private.screenshot_deletions d
     set next_attempt_at = now() + p_lease, attempts = d.attempts + 1
    from due
   where d.object_path = due.object_path
  returning d.object_path, d.queued_at;
end;
$$;
comment on function private.claim_screenshot_deletions(integer, interval) is
  'Claims up to p_limit due object deletions for p_lease. Service role only.';

create or replace function private.finish_screenshot_deletions(p_paths text[], p_queued_at timestamptz[])
returns integer
language sql
volatile
security definer
set search_path = ''
as $$
  with done as (
    delete from private.screenshot_deletions d
     using unnest(p_paths, p_queued_at) as f(object_path, queued_at)
     where d.object_path = f.object_path and d.queued_at = f.queued_at
    returning 1
  )
  select count(*)::integer from done;
$$;
comment on function private.finish_screenshot_deletions(text[], timestamptz[]) is
  'Removes the deletions Storage confirmed, unless queued again since they were claimed. Service role only.';

create or replace function private.retry_screenshot_deletions(p_paths text[], p_error text)
returns integer
language sql
volatile
security definer
set search_path = ''
as $$
  with retried as (
    update private.screenshot_deletions d
       set next_attempt_at = now() + least(
             make_interval(secs => power(2, least(greatest(d.attempts, 1), 12)) * (1 + 0.1 * random())),
             interval '1 hour'),
           last_error = left(coalesce(nullif(p_error, ''), 'delete failed'), 2000)
     where d.object_path = any (p_paths)
    returning 1
  )
  select count(*)::integer from retried;
$$;
comment on function private.retry_screenshot_deletions(text[], text) is
  'Schedules the next attempt of failed object deletions (2^attempts s, at most an hour) and keeps the error. Service role only.';

do $$
declare
  f text;
begin
  foreach f in array array[
    'private.queue_orphan_screenshot(uuid, text)',
    'private.claim_screenshot_deletions(integer, interval)',
    'private.finish_screenshot_deletions(text[], timestamptz[])',
    'private.retry_screenshot_deletions(text[], text)'
  ] loop
    execute format('revoke all on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end;
$$;

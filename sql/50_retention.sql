-- Screenshot retention: which stored screenshots have outlived their owner's plan, and how a row
-- forgets its screenshot once `capture prune` has deleted the object through the Storage API
-- (Supabase refuses direct SQL deletes on storage.objects, so the object goes first, then the row).
--
-- What this file guarantees:
--   * screenshots_due_for_pruning(n) lists at most n screenshots whose signal is older than the
--     owner's plan's screenshot_retention_days, oldest first, each with its exact storage path,
--     over a partial index on the rows that still have one.
--   * forget_pruned_screenshot(signal, path) clears screenshot_path and screenshot_url only while the
--     row still points at that path: re-running, resuming an interrupted run or two prunes at once
--     are all harmless, and a screenshot re-taken meanwhile is not forgotten by mistake.
--   * The row keeps screenshot_status = 'completed' (the capture did happen) and says in
--     screenshot_error why the picture is gone. Service role only.

create or replace function private.screenshots_due_for_pruning(p_limit integer)
returns table (signal_id uuid, user_id uuid, screenshot_path text, retention_days integer)
language sql
stable
security definer
set search_path = ''
as $$
  select s.id, s.user_id, s.screenshot_path, p.screenshot_retention_days
    from public.signals s
    join public.user_config u on u.user_id = s.user_id
    join public.plans p on p.id = u.plan
   where s.screenshot_path is not null
     and s.created_at < now() - make_interval(days => p.screenshot_retention_days)
   order by s.created_at
   limit greatest(p_limit, 0);
$$;
comment on function private.screenshots_due_for_pruning(integer) is
  'Up to p_limit stored screenshots older than their owner''s plan retention, oldest first. Service role only.';

create or replace function private.forget_pruned_screenshot(p_signal_id uuid, p_screenshot_path text, p_retention_days integer)
returns boolean
language sql
volatile
security definer
set search_path = ''
as $$
  with forgotten as (
    update public.signals
       set screenshot_path = null,
           screenshot_url = null,
           screenshot_error = format('Screenshot deleted after %s days (your plan''s retention).', p_retention_days)
     where id = p_signal_id and screenshot_path = p_screenshot_path
    returning 1
  )
  select exists (select from forgotten);
$$;
comment on function private.forget_pruned_screenshot(uuid, text, integer) is
  'Clears the signal''s screenshot fields after its object was deleted, if it still points at that path. Service role only.';

do $$
declare
  f text;
begin
  foreach f in array array[
    'private.screenshots_due_for_pruning(integer)',
    'private.forget_pruned_screenshot(uuid, text, integer)'
  ] loop
    execute format('revoke all on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end;
$$;

-- Screenshot retention: what is due by plan, and forgetting a pruned screenshot exactly once.
begin;
set local search_path = extensions, public;
select plan(13);

insert into auth.users (id, aud, role, email)
values ('aaaaaaaa-0000-0000-0000-00000000ee01', 'authenticated', 'authenticated', 'free-ret@example.test'),
       ('aaaaaaaa-0000-0000-0000-00000000ee02', 'authenticated', 'authenticated', 'premium-ret@example.test');
update public.user_config set plan = 'premium' where user_id = 'aaaaaaaa-0000-0000-0000-00000000ee02';

-- Signals of both traders, stored with a screenshot, at ages around the free plan's 7 days.
create function pg_temp.stored(p_user uuid, p_body text, p_age interval, p_with_path boolean default true)
returns uuid language plpgsql as $$
declare
  v_id uuid;
begin
  v_id := (public.ingest_signal((select webhook_token from public.user_config where user_id = p_user), now(), p_body,
                                null, 'NYSE:IBM', 'NYSE', 'IBM', 100, 'long') ->> 'signal_id')::uuid;
  update public.signals
     set screenshot_status = 'completed',
         screenshot_path = case when p_with_path then p_user || '/' || v_id || '.png' end,
         screenshot_url = case when p_with_path then 'https://example.test/' || v_id end,
         created_at = now() - p_age
   where id = v_id;
  return v_id;
end;
$$;

create temp table s on commit drop as
  select pg_temp.stored('aaaaaaaa-0000-0000-0000-00000000ee01', 'free old', interval '10 days') as free_old,
         pg_temp.stored('aaaaaaaa-0000-0000-0000-00000000ee01', 'free older', interval '20 days') as free_older,
         pg_temp.stored('aaaaaaaa-0000-0000-0000-00000000ee01', 'free fresh', interval '6 days') as free_fresh,
         pg_temp.stored('aaaaaaaa-0000-0000-0000-00000000ee01', 'free no picture', interval '30 days', false) as free_nopic,
         pg_temp.stored('aaaaaaaa-0000-0000-0000-00000000ee02', 'premium old', interval '10 days') as prem_old;

create temp table due on commit drop as
  select * from private.screenshots_due_for_pruning(100)
   where user_id in ('aaaaaaaa-0000-0000-0000-00000000ee01', 'aaaaaaaa-0000-0000-0000-00000000ee02');

select results_eq($$ select signal_id from due $$,
  $$ values ((select free_older from s)), ((select free_old from s)) $$,
  'only screenshots past the owner''s plan retention are due, oldest first');
select is((select screenshot_path from due where signal_id = (select free_old from s)),
  'aaaaaaaa-0000-0000-0000-00000000ee01/' || (select free_old from s) || '.png', 'with the exact storage path');
select is((select retention_days from due limit 1), 7, 'and the plan''s retention in days');
select is((select count(*)::int from private.screenshots_due_for_pruning(1)), 1, 'the limit is honoured');
select is((select count(*)::int from private.screenshots_due_for_pruning(-5)), 0, 'a negative limit returns nothing');

select is(private.forget_pruned_screenshot((select free_old from s), 'some/other/path.png', 7), false,
  'a path the row no longer points at is not forgotten');
select is((select screenshot_path from public.signals where id = (select free_old from s)),
  'aaaaaaaa-0000-0000-0000-00000000ee01/' || (select free_old from s) || '.png', 'the row is untouched');

select is(private.forget_pruned_screenshot((select free_old from s),
  'aaaaaaaa-0000-0000-0000-00000000ee01/' || (select free_old from s) || '.png', 7), true, 'the pruned screenshot is forgotten');
select row_eq($$ select screenshot_status, screenshot_path, screenshot_url, screenshot_error
                  from public.signals where id = (select free_old from s) $$,
  row('completed'::text, null::text, null::text, 'Screenshot deleted after 7 days (your plan''s retention).'::text),
  'status stays completed, the path and URL are cleared, the reason is kept');
select is(private.forget_pruned_screenshot((select free_old from s),
  'aaaaaaaa-0000-0000-0000-00000000ee01/' || (select free_old from s) || '.png', 7), false,
  'forgetting again is a harmless no-op');
select ok(not exists (select from private.screenshots_due_for_pruning(100) where signal_id = (select free_old from s)),
  'a forgotten screenshot is no longer due');

select ok(not has_function_privilege('authenticated', 'private.screenshots_due_for_pruning(integer)', 'execute')
          and not has_function_privilege('anon', 'private.forget_pruned_screenshot(uuid, text, integer)', 'execute'),
  'end users cannot list or forget screenshots');
select ok(has_function_privilege('service_role', 'private.forget_pruned_screenshot(uuid, text, integer)', 'execute'),
  'the service role can');

select * from finish();
rollback;

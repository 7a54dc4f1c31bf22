-- plans: signed-in traders read the plan catalogue (to show what an upgrade buys); nobody edits it
-- through the API. Anonymous callers see nothing.

alter table public.plans enable row level security;

revoke all on table public.plans from public, anon, authenticated, service_role;
grant select on table public.plans to authenticated;
grant select, insert, update, delete on table public.plans to service_role;

drop policy if exists "plans are readable by signed-in users" on public.plans;
create policy "plans are readable by signed-in users"
  on public.plans for select to authenticated
  using ((select auth.uid()) is not null);

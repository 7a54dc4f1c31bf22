-- signals: a trader reads their own signals, edits only the journal columns (result, profit_loss,
-- notes) and may delete their own signals. Signals are inserted only by ingest_signal (SECURITY
-- DEFINER, service role), never by end users.

alter table public.signals enable row level security;

revoke all on table public.signals from public, anon, authenticated, service_role;
grant select, delete on table public.signals to authenticated;
grant update (result, profit_loss, notes) on table public.signals to authenticated;
grant select, insert, update, delete on table public.signals to service_role;

drop policy if exists "traders read their own signals" on public.signals;
create policy "traders read their own signals"
  on public.signals for select to authenticated
  using (user_id = (select auth.uid()));

drop policy if exists "traders journal their own signals" on public.signals;
create policy "traders journal their own signals"
  on public.signals for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));

drop policy if exists "traders delete their own signals" on public.signals;
create policy "traders delete their own signals"
  on public.signals for delete to authenticated
  using (user_id = (select auth.uid()));

-- The dashboard sees new signals and screenshot progress live through Supabase Realtime.
do $$
begin
  if not exists (select 1 from pg_catalog.pg_publication_tables
                  where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'signals') then
    alter publication supabase_realtime add table public.signals;
  end if;
end;
$$;

-- webhook_deliveries: the trader's own delivery log, read-only. Written by ingest_signal only.

alter table public.webhook_deliveries enable row level security;

revoke all on table public.webhook_deliveries from public, anon, authenticated, service_role;
grant select on table public.webhook_deliveries to authenticated;
grant select, insert, update, delete on table public.webhook_deliveries to service_role;
revoke all on sequence public.webhook_deliveries_id_seq from public, anon, authenticated, service_role;

drop policy if exists "traders read their own deliveries" on public.webhook_deliveries;
create policy "traders read their own deliveries"
  on public.webhook_deliveries for select to authenticated
  using (user_id = (select auth.uid()));

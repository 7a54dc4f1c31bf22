-- trader_notices: what the dashboard tells a trader about their account (their TradingView session
-- expired, say). Written server-side only (private.expire_tradingview_session); the trader reads
-- their own, marks them read (read_at) and may delete them. Nobody else sees them.

alter table public.trader_notices enable row level security;

revoke all on table public.trader_notices from public, anon, authenticated, service_role;
grant select, delete on table public.trader_notices to authenticated;
grant update (read_at) on table public.trader_notices to authenticated;
grant select, insert, update, delete on table public.trader_notices to service_role;
revoke all on sequence public.trader_notices_id_seq from public, anon, authenticated, service_role;

drop policy if exists "traders read their own notices" on public.trader_notices;
create policy "traders read their own notices"
  on public.trader_notices for select to authenticated
  using (user_id = (select auth.uid()));

drop policy if exists "traders mark their own notices read" on public.trader_notices;
create policy "traders mark their own notices read"
  on public.trader_notices for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));

drop policy if exists "traders delete their own notices" on public.trader_notices;
create policy "traders delete their own notices"
  on public.trader_notices for delete to authenticated
  using (user_id = (select auth.uid()));

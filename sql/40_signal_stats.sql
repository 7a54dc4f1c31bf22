-- signal_stats(): the dashboard's statistics for the signed-in trader.
--
-- Guarantees:
--   * SECURITY INVOKER: it runs as the trader, so row level security limits it to their own signals
--     (the explicit user_id filter is there for the index, not for safety). Anonymous callers cannot
--     execute it.
--   * win_rate = wins / (wins + losses + breakevens) in percent, null until a trade is decided;
--     profit_factor = gross profit / gross loss, null while there is no loss; months are UTC.

create or replace function public.signal_stats()
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
  with mine as (
    select s.ticker, s.result, s.profit_loss, s.screenshot_status, s."timestamp"
      from public.signals s
     where s.user_id = (select auth.uid())
  ), per_ticker as (
    select m.ticker,
           count(*) as signals,
           count(*) filter (where m.result = 'win') as wins,
           count(*) filter (where m.result = 'loss') as losses,
           count(*) filter (where m.result in ('win', 'loss', 'breakeven')) as decided,
           coalesce(sum(m.profit_loss), 0) as total_pnl,
           max(m."timestamp") as last_signal_at
      from mine m
     group by m.ticker
  )
  select jsonb_build_object(
    'total_signals', (select count(*) from mine),
    'this_month', (select count(*) from mine m
                    where m."timestamp" >= (date_trunc('month', now() at time zone 'UTC') at time zone 'UTC')),
    'screenshots_pending', (select count(*) from mine m where m.screenshot_status in ('pending', 'processing')),
    'win_rate', (select round(100.0 * count(*) filter (where m.result = 'win')
                              / nullif(count(*) filter (where m.result in ('win', 'loss', 'breakeven')), 0), 2)
                   from mine m),
    'total_pnl', (select coalesce(sum(m.profit_loss), 0) from mine m),
    'profit_factor', (select round(sum(m.profit_loss) filter (where m.profit_loss > 0)
                                   / nullif(abs(sum(m.profit_loss) filter (where m.profit_loss < 0)), 0), 4)
                        from mine m),
    'by_ticker', coalesce((select jsonb_agg(jsonb_build_object(
                             'ticker', p.ticker,
                             'signals', p.signals,
                             'wins', p.wins,
                             'losses', p.losses,
                             'win_rate', round(100.0 * p.wins / nullif(p.decided, 0), 2),
                             'total_pnl', p.total_pnl,
                             'last_signal_at', p.last_signal_at)
                           order by p.signals desc, p.ticker)
                             from per_ticker p), '[]'::jsonb)
  );
$$;
comment on function public.signal_stats() is
  'Totals, this month, screenshots pending, win rate, total P&L, profit factor and per-ticker breakdown for the signed-in trader.';
revoke all on function public.signal_stats() from public, anon, authenticated, service_role;
grant execute on function public.signal_stats() to authenticated;

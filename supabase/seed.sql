-- Demo data for the local stack: one trader on the pro plan with a short journal of signals in the
-- alert formats traders really send (JSON, Spanish and English labelled lines, TradingView's own
-- default messages). Signals go through public.ingest_signal, exactly as webhooks do, so each one
-- also has its capture job and delivery-log row. Re-running the seed adds nothing twice.

insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values ('00000000-0000-0000-0000-000000000000', '00000000-0000-4000-8000-00000000d3e0', 'authenticated', 'authenticated',
        'demo@signal-capture.local', '{"provider": "email", "providers": ["email"]}', '{"name": "Demo Trader"}', now(), now())
on conflict (id) do nothing;

update public.user_config set plan = 'pro', default_chart_id = 'DemoChrt'
 where user_id = '00000000-0000-4000-8000-00000000d3e0';

do $$
declare
  v_token text := (select webhook_token from public.user_config where user_id = '00000000-0000-4000-8000-00000000d3e0');
  v_result jsonb;
  r record;
begin
  if exists (select 1 from public.signals where user_id = '00000000-0000-4000-8000-00000000d3e0') then
    return;
  end if;
  for r in
    select * from (values
      (10, '{"ticker": "BINANCE:BTCUSDT", "price": "67890.50", "action": "buy", "interval": "60", "indicator": "Trend Pro"}',
           'BINANCE:BTCUSDT', 'BINANCE', 'BTCUSDT', 67890.50, 'long', '60', 'Trend Pro', 'win', 412.30),
      (9,  E'🚨 Señal: COMPRA\nSímbolo: BINANCE:ETHUSDT\nPrecio: $3,412.75\nTemporalidad: 1h\nIndicador: Momentum X',
           'BINANCE:ETHUSDT', 'BINANCE', 'ETHUSDT', 3412.75, 'long', '1h', 'Momentum X', 'loss', -58.10),
      (8,  E'Ticker: NASDAQ:AAPL\nPrice: 189.42\nDirection: short\nTimeframe: 15',
           'NASDAQ:AAPL', 'NASDAQ', 'AAPL', 189.42, 'short', '15', null, 'win', 96.00),
      (7,  'Trend Pro Strategy: order sell @ 1 filled on CME_MINI:ES1!. New strategy position is -1',
           'CME_MINI:ES1!', 'CME_MINI', 'ES1!', null, 'short', null, 'Trend Pro Strategy', 'breakeven', 0),
      (6,  'BINANCE:BTCUSDT.P, 4h Crossing 68,120.00',
           'BINANCE:BTCUSDT.P', 'BINANCE', 'BTCUSDT.P', 68120.00, null, '4h', null, 'pending', null),
      (5,  E'📈 Signal: SELL\nSymbol: OANDA:EURUSD\nPrice: 1,0842\nInterval: 5',
           'OANDA:EURUSD', 'OANDA', 'EURUSD', 1.0842, 'short', '5', null, 'win', 31.50),
      (4,  '{"symbol": "SOLUSDT", "exchange": "BINANCE", "close": 152.3, "side": "long", "tf": "15m", "strategy": "Scalper"}',
           'BINANCE:SOLUSDT', 'BINANCE', 'SOLUSDT', 152.30, 'long', '15m', 'Scalper', 'loss', -22.40),
      (3,  E'Indicador: Trend Pro\nSímbolo: BINANCE:BTCUSDT\nDirección: venta\nPrecio: 68.234,56 USDT',
           'BINANCE:BTCUSDT', 'BINANCE', 'BTCUSDT', 68234.56, 'short', null, 'Trend Pro', 'pending', null)
    ) as t(hours_ago, body, ticker, exchange, symbol, price, direction, tf, indicator, result, pnl)
  loop
    v_result := public.ingest_signal(v_token, now() - make_interval(hours => r.hours_ago), r.body, null,
      r.ticker, r.exchange, r.symbol, r.price, r.direction, 'alert', r.tf, r.indicator,
      now() - make_interval(hours => r.hours_ago));
    update public.signals set result = r.result, profit_loss = r.pnl
     where id = (v_result ->> 'signal_id')::uuid;
  end loop;
end;
$$;

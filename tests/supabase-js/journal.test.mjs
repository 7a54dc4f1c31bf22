// The Next.js dashboard's journal, played with the real supabase-js client through the gateway:
// list, filter and page through the trader's signals, journal them, delete one, read statistics
// and the delivery log, rotate the webhook token, export CSV, and fail cleanly wherever the
// policies say no. Two traders with overlapping tickers, so every read would show a leak.
//
// Run: node --test tests/supabase-js/ (scripts/test does, with the test stack's settings).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  accessTokenFor,
  anonClient,
  clientFor,
  clientWithToken,
  createTrader,
  deleteTraders,
  env,
  ingest,
  psql,
  serviceClient,
} from './stack.mjs';

const service = serviceClient();
const traders = [];

function trader(plan = 'pro') {
  const t = createTrader(plan);
  traders.push(t);
  return t;
}

after(() => deleteTraders(traders));

/** Ingests alerts in order and returns their signal ids. */
async function seed(t, alerts) {
  const ids = [];
  for (const alert of alerts) {
    const answer = await ingest(service, t, alert);
    assert.equal(answer.outcome, 'accepted', JSON.stringify(answer));
    ids.push(answer.signal_id);
  }
  return ids;
}

/** Superuser-side capture progress and journal, so the filters have something to find. */
function setSignal(id, { status, result, profitLoss }) {
  psql(
    `update public.signals
        set screenshot_status = coalesce(nullif(:'status', ''), screenshot_status),
            screenshot_path = case when :'status' = 'completed' then user_id || '/' || id || '.png' else screenshot_path end,
            result = coalesce(nullif(:'result', ''), result),
            profit_loss = nullif(:'pnl', '')::numeric
      where id = :'id'`,
    { id, status: status ?? '', result: result ?? '', pnl: profitLoss ?? '' },
  );
}

const ok = ({ data, error }) => {
  assert.equal(error, null, `unexpected error: ${JSON.stringify(error)}`);
  return data;
};

/** What a refused call looks like to the app: an error with Postgres' privilege code, no data. */
function refused({ data, error }, code = '42501') {
  assert.ok(error, `expected an error, got data ${JSON.stringify(data)}`);
  assert.equal(error.code, code, JSON.stringify(error));
  assert.equal(data, null);
}

describe('a trader reading their journal', () => {
  let a;
  let b;
  let aIds; // in ingest order: jan, feb, mar-15, mar-20, apr
  let bIds;
  let dashboard;

  before(async () => {
    a = trader();
    b = trader();
    aIds = await seed(a, [
      { ticker: 'BINANCE:BTCUSDT', direction: 'long', price: 42000.5, indicator: 'Trend Rider', time: '2026-01-05T10:00:00Z' },
      { ticker: 'BINANCE:ETHUSDT', direction: 'short', price: 2500, indicator: 'Trend Rider', time: '2026-02-10T10:00:00Z' },
      { ticker: 'BINANCE:BTCUSDT', direction: 'short', price: 61000, indicator: 'Reversal', time: '2026-03-15T10:00:00Z' },
      { ticker: 'NASDAQ:AAPL', direction: 'long', price: 190.25, indicator: 'Reversal', time: '2026-03-20T14:30:00Z' },
      { ticker: 'BINANCE:BTCUSDT', direction: 'long', price: 65000, indicator: 'Trend Rider', time: '2026-04-01T08:00:00Z' },
    ]);
    // B trades the same tickers in the same months: any leak would match A's filters.
    bIds = await seed(b, [
      { ticker: 'BINANCE:BTCUSDT', direction: 'long', price: 60000, time: '2026-03-16T10:00:00Z' },
      { ticker: 'NASDAQ:AAPL', direction: 'short', price: 191, time: '2026-03-21T10:00:00Z' },
    ]);
    setSignal(aIds[0], { status: 'completed', result: 'win', profitLoss: '120' });
    setSignal(aIds[1], { status: 'failed', result: 'loss', profitLoss: '-50' });
    setSignal(aIds[2], { status: 'completed', result: 'win', profitLoss: '80' });
    setSignal(aIds[3], { result: 'breakeven', profitLoss: '0' });
    setSignal(aIds[4], { status: 'processing' });
    setSignal(bIds[0], { status: 'completed', result: 'win', profitLoss: '1000' });
    dashboard = clientFor(a.id);
  });

  const newestFirst = () => [...aIds].reverse();

  test('lists only their own signals, newest first, with an exact count', async () => {
    const { data, error, count } = await dashboard
      .from('signals')
      .select('id, user_id, ticker, direction, price, timestamp, screenshot_status, result', { count: 'exact' })
      .order('timestamp', { ascending: false });
    assert.equal(error, null);
    assert.equal(count, 5);
    assert.deepEqual(data.map((s) => s.id), newestFirst());
    assert.ok(data.every((s) => s.user_id === a.id));
    assert.deepEqual(data[0], {
      id: aIds[4],
      user_id: a.id,
      ticker: 'BINANCE:BTCUSDT',
      direction: 'long',
      price: 65000,
      timestamp: '2026-04-01T08:00:00+00:00',
      screenshot_status: 'processing',
      result: 'pending',
    });
  });

  test('filters by date range, ticker, result and screenshot status', async () => {
    const list = (query) =>
      query.order('timestamp', { ascending: false }).then(ok).then((rows) => rows.map((s) => s.id));
    const signals = () => dashboard.from('signals').select('id');

    assert.deepEqual(
      await list(signals().gte('timestamp', '2026-02-01T00:00:00Z').lt('timestamp', '2026-04-01T00:00:00Z')),
      [aIds[3], aIds[2], aIds[1]],
    );
    assert.deepEqual(await list(signals().eq('ticker', 'BINANCE:BTCUSDT')), [aIds[4], aIds[2], aIds[0]]);
    assert.deepEqual(await list(signals().eq('result', 'win')), [aIds[2], aIds[0]]);
    assert.deepEqual(await list(signals().in('result', ['loss', 'breakeven'])), [aIds[3], aIds[1]]);
    assert.deepEqual(await list(signals().in('screenshot_status', ['pending', 'processing'])), [aIds[4], aIds[3]]);
    assert.deepEqual(await list(signals().eq('screenshot_status', 'completed')), [aIds[2], aIds[0]]);
    assert.deepEqual(
      await list(
        signals()
          .eq('ticker', 'BINANCE:BTCUSDT')
          .eq('screenshot_status', 'completed')
          .gte('timestamp', '2026-03-01T00:00:00Z'),
      ),
      [aIds[2]],
    );
    // Even asking for B's rows by owner finds nothing.
    assert.deepEqual(await list(signals().eq('user_id', b.id)), []);
    assert.deepEqual(await list(signals().in('id', bIds)), []);
  });

  test('pages through the list with range() and the total from the count', async () => {
    const pages = [];
    for (let from = 0; from < 6; from += 2) {
      const { data, error, count } = await dashboard
        .from('signals')
        .select('id', { count: 'exact' })
        .order('timestamp', { ascending: false })
        .range(from, from + 1);
      assert.equal(error, null);
      assert.equal(count, 5);
      pages.push(data.map((s) => s.id));
    }
    assert.deepEqual(pages, [newestFirst().slice(0, 2), newestFirst().slice(2, 4), newestFirst().slice(4)]);
  });

  test('reads statistics over their own signals only', async () => {
    const stats = ok(await dashboard.rpc('signal_stats'));
    assert.equal(stats.total_signals, 5);
    assert.equal(stats.screenshots_pending, 2); // the pending one and the processing one
    // 2 wins of 4 decided (win, loss, win, breakeven); B's 1000 win is not counted.
    assert.equal(stats.win_rate, 50);
    assert.equal(stats.total_pnl, 150);
    assert.equal(stats.profit_factor, 4); // 200 gross profit / 50 gross loss
    assert.deepEqual(
      stats.by_ticker.map((t) => [t.ticker, t.signals, t.wins, t.losses, t.total_pnl]),
      [
        ['BINANCE:BTCUSDT', 3, 2, 0, 200],
        ['BINANCE:ETHUSDT', 1, 0, 1, -50],
        ['NASDAQ:AAPL', 1, 0, 0, 0],
      ],
    );
  });

  test('reads their delivery log, accepted, duplicate and rejected', async () => {
    await ingest(service, a, { raw: 'hello from tradingview', rejectCode: 'no_ticker', rejectMessage: 'no ticker found' });
    const duplicate = await ingest(service, a, {
      ticker: 'BINANCE:BTCUSDT',
      direction: 'long',
      price: 42000.5,
      indicator: 'Trend Rider',
      time: '2026-01-05T10:00:00Z',
    });
    assert.equal(duplicate.outcome, 'duplicate');
    assert.equal(duplicate.signal_id, aIds[0]);

    const log = ok(
      await dashboard
        .from('webhook_deliveries')
        .select('user_id, outcome, reason, http_status, signal_id, body_excerpt')
        .order('received_at', { ascending: false })
        .order('id', { ascending: false }),
    );
    assert.equal(log.length, 7);
    assert.ok(log.every((d) => d.user_id === a.id));
    assert.deepEqual(
      log.slice(0, 2).map((d) => [d.outcome, d.reason, d.http_status, d.signal_id]),
      [
        ['duplicate', null, 200, aIds[0]],
        ['rejected', 'no_ticker', 422, null],
      ],
    );
    assert.equal(log[1].body_excerpt, 'hello from tradingview');
    assert.deepEqual(
      log.slice(2).map((d) => [d.outcome, d.signal_id]),
      newestFirst().map((id) => ['accepted', id]),
    );
  });

  test('exports CSV with Accept: text/csv, through fetch and through supabase-js', async () => {
    const columns = 'id,ticker,direction,price,timestamp,result,profit_loss';
    const response = await fetch(`${env.url}/rest/v1/signals?select=${columns}&order=timestamp.desc`, {
      headers: {
        apikey: env.anonKey,
        Authorization: `Bearer ${accessTokenFor(a.id)}`,
        Accept: 'text/csv',
      },
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /^text\/csv/);
    const csv = await response.text();
    const lines = csv.trim().split('\n');
    assert.equal(lines[0], columns);
    assert.deepEqual(lines.slice(1).map((l) => l.split(',')[0]), newestFirst());
    // PostgREST's CSV carries Postgres' own text forms (timestamps as the session, UTC, prints them).
    assert.equal(lines[5], `${aIds[0]},BINANCE:BTCUSDT,long,42000.5,"2026-01-05 10:00:00+00",win,120`);
    for (const id of bIds) assert.ok(!csv.includes(id), "B's signals are not in A's export");

    const viaClient = ok(await dashboard.from('signals').select(columns).order('timestamp', { ascending: false }).csv());
    assert.equal(viaClient, csv);
  });

  test('reads their plan and the plan catalogue', async () => {
    const config = ok(await dashboard.from('user_config').select('plan, plans(name, monthly_signal_quota)').single());
    assert.deepEqual(config, { plan: 'pro', plans: { name: 'Pro', monthly_signal_quota: 10000 } });
    const catalogue = ok(await dashboard.from('plans').select('id').order('capture_priority', { ascending: false }));
    assert.deepEqual(catalogue.map((p) => p.id), ['free', 'basic', 'pro', 'premium']);
  });

  test('reads their settings and cookies_valid, never the sealed TradingView session', async () => {
    psql(
      `update public.user_config set tradingview_cookies_sealed = '\\x0102', cookies_valid = true, cookies_updated_at = now()
        where user_id = :'id'`,
      { id: a.id },
    );
    const settings = ok(
      await dashboard.from('user_config').select('webhook_enabled, chart_theme, cookies_valid, plan').single(),
    );
    assert.deepEqual(settings, { webhook_enabled: true, chart_theme: 'dark', cookies_valid: true, plan: 'pro' });
    // Column grants: the blob is refused by name, through `*`, and as a filter.
    refused(await dashboard.from('user_config').select('tradingview_cookies_sealed'));
    refused(await dashboard.from('user_config').select('*'));
    refused(await dashboard.from('user_config').select('user_id').not('tradingview_cookies_sealed', 'is', null));
    // The service role (ingest, capture) still reads it.
    const stored = ok(await service.from('user_config').select('tradingview_cookies_sealed').eq('user_id', a.id).single());
    assert.equal(stored.tradingview_cookies_sealed, '\\x0102');
  });

  test("never receives the other trader's rows from any table", async () => {
    for (const [who, me, other] of [
      [dashboard, a, b],
      [clientFor(b.id), b, a],
    ]) {
      const signals = ok(await who.from('signals').select('user_id'));
      assert.ok(signals.length > 0 && signals.every((s) => s.user_id === me.id));
      const configs = ok(await who.from('user_config').select('user_id, webhook_token'));
      assert.deepEqual(configs, [{ user_id: me.id, webhook_token: me.webhookToken }]);
      const deliveries = ok(await who.from('webhook_deliveries').select('user_id'));
      assert.ok(deliveries.length > 0 && deliveries.every((d) => d.user_id === me.id));
      assert.deepEqual(ok(await who.from('user_config').select('user_id').eq('user_id', other.id)), []);
    }
  });
});

describe('a trader keeping their journal', () => {
  let j;
  let other;
  let jIds;
  let otherId;
  let dashboard;

  before(async () => {
    j = trader('basic');
    other = trader('basic');
    jIds = await seed(j, [
      { ticker: 'BINANCE:SOLUSDT', direction: 'long', price: 150, time: '2026-05-01T09:00:00Z' },
      { ticker: 'BINANCE:SOLUSDT', direction: 'short', price: 160, time: '2026-05-02T09:00:00Z' },
    ]);
    [otherId] = await seed(other, [{ ticker: 'BINANCE:SOLUSDT', direction: 'long', price: 151, time: '2026-05-01T09:00:00Z' }]);
    dashboard = clientFor(j.id);
  });

  test('updates result, profit/loss and notes and gets the row back', async () => {
    const [before] = ok(await dashboard.from('signals').select('updated_at').eq('id', jIds[0]));
    const updated = ok(
      await dashboard
        .from('signals')
        .update({ result: 'win', profit_loss: 42.5, notes: 'Took profit at the first target_1 <b>' })
        .eq('id', jIds[0])
        .select('id, result, profit_loss, notes, price, updated_at')
        .single(),
    );
    assert.deepEqual(
      { ...updated, updated_at: undefined },
      { id: jIds[0], result: 'win', profit_loss: 42.5, notes: 'Took profit at the first target_1 <b>', price: 150, updated_at: undefined },
    );
    assert.ok(updated.updated_at > before.updated_at, 'updated_at moves');
  });

  test('cannot change prices, tickers, screenshot fields or the owner', async () => {
    for (const change of [
      { price: 1 },
      { ticker: 'BINANCE:DOGEUSDT' },
      { screenshot_status: 'completed' },
      { screenshot_path: `${other.id}/x.png` },
      { user_id: other.id },
      { result: 'loss', price: 1 }, // a journal edit smuggling a price change is refused whole
    ]) {
      refused(await dashboard.from('signals').update(change).eq('id', jIds[1]).select());
    }
    const [row] = ok(await dashboard.from('signals').select('price, ticker, screenshot_status, result').eq('id', jIds[1]));
    assert.deepEqual(row, { price: 160, ticker: 'BINANCE:SOLUSDT', screenshot_status: 'pending', result: 'pending' });
  });

  test('rejects values the schema does not allow', async () => {
    const { error } = await dashboard.from('signals').update({ result: 'jackpot' }).eq('id', jIds[1]);
    assert.equal(error?.code, '23514', 'check constraint');
  });

  test('cannot insert signals', async () => {
    refused(
      await dashboard
        .from('signals')
        .insert({ user_id: j.id, ticker: 'BINANCE:SOLUSDT', symbol: 'SOLUSDT', raw_message: 'forged', timestamp: new Date().toISOString() })
        .select(),
    );
  });

  test("cannot read, journal or delete another trader's signal", async () => {
    assert.deepEqual(ok(await dashboard.from('signals').select('id').eq('id', otherId)), []);
    assert.deepEqual(ok(await dashboard.from('signals').update({ notes: 'mine now' }).eq('id', otherId).select()), []);
    assert.deepEqual(ok(await dashboard.from('signals').delete().eq('id', otherId).select()), []);
    assert.equal(
      psql(`select coalesce(notes, '<none>') from public.signals where id = :'id'`, { id: otherId }),
      '<none>',
      "the other trader's signal is untouched",
    );
  });

  test('deletes their own signal; its delivery log entry stays, unlinked', async () => {
    const deleted = ok(await dashboard.from('signals').delete().eq('id', jIds[1]).select('id'));
    assert.deepEqual(deleted, [{ id: jIds[1] }]);
    assert.deepEqual(ok(await dashboard.from('signals').select('id')), [{ id: jIds[0] }]);
    const log = ok(await dashboard.from('webhook_deliveries').select('signal_id').eq('outcome', 'accepted'));
    assert.deepEqual(log.map((d) => d.signal_id).sort(), [jIds[0], null].sort());
  });

  test('edits their own settings but not plan, quota, token or Telegram chat', async () => {
    const settings = ok(
      await dashboard
        .from('user_config')
        .update({ chart_theme: 'light', default_chart_id: 'AbC123xY', notify_on_failure: false })
        .eq('user_id', j.id)
        .select('chart_theme, default_chart_id, notify_on_failure, notify_telegram, telegram_chat_id, plan')
        .single(),
    );
    assert.deepEqual(settings, {
      chart_theme: 'light',
      default_chart_id: 'AbC123xY',
      notify_on_failure: false,
      notify_telegram: false,
      telegram_chat_id: null,
      plan: 'basic',
    });
    // Notifications need a chat, and only the bot links one (/start with a code).
    const { error: noChat } = await dashboard.from('user_config').update({ notify_telegram: true }).eq('user_id', j.id);
    assert.equal(noChat?.code, '23514', JSON.stringify(noChat));
    for (const change of [
      { plan: 'premium' },
      { signals_this_period: 0 },
      { cookies_valid: true },
      { telegram_chat_id: '-1001234567890' },
    ]) {
      refused(await dashboard.from('user_config').update(change).eq('user_id', j.id).select('user_id'));
    }
    // Columns the trader may write only through telegram_link_code() / to unlink: a made-up value is
    // refused by the guard (42501), like a chosen token.
    for (const change of [
      { telegram_linked_at: new Date().toISOString() },
      { telegram_link_code_expires_at: '2030-01-01T00:00:00Z' },
    ]) {
      const { error } = await dashboard.from('user_config').update(change).eq('user_id', j.id);
      assert.equal(error?.code, '42501', `${JSON.stringify(change)}: ${JSON.stringify(error)}`);
    }
    const { error } = await dashboard.from('user_config').update({ webhook_token: 'A'.repeat(43) }).eq('user_id', j.id);
    assert.ok(error, 'the token changes only through rotate_webhook_token()');
  });

  test('gets a Telegram link code and can unlink', async () => {
    const { code, expires_at: expiresAt } = ok(await dashboard.rpc('telegram_link_code').single());
    assert.match(code, /^[A-Za-z0-9_-]{16}$/);
    const minutes = (Date.parse(expiresAt) - Date.now()) / 60000;
    assert.ok(minutes > 9 && minutes <= 10.1, `expires in ${minutes} min`);
    const row = ok(
      await dashboard.from('user_config').select('telegram_link_code_expires_at').eq('user_id', j.id).single(),
    );
    assert.equal(Date.parse(row.telegram_link_code_expires_at), Date.parse(expiresAt));
    const next = ok(await dashboard.rpc('telegram_link_code').single());
    assert.notEqual(next.code, code, 'a new code each time');
    assert.equal(ok(await dashboard.rpc('unlink_telegram')), false, 'nothing linked yet');
    refused(await anonClient().rpc('telegram_link_code'));
  });

  test('rotates the webhook token: the new one works, the old one is dead at once', async () => {
    const oldToken = j.webhookToken;
    const newToken = ok(await dashboard.rpc('rotate_webhook_token'));
    assert.match(newToken, /^[A-Za-z0-9_-]{43}$/);
    assert.notEqual(newToken, oldToken);
    const [config] = ok(await dashboard.from('user_config').select('webhook_token'));
    assert.equal(config.webhook_token, newToken);

    const stale = await ingest(service, { webhookToken: oldToken }, { ticker: 'BINANCE:SOLUSDT', raw: 'after rotation' });
    assert.equal(stale.outcome, 'unknown_token');
    j.webhookToken = newToken;
    const fresh = await ingest(service, j, { ticker: 'BINANCE:SOLUSDT', raw: 'after rotation' });
    assert.equal(fresh.outcome, 'accepted');
  });
});

describe('callers the policies turn away', () => {
  let t;
  before(() => {
    t = trader();
  });

  test('anonymous visitors get nothing: no tables, no RPCs', async () => {
    const anon = anonClient();
    for (const table of ['signals', 'user_config', 'webhook_deliveries', 'plans']) {
      refused(await anon.from(table).select('*'));
    }
    refused(await anon.rpc('signal_stats'));
    refused(await anon.rpc('rotate_webhook_token'));
  });

  test('signed-in traders cannot call the service-only entry points', async () => {
    const dashboard = clientFor(t.id);
    refused(await dashboard.rpc('ingest_signal', { p_token: t.webhookToken, p_received_at: new Date().toISOString(), p_raw_message: 'x' }));
    refused(await dashboard.rpc('capture_queue_status'));
    // Not even for their own row: the session is sealed by ingest, never written by the browser.
    refused(await dashboard.rpc('set_tradingview_session', { p_user_id: t.id, p_sealed: null }));
  });

  test('an expired session is refused, not treated as anonymous', async () => {
    const expired = clientFor(t.id, { expiresIn: -60 });
    const { data, error, status } = await expired.from('signals').select('id');
    assert.equal(status, 401);
    assert.equal(error?.code, 'PGRST301', JSON.stringify(error));
    assert.equal(data, null);
  });

  test('a token signed with another secret is refused', async () => {
    const forged = clientWithToken(`${accessTokenFor(t.id).slice(0, -4)}AAAA`);
    const { error, status } = await forged.from('signals').select('id');
    assert.equal(status, 401);
    assert.ok(error);
  });

  test('the gateway wants a project key', async () => {
    const none = await fetch(`${env.url}/rest/v1/signals`);
    assert.equal(none.status, 401);
    const wrong = await fetch(`${env.url}/rest/v1/signals`, { headers: { apikey: 'not-a-key' } });
    assert.equal(wrong.status, 401);
  });
});

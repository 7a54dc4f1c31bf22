// End to end on the local stack: the dashboard hands the demo trader's TradingView session to ingest
// (PUT /v1/tradingview-session with the access token from supabase-js's session, as the README
// shows), an alert for that trader is rendered with those cookies on a chart page that requires
// them, and after DELETE the next alert gets the built-in history chart.
//
// It needs ingest and the capture daemon running as scripts/dev starts them, with the capture
// daemon's chart page pointed at the page this test serves on E2E_CHART_PORT:
//
//   CAPTURE_CHART_URL_TEMPLATE=http://127.0.0.1:$E2E_CHART_PORT/chart/{chart_id}/?symbol={symbol}
//   CAPTURE_READY_CHECK="document.body.dataset.chart === 'drawn'"
//   CAPTURE_LOGIN_CHECK="!!document.getElementById('sign-in-wall')"
//   CAPTURE_EGRESS_ALLOW=127.0.0.1:$E2E_CHART_PORT
//
// scripts/test does that (scripts/lib/e2e.sh) and runs this file on its own, not with the rest of
// tests/supabase-js: a running capture daemon would take the journal tests' signals.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { signedInDashboard } from './stack.mjs';

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through scripts/test (scripts/lib/e2e.sh)`);
  return value;
}

const ingestUrl = required('INGEST_URL');
const captureHealthUrl = required('CAPTURE_HEALTH_URL');
const screenshotDir = required('SCREENSHOT_DIR');
const dashboardOrigin = required('DASHBOARD_ORIGIN');
const webhookToken = required('DEMO_WEBHOOK_TOKEN');
const chartPort = Number(required('E2E_CHART_PORT'));

// The dashboard, signed in as the demo trader.
const supabase = signedInDashboard(required('DEMO_USER_ACCESS_TOKEN'));

// A session as TradingView's cookies look: an opaque id, and a signature with base64's + / =.
const tradingView = {
  sessionid: randomBytes(16).toString('hex'),
  sessionid_sign: `v3:${randomBytes(33).toString('base64')}+/=`,
};
// One chart id for this run, so the page's log holds only this test's visits.
const chartId = `E2e${randomBytes(6).toString('hex')}`;

// --- the chart page --------------------------------------------------------------------------

/** Every request for a chart page: its path and the cookies it carried, parsed. */
const visits = [];

function parseCookies(header = '') {
  const cookies = {};
  for (const pair of header.split(';')) {
    const at = pair.indexOf('=');
    if (at > 0) cookies[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
  }
  return cookies;
}

/**
 * Like TradingView where it matters: without both session cookies a sign-in wall (what
 * CAPTURE_LOGIN_CHECK looks for), with them a legend item and a chart pane's canvas (what the
 * daemon's default readiness waits for), drawn a moment later, and only then the readiness mark
 * (CAPTURE_READY_CHECK).
 */
function chartPage(signedIn) {
  if (!signedIn) {
    return '<!doctype html><html><body><div id="sign-in-wall">Sign in to TradingView</div></body></html>';
  }
  return `<!doctype html><html><head><style>html,body{margin:0;background:#131722}</style></head><body>
<div data-name="legend-source-item" style="position:fixed;top:8px;left:8px;color:#d1d4dc;font:14px sans-serif">${chartId}</div>
<div class="chart-markup-table"><canvas id="c"></canvas></div><script>
const c = document.getElementById('c'); c.width = innerWidth; c.height = innerHeight;
setTimeout(() => {
  const x = c.getContext('2d'); x.strokeStyle = '#2962ff'; x.lineWidth = 3; x.beginPath();
  for (let i = 0; i <= 40; i++) x.lineTo(i * c.width / 40, c.height / 2 + Math.sin(i / 3) * c.height / 4);
  x.stroke();
  document.body.dataset.chart = 'drawn';
}, 150);
</script></body></html>`;
}

const server = createServer((request, response) => {
  const url = new URL(request.url, `http://127.0.0.1:${chartPort}`);
  const match = url.pathname.match(/^\/chart\/([^/]+)\/$/);
  if (!match) {
    response.writeHead(404).end();
    return;
  }
  const cookies = parseCookies(request.headers.cookie);
  visits.push({ chartId: decodeURIComponent(match[1]), symbol: url.searchParams.get('symbol'), cookies });
  response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  response.end(chartPage(Boolean(cookies.sessionid && cookies.sessionid_sign)));
});

// --- helpers ---------------------------------------------------------------------------------

const ok = ({ data, error }) => {
  assert.equal(error, null, `unexpected error: ${JSON.stringify(error)}`);
  return data;
};

/** Polls `read` every 100 ms until `done(value)`, at most `seconds`; returns the last value. */
async function until(read, done, seconds) {
  const deadline = Date.now() + seconds * 1000;
  let value = await read();
  while (!done(value) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    value = await read();
  }
  return value;
}

/** The session endpoint, called as the README shows, with supabase-js's session. */
async function sessionEndpoint(method, body) {
  const {
    data: { session },
  } = await supabase.auth.getSession();
  const response = await fetch(`${ingestUrl}/v1/tradingview-session`, {
    method,
    headers: { Authorization: `Bearer ${session.access_token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

async function cookiesValid() {
  return ok(await supabase.from('user_config').select('cookies_valid').single()).cookies_valid;
}

/** An alert as TradingView posts it to the demo trader's webhook for this run's chart. */
async function alert(price) {
  const response = await fetch(`${ingestUrl}/webhook/u/${webhookToken}?chart=${chartId}`, {
    method: 'POST',
    headers: { 'Content-Type': 'text/plain; charset=utf-8' },
    body: JSON.stringify({ ticker: 'BINANCE:ETHUSDT', price: String(price), action: 'buy', interval: '15' }),
  });
  const answer = await response.json();
  assert.equal(response.status, 200, JSON.stringify(answer));
  return answer.signal_id;
}

/** The signal once its capture ended (completed or failed), read by the trader. */
async function captured(signalId) {
  const row = await until(
    async () =>
      ok(
        await supabase
          .from('signals')
          .select('screenshot_status, screenshot_path, screenshot_error')
          .eq('id', signalId)
          .single(),
      ),
    (r) => r.screenshot_status === 'completed' || r.screenshot_status === 'failed',
    60,
  );
  assert.equal(row.screenshot_status, 'completed', `the capture ended ${JSON.stringify(row)}`);
  const png = readFileSync(join(screenshotDir, row.screenshot_path));
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG is stored');
  return row;
}

/** capture_outcomes_total{outcome="completed",reason=kind} from the daemon's /metrics. */
async function completedCaptures(kind) {
  const text = await (await fetch(`${captureHealthUrl}/metrics`)).text();
  const line = text
    .split('\n')
    .find((l) => l.startsWith('capture_outcomes_total{') && l.includes('outcome="completed"') && l.includes(`reason="${kind}"`));
  return line ? Number(line.split(' ').pop()) : 0;
}

// --- the test --------------------------------------------------------------------------------

before(async () => {
  await new Promise((resolve, reject) => server.once('error', reject).listen(chartPort, '127.0.0.1', resolve));
  // The seed's signals are captured when the daemon starts; let it finish them first, so every
  // capture below is this test's.
  const waiting = await until(
    async () => {
      const { count, error } = await supabase
        .from('signals')
        .select('id', { count: 'exact', head: true })
        .in('screenshot_status', ['pending', 'processing']);
      assert.equal(error, null);
      return count;
    },
    (count) => count === 0,
    90,
  );
  assert.equal(waiting, 0, 'the demo trader\'s earlier captures finished');
});

after(() => new Promise((resolve) => server.close(resolve)));

test("a session from the dashboard is used for the trader's chart, and forgotten on DELETE", async () => {
  // A page on the dashboard's origin may call the endpoint (the browser's preflight).
  const preflight = await fetch(`${ingestUrl}/v1/tradingview-session`, {
    method: 'OPTIONS',
    headers: {
      Origin: dashboardOrigin,
      'Access-Control-Request-Method': 'PUT',
      'Access-Control-Request-Headers': 'authorization, content-type',
    },
  });
  assert.ok(preflight.ok, `preflight: ${preflight.status}`);
  assert.equal(preflight.headers.get('access-control-allow-origin'), dashboardOrigin);

  // PUT: stored, and the trader's own row says so.
  assert.deepEqual(await sessionEndpoint('PUT', tradingView), {
    status: 200,
    body: { success: true, cookies_valid: true },
  });
  assert.equal(await cookiesValid(), true);

  // An alert: rendered on the trader's chart with exactly their cookies.
  const chartsBefore = await completedCaptures('chart');
  const withSession = await captured(await alert(3412.75));
  const seen = visits.filter((v) => v.chartId === chartId);
  assert.equal(seen.length, 1, `one visit of the chart page: ${JSON.stringify(visits)}`);
  assert.equal(seen[0].symbol, 'BINANCE:ETHUSDT');
  assert.deepEqual(seen[0].cookies, {
    sessionid: tradingView.sessionid,
    sessionid_sign: tradingView.sessionid_sign,
    // CAPTURE_EXTRA_COOKIES' default (TradingView's privacy banner), and nothing else.
    cookiePrivacyPreferenceBannerProduction: 'accepted',
  });
  assert.equal(await completedCaptures('chart'), chartsBefore + 1, 'counted as a chart capture');
  assert.equal(withSession.screenshot_error, null);

  // DELETE: forgotten; the next alert gets the built-in history chart, and the page sees nobody.
  assert.deepEqual(await sessionEndpoint('DELETE'), {
    status: 200,
    body: { success: true, cookies_valid: false },
  });
  assert.equal(await cookiesValid(), false);
  const historyBefore = await completedCaptures('fallback');
  const visitsBefore = visits.length;
  await captured(await alert(3398.5));
  assert.equal(visits.length, visitsBefore, `no visit of the chart page: ${JSON.stringify(visits.slice(visitsBefore))}`);
  assert.equal(await completedCaptures('fallback'), historyBefore + 1, 'counted as a history chart');
});

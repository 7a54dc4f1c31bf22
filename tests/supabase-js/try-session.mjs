// The README's "trader's TradingView session" snippet, runnable against the local stack: signed in
// as the demo trader through supabase-js (see signedInDashboard in stack.mjs), it sends a
// TradingView session to ingest's PUT /v1/tradingview-session (or, with --delete, forgets it) and
// reads the trader's cookies_valid back through the dashboard's own client. Exits non-zero unless
// the answer is 2xx and cookies_valid is what it should be. scripts/dev up prints how to run it;
// scripts/test runs it against its test stack.
//
//   set -a; . .dev/stack.env; set +a
//   node tests/supabase-js/try-session.mjs [--delete] [sessionid sessionid_sign]

import { signedInDashboard } from './stack.mjs';

const INGEST_URL = process.env.INGEST_URL;
const token = process.env.DEMO_USER_ACCESS_TOKEN;
if (!INGEST_URL || !token) {
  throw new Error('INGEST_URL and DEMO_USER_ACCESS_TOKEN are not set: export .dev/stack.env from scripts/dev up');
}
const args = process.argv.slice(2);
const forget = args[0] === '--delete';
const [sessionid = 'local-demo-sessionid', sessionid_sign = 'v3:local-demo-sessionid-sign='] = forget ? [] : args;

const supabase = signedInDashboard(token);

// --- as in the README ------------------------------------------------------------------------
const {
  data: { session },
} = await supabase.auth.getSession();
const response = await fetch(`${INGEST_URL}/v1/tradingview-session`, {
  method: forget ? 'DELETE' : 'PUT', // DELETE forgets the session
  headers: { Authorization: `Bearer ${session.access_token}`, 'Content-Type': 'application/json' },
  body: forget ? undefined : JSON.stringify({ sessionid, sessionid_sign }),
});
// -----------------------------------------------------------------------------------------------

const answer = await response.text();
console.log(`${forget ? 'DELETE' : 'PUT'} ${INGEST_URL}/v1/tradingview-session -> ${response.status} ${answer}`);
const { data, error } = await supabase.from('user_config').select('cookies_valid').single();
if (error) throw new Error(`reading cookies_valid failed: ${JSON.stringify(error)}`);
console.log(`user_config.cookies_valid = ${data.cookies_valid}`);
if (!response.ok || data.cookies_valid !== !forget) {
  process.exitCode = 1;
}

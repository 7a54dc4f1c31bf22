// The local stack as the Next.js dashboard meets it: supabase-js clients against SUPABASE_URL
// (the gateway, which maps /rest/v1 to PostgREST as a Supabase project does), signed in with the
// access token Supabase Auth would issue. Settings come from the stack's stack.env, which
// scripts/test exports (by hand: `set -a; . .dev/stack.env; set +a`).
//
// Seeding goes around the API on purpose: traders are created in auth.users with a superuser psql
// session (Supabase Auth's job, which this stack does not run), and signals arrive through
// public.ingest_signal as the service role, exactly as the webhook edge delivers them.

import { createHmac, randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { createClient } from '@supabase/supabase-js';

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: run this suite through scripts/test, or export .dev/stack.env from scripts/dev up`,
    );
  }
  return value;
}

export const env = {
  url: required('SUPABASE_URL'),
  anonKey: required('SUPABASE_ANON_KEY'),
  serviceRoleKey: required('SUPABASE_SERVICE_ROLE_KEY'),
  jwtSecret: required('SUPABASE_JWT_SECRET'),
  databaseUrl: required('DATABASE_URL'),
};

const base64url = (data) => Buffer.from(data).toString('base64url');

/** An HS256 JWT signed with the project's JWT secret (Supabase's legacy signing key). */
export function mintJwt(claims) {
  const input = `${base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${base64url(JSON.stringify(claims))}`;
  return `${input}.${createHmac('sha256', env.jwtSecret).update(input).digest('base64url')}`;
}

/** The access token Supabase Auth issues to a signed-in user. */
export function accessTokenFor(userId, { expiresIn = 3600 } = {}) {
  const now = Math.floor(Date.now() / 1000);
  return mintJwt({
    iss: `${env.url}/auth/v1`,
    sub: userId,
    aud: 'authenticated',
    role: 'authenticated',
    email: `${userId}@tests.local`,
    iat: now,
    exp: now + expiresIn,
    session_id: randomUUID(),
    is_anonymous: false,
  });
}

const noSession = { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false };

/** The dashboard's client for a signed-in trader (the token handed over with `accessToken`). */
export function clientFor(userId, options = {}) {
  return clientWithToken(accessTokenFor(userId, options));
}

/** A client presenting whatever token it is given (forged or expired ones too). */
export function clientWithToken(token) {
  return createClient(env.url, env.anonKey, { accessToken: async () => token });
}

/** A visitor who is not signed in. */
export function anonClient() {
  return createClient(env.url, env.anonKey, { auth: noSession });
}

/** The server side (webhook edge, capture daemon): the secret service-role key. */
export function serviceClient() {
  return createClient(env.url, env.serviceRoleKey, { auth: noSession });
}

/**
 * Runs SQL as the stack's superuser; `vars` become psql variables (:'name' in the SQL), so
 * values are quoted by psql, never spliced into the text. Returns unaligned, tuples-only output.
 */
export function psql(sql, vars = {}) {
  const args = ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1'];
  for (const [name, value] of Object.entries(vars)) args.push('-v', `${name}=${value}`);
  args.push(env.databaseUrl);
  return execFileSync('psql', args, { input: sql, encoding: 'utf8' }).trim();
}

/** A fresh auth user; the auth.users trigger gives it a user_config row and a webhook token. */
export function createTrader(plan = 'pro') {
  const id = randomUUID();
  const token = psql(
    `insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)
       values (:'id', 'authenticated', 'authenticated', :'email', '{}', '{}');
     update public.user_config set plan = :'plan' where user_id = :'id' returning webhook_token;`,
    { id, email: `${id}@tests.local`, plan },
  );
  return { id, webhookToken: token };
}

/** Removes traders and, by cascade, everything they own. */
export function deleteTraders(traders) {
  for (const trader of traders) {
    psql(`delete from auth.users where id = :'id'`, { id: trader.id });
  }
}

/** One alert through public.ingest_signal, as the webhook edge sends it. */
export async function ingest(service, trader, alert) {
  const { data, error } = await service.rpc('ingest_signal', {
    p_token: trader.webhookToken,
    p_received_at: new Date().toISOString(),
    p_raw_message: alert.raw ?? JSON.stringify(alert),
    p_chart_id: alert.chartId ?? null,
    p_ticker: alert.ticker ?? null,
    p_exchange: alert.ticker ? alert.ticker.split(':')[0] : null,
    p_symbol: alert.ticker ? alert.ticker.split(':')[1] : null,
    p_price: alert.price ?? null,
    p_direction: alert.direction ?? null,
    p_indicator_name: alert.indicator ?? null,
    p_signal_time: alert.time ?? null,
    p_reject_code: alert.rejectCode ?? null,
    p_reject_message: alert.rejectMessage ?? null,
  });
  if (error) throw new Error(`ingest_signal failed: ${JSON.stringify(error)}`);
  return data;
}

/**
 * The dashboard's client for a user signed in with Supabase Auth: supabase-js holding the session
 * that `signInWithPassword` leaves in the client's storage, so `supabase.auth.getSession()` hands
 * the access token to the app (the README's session snippet) and to every REST call. The local
 * stack runs no Auth server, so the session is put in that storage directly, around a token Auth
 * would issue (for the demo trader, DEMO_USER_ACCESS_TOKEN from stack.env); nothing after that
 * differs from the browser.
 */
export function signedInDashboard(accessToken) {
  const claims = JSON.parse(Buffer.from(accessToken.split('.')[1], 'base64url').toString('utf8'));
  const session = {
    access_token: accessToken,
    token_type: 'bearer',
    expires_at: claims.exp,
    expires_in: claims.exp - Math.floor(Date.now() / 1000),
    // Never used: the token outlives the test, and refreshing needs the Auth server.
    refresh_token: 'no-auth-server-on-the-local-stack',
    user: {
      id: claims.sub,
      aud: claims.aud,
      role: claims.role,
      email: claims.email,
      app_metadata: claims.app_metadata ?? {},
      user_metadata: claims.user_metadata ?? {},
      created_at: new Date((claims.iat ?? 0) * 1000).toISOString(),
    },
  };
  const storageKey = 'sb-local-stack-auth-token';
  const items = new Map([[storageKey, JSON.stringify(session)]]);
  return createClient(env.url, env.anonKey, {
    auth: {
      storageKey,
      storage: {
        getItem: (key) => items.get(key) ?? null,
        setItem: (key, value) => void items.set(key, value),
        removeItem: (key) => void items.delete(key),
      },
      persistSession: true,
      autoRefreshToken: false,
      detectSessionInUrl: false,
    },
  });
}

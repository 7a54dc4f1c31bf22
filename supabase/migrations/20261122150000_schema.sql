-- signal-capture: the tables, their types and their indexes.
--
-- What this migration guarantees:
--   * `public` holds only what the dashboard reads through PostgREST and Realtime: `plans`,
--     `user_config`, `signals`, `webhook_deliveries`. Row level security and grants for them live in
--     rls-policies/ (and reach the migrations through scripts/sync-migrations).
--   * `private` holds what no client may touch: the capture queue, the retry-dedup fingerprints and
--     the daemon wake-up flag. PostgREST does not expose it and `anon`/`authenticated` get no usage on
--     it, so lease churn never reaches Realtime subscribers and never bloats `signals`.
--   * Every foreign key and every policy/dashboard filter has an index; `(user_id, timestamp desc)`
--     first, because "my signals, newest first" is the dashboard's main query.
--   * Telegram settings are validated where they are stored, so the capture daemon can send to
--     whatever it finds there: a chat id the Bot API accepts, and notifications only with a chat.
--   * A replayed webhook is stored once, however late the replay comes: at most one accepted
--     delivery per trader and edge delivery id.
--
-- Functions, triggers and policies are not here: scripts/sync-migrations generates them into the
-- migrations after this one from sql/, rls-policies/ and storage-policies/ (one source of truth;
-- `scripts/sync-migrations --check` fails when the two drift). A change to a table is a new
-- hand-written migration; this one is never edited again once a project has applied it.

create schema if not exists private;
comment on schema private is
  'signal-capture internals: capture queue, dedup fingerprints, helpers. Not exposed by PostgREST.';
revoke all on schema private from public;

-- pgcrypto lives in `extensions` on every Supabase project; the local bootstrap mirrors that.
create extension if not exists pgcrypto with schema extensions;

-- ---------------------------------------------------------------------------------------------
-- plans: what each subscription buys. Reference data, so the rows ship with the schema.
-- capture_priority: 1 is captured first (premium), 4 last (free).
-- ---------------------------------------------------------------------------------------------
create table public.plans (
  id text primary key check (id ~ '^[a-z][a-z0-9_]{0,31}$'),
  name text not null check (length(name) between 1 and 64),
  monthly_signal_quota integer not null check (monthly_signal_quota >= 0),
  capture_priority smallint not null check (capture_priority between 1 and 4),
  rate_limit_per_minute integer not null check (rate_limit_per_minute > 0),
  screenshot_retention_days integer not null check (screenshot_retention_days > 0),
  created_at timestamptz not null default now()
);
comment on table public.plans is 'Subscription plans: monthly quota, capture priority (1 first), per-minute rate limit, screenshot retention.';

insert into public.plans (id, name, monthly_signal_quota, capture_priority, rate_limit_per_minute, screenshot_retention_days)
values
  ('free',    'Free',       100, 4,  10,   7),
  ('basic',   'Basic',     1000, 3,  30,  30),
  ('pro',     'Pro',      10000, 2,  60,  90),
  ('premium', 'Premium', 100000, 1, 120, 365);

-- ---------------------------------------------------------------------------------------------
-- user_config: one row per auth user, created by a trigger on auth.users (sql/user_config.sql).
-- The trader may edit only the settings columns (rls-policies/user_config.sql); the token changes
-- only through rotate_webhook_token(), and plan, quota counters and cookies only server-side.
-- ---------------------------------------------------------------------------------------------
create table public.user_config (
  user_id uuid primary key references auth.users (id) on delete cascade,
  webhook_token text not null unique check (webhook_token ~ '^[A-Za-z0-9_-]{43}$'),
  webhook_token_rotated_at timestamptz not null default now(),
  webhook_enabled boolean not null default true,
  default_chart_id text check (default_chart_id ~ '^[A-Za-z0-9]{1,32}$'),
  -- TradingView sessionid + sessionid_sign, sealed with XChaCha20-Poly1305 under a server key and
  -- bound to user_id. Plaintext never reaches this table.
  tradingview_cookies_sealed bytea check (octet_length(tradingview_cookies_sealed) <= 8192),
  cookies_valid boolean not null default false,
  cookies_updated_at timestamptz,
  plan text not null default 'free' references public.plans (id),
  -- Monthly quota, reset lazily by ingest_signal when a signal arrives in a new month (UTC).
  quota_period_start date not null default (date_trunc('month', now() at time zone 'UTC'))::date,
  signals_this_period integer not null default 0 check (signals_this_period >= 0),
  -- Per-minute rate limit: a fixed 60 s window opened by the first signal after the previous one.
  rate_window_started_at timestamptz not null default '-infinity',
  rate_window_count integer not null default 0 check (rate_window_count >= 0),
  -- Capture and notification preferences.
  screenshot_resolution text not null default '720p' check (screenshot_resolution in ('720p', '1080p')),
  chart_theme text not null default 'dark' check (chart_theme in ('dark', 'light')),
  notify_telegram boolean not null default false,
  -- A chat the Bot API's sendMessage/sendPhoto accept as `chat_id`: a numeric id (a user's
  -- positive id, a group's negative id, a supergroup's or channel's -100... id; never 0, no leading
  -- zeros, at most 16 digits: Telegram ids fit in 52 bits) or a public channel's @username (5 to 32
  -- letters, digits and underscores, starting with a letter and not ending with an underscore).
  telegram_chat_id text check (telegram_chat_id ~ '^(-?[1-9][0-9]{0,15}|@[A-Za-z][A-Za-z0-9_]{3,30}[A-Za-z0-9])$'),
  notify_on_failure boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint user_config_telegram_needs_chat_check check (not notify_telegram or telegram_chat_id is not null)
);
comment on table public.user_config is 'Per-trader settings, webhook token, sealed TradingView session, plan and quota counters.';
comment on column public.user_config.notify_telegram is
  'Send each completed capture (signal and screenshot) to telegram_chat_id. Needs a chat id.';
comment on column public.user_config.telegram_chat_id is
  'Telegram chat for notifications: a numeric chat id (negative for groups and channels) or a public channel''s @username.';
comment on column public.user_config.notify_on_failure is
  'With notify_telegram: also report captures that failed, with the reason.';
create index user_config_plan_idx on public.user_config (plan);

-- ---------------------------------------------------------------------------------------------
-- signals: one row per accepted alert. Prices and tickers are written once by ingest_signal;
-- the trader edits only the journal columns result, profit_loss and notes.
-- ---------------------------------------------------------------------------------------------
create table public.signals (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  indicator_name text check (length(indicator_name) <= 200),
  ticker text not null check (length(ticker) between 1 and 80),
  exchange text check (length(exchange) between 1 and 40),
  symbol text not null check (length(symbol) between 1 and 40),
  price numeric check (price is null or (price >= 0 and price < 1e15)),
  signal_type text check (length(signal_type) <= 100),
  direction text check (direction in ('long', 'short')),
  interval text check (length(interval) <= 20),
  chart_id text check (chart_id ~ '^[A-Za-z0-9]{1,32}$'),
  screenshot_url text,
  screenshot_path text,
  screenshot_status text not null default 'pending'
    check (screenshot_status in ('pending', 'processing', 'completed', 'failed', 'skipped')),
  -- Why the screenshot failed or was skipped, in words the trader can act on.
  screenshot_error text,
  raw_message text not null check (octet_length(raw_message) <= 65536),
  "timestamp" timestamptz not null,
  result text not null default 'pending' check (result in ('pending', 'win', 'loss', 'breakeven', 'skip')),
  profit_loss numeric check (profit_loss is null or abs(profit_loss) < 1e15),
  notes text check (length(notes) <= 10000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.signals is 'Trading signals received from TradingView webhooks, with their screenshot and the trader''s journal.';
comment on column public.signals."timestamp" is 'When the alert fired: the time in the alert if it carried one, else when the webhook arrived.';
create index signals_user_timestamp_idx on public.signals (user_id, "timestamp" desc);
create index signals_user_ticker_timestamp_idx on public.signals (user_id, ticker, "timestamp" desc);
-- `capture prune` asks for the oldest signals that still have a stored screenshot
-- (private.screenshots_due_for_pruning in sql/50_retention.sql); this partial index holds exactly
-- those rows, in that order, and shrinks as screenshots are pruned.
create index signals_screenshot_created_idx on public.signals (created_at) where screenshot_path is not null;

-- ---------------------------------------------------------------------------------------------
-- webhook_deliveries: the trader's delivery log, one row per call on their token.
-- ---------------------------------------------------------------------------------------------
create table public.webhook_deliveries (
  id bigint generated always as identity primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  received_at timestamptz not null,
  outcome text not null check (outcome in ('accepted', 'duplicate', 'rejected')),
  -- Machine-readable reason for a rejection (the HTTP error code the edge answered with).
  reason text check (reason ~ '^[a-z_]{1,40}$'),
  http_status smallint not null check (http_status between 200 and 599),
  message text check (length(message) <= 1000),
  signal_id uuid references public.signals (id) on delete set null,
  chart_id text check (length(chart_id) <= 64),
  -- The start of what was sent, so a trader can see what a rejected alert said.
  body_excerpt text check (length(body_excerpt) <= 500),
  -- The webhook edge gives each request a delivery id (a UUIDv7) and sends it with every call of
  -- public.ingest_signal for that request. When a call commits but its answer is lost (a timeout, a
  -- crash of ingest), the edge spools the webhook and replays it later with the same id, and
  -- ingest_signal answers `duplicate` with the first signal instead of storing a second one (the
  -- 30-second fingerprint window cannot: a replay may come hours later). Null for callers that
  -- send none. The ids live as long as the delivery log: no table to insert into or prune on the
  -- hot path, which only adds an entry to the unique index below for an accepted delivery.
  delivery_id uuid,
  check ((outcome = 'rejected') = (reason is not null))
);
comment on table public.webhook_deliveries is 'Delivery log: one row per webhook call on a trader''s token (accepted, duplicate, rejected and why).';
comment on column public.webhook_deliveries.delivery_id is
  'The id the webhook edge gave this request; the same id on a replay, so a replay of an accepted delivery is recognised.';
create index webhook_deliveries_user_received_idx on public.webhook_deliveries (user_id, received_at desc);
create index webhook_deliveries_signal_idx on public.webhook_deliveries (signal_id);
-- At most one accepted delivery per trader and delivery id; also what the replay lookup reads.
-- Duplicate and rejected rows may repeat an id: they log every replay.
create unique index webhook_deliveries_user_delivery_idx
  on public.webhook_deliveries (user_id, delivery_id)
  where outcome = 'accepted' and delivery_id is not null;

-- ---------------------------------------------------------------------------------------------
-- private.capture_jobs: the capture queue. One row per signal still to capture (or dead-lettered).
-- Completed and skipped jobs are deleted; their outcome lives on the signal.
-- ---------------------------------------------------------------------------------------------
create table private.capture_jobs (
  signal_id uuid primary key references public.signals (id) on delete cascade,
  priority smallint not null check (priority between 1 and 4),
  state text not null default 'queued' check (state in ('queued', 'running', 'failed')),
  run_at timestamptz not null default now(),
  attempts smallint not null default 0 check (attempts >= 0),
  max_attempts smallint not null default 3 check (max_attempts between 1 and 10),
  lease_token uuid,
  locked_by text check (length(locked_by) <= 200),
  lease_expires_at timestamptz,
  last_error text check (length(last_error) <= 2000),
  created_at timestamptz not null default now(),
  check ((state = 'running') = (lease_token is not null and lease_expires_at is not null))
);
comment on table private.capture_jobs is 'Capture queue: claimed by priority then run_at with FOR UPDATE SKIP LOCKED under a lease.';
-- Matches the claim's WHERE and ORDER BY exactly.
create index capture_jobs_ready_idx on private.capture_jobs (priority, run_at) where state = 'queued';
-- Matches the reclaim of expired leases.
create index capture_jobs_lease_idx on private.capture_jobs (lease_expires_at) where state = 'running';

-- Capture daemons announce themselves here (heartbeat), for /health and estimated waits.
create table private.capture_workers (
  worker_id text primary key check (length(worker_id) between 1 and 200),
  concurrency integer not null check (concurrency between 1 and 256),
  started_at timestamptz not null default now(),
  heartbeat_at timestamptz not null default now()
);

-- One row: is any capture daemon idle and waiting for a NOTIFY? ingest_signal notifies only then.
create table private.capture_wakeup (
  singleton boolean primary key default true check (singleton),
  daemon_waiting boolean not null default false
);
insert into private.capture_wakeup (singleton, daemon_waiting) values (true, false);

-- Retry dedup: the fingerprint of (chart, body) of each accepted alert, per trader. TradingView
-- resends a 5xx up to three times after 5 s; a resend inside the window returns the first signal.
create table private.signal_dedup (
  user_id uuid not null,
  fingerprint bytea not null,
  -- No foreign key: a fingerprint whose signal was deleted simply stops matching (the lookup joins
  -- signals), and the hot path is spared a check and an index.
  signal_id uuid not null,
  received_at timestamptz not null,
  -- fingerprint first: lookups give both columns, and the per-trader clean-up of expired
  -- fingerprints must take signal_dedup_user_received_idx, not a scan of all the trader's rows.
  primary key (fingerprint, user_id)
);
create index signal_dedup_user_received_idx on private.signal_dedup (user_id, received_at);

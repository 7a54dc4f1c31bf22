-- signal-capture: checked TradingView sessions, the trader's notices, and screenshots queued for
-- deletion (issue 13).
--
-- What this migration adds:
--   * user_config.cookies_checked_at: when the stored TradingView session was last found signed in
--     or signed out (by `capture check-sessions`, the daemon's periodic check, or a capture that met
--     TradingView's sign-in wall). Null: not checked since it was stored.
--   * private.tradingview_session_checks: when each stored session is next due for a check. A
--     check claims the row and moves due_at a whole interval ahead in the same statement, so no two
--     daemons (or a daemon and the command) check one session twice within an interval. Expired
--     sessions wait at 'infinity' until the trader stores a new one.
--   * public.trader_notices: what the dashboard shows the trader about their account, one row per
--     event (today: their TradingView session expired), written server-side only, readable and
--     dismissable by its owner (rls-policies/50_trader_notices.sql).
--   * private.screenshot_deletions: Storage objects whose signal was deleted, waiting for the
--     capture daemon or `capture prune` to remove them through the Storage API (Supabase refuses
--     SQL deletes on storage.objects, and SQL cannot call HTTP), retried until done.
--
-- Functions, triggers and policies for them are in sql/70_tradingview_sessions.sql,
-- sql/80_screenshot_deletions.sql and rls-policies/50_trader_notices.sql.

alter table public.user_config add column cookies_checked_at timestamptz;
comment on column public.user_config.cookies_checked_at is
  'When the stored TradingView session was last checked (signed in or out); null until its first check.';

create table private.tradingview_session_checks (
  user_id uuid primary key references public.user_config (user_id) on delete cascade,
  due_at timestamptz not null default now()
);
comment on table private.tradingview_session_checks is
  'When each stored TradingView session is next checked; a claim moves due_at one interval ahead.';
-- The claim's WHERE and ORDER BY.
create index tradingview_session_checks_due_idx on private.tradingview_session_checks (due_at);
-- Sessions stored before this migration: due now (the checker paces them over its interval).
insert into private.tradingview_session_checks (user_id, due_at)
select user_id, case when cookies_valid then now() else 'infinity' end
  from public.user_config
 where tradingview_cookies_sealed is not null;

create table public.trader_notices (
  id bigint generated always as identity primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  kind text not null check (kind in ('tradingview_session_expired')),
  -- What the dashboard shows, in words the trader can act on.
  message text not null check (length(message) between 1 and 1000),
  created_at timestamptz not null default now(),
  -- Set by the trader (the dashboard) when they dismiss it.
  read_at timestamptz
);
comment on table public.trader_notices is
  'Notices for the trader about their account (e.g. their TradingView session expired); the owner reads and dismisses them.';
create index trader_notices_user_created_idx on public.trader_notices (user_id, created_at desc);

create table private.screenshot_deletions (
  object_path text primary key check (length(object_path) between 1 and 1024),
  -- Moves when the same path is queued again (an upload that landed after its signal was deleted),
  -- so a deletion in flight for the earlier queueing does not clear the later one.
  queued_at timestamptz not null default now(),
  next_attempt_at timestamptz not null default now(),
  attempts integer not null default 0 check (attempts >= 0),
  last_error text check (length(last_error) <= 2000)
);
comment on table private.screenshot_deletions is
  'Storage objects of deleted signals, removed through the Storage API by capture (daemon or prune), retried until done.';
create index screenshot_deletions_due_idx on private.screenshot_deletions (next_attempt_at);

-- Reached through functions only, like every table in private.
revoke all on table private.tradingview_session_checks, private.screenshot_deletions
  from public, anon, authenticated, service_role;

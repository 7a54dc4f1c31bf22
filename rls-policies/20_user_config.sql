-- user_config: a trader reads their own row and edits only their settings. The token changes only
-- through rotate_webhook_token() (the column grant below lets that function's UPDATE through; the
-- guard trigger in sql/10_user_config.sql refuses any other change and generates the value itself).
-- Cookies, plan and quota counters are written server-side only. The Telegram chat is linked only by
-- the bot (no grant on telegram_chat_id); the trader's grants on telegram_linked_at and
-- telegram_link_code_expires_at let telegram_link_code() and unlink_telegram() through, and the
-- guard trigger in sql/70_telegram_link.sql allows only unlinking and generated codes. Rows are
-- created by the auth.users trigger and removed with the auth user: traders insert and delete nothing.
--
-- SELECT is granted column by column, leaving out tradingview_cookies_sealed: the blob is useless
-- without the server's seal key, but a stolen dashboard session (or an XSS on it) should not be able
-- to walk off with it and wait for a key leak. cookies_valid, cookies_updated_at and
-- cookies_checked_at say all the dashboard needs about the session. A column added later is not
-- readable by traders until it is listed here. PostgREST's `select=*` expands to every column and
-- is refused (42501) for a role lacking one: the dashboard selects the columns it shows.

alter table public.user_config enable row level security;

revoke all on table public.user_config from public, anon, authenticated, service_role;
grant select (user_id, webhook_token, webhook_token_rotated_at, webhook_enabled, default_chart_id,
               cookies_valid, cookies_updated_at, cookies_checked_at, plan, quota_period_start,
               signals_this_period, rate_window_started_at, rate_window_count,
               screenshot_resolution, chart_theme, notify_telegram, telegram_chat_id,
               notify_on_failure, telegram_linked_at, telegram_link_code_expires_at,
               created_at, updated_at)
  on table public.user_config to authenticated;
grant update (webhook_enabled, default_chart_id, screenshot_resolution, chart_theme,
              notify_telegram, notify_on_failure, webhook_token,
              telegram_linked_at, telegram_link_code_expires_at)
  on table public.user_config to authenticated;
grant select, insert, update, delete on table public.user_config to service_role;

drop policy if exists "traders read their own config" on public.user_config;
create policy "traders read their own config"
  on public.user_config for select to authenticated
  using (user_id = (select auth.uid()));

drop policy if exists "traders update their own config" on public.user_config;
create policy "traders update their own config"
  on public.user_config for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));

-- user_config: a trader reads their own row and edits only their settings. The token changes only
-- through rotate_webhook_token() (the column grant below lets that function's UPDATE through; the
-- guard trigger in sql/10_user_config.sql refuses any other change and generates the value itself).
-- Cookies, plan and quota counters are written server-side only. The Telegram chat is linked only by
-- the bot (no grant on telegram_chat_id); the trader's grants on telegram_linked_at and
-- telegram_link_code_expires_at let telegram_link_code() and unlink_telegram() through, and the
-- guard trigger in sql/70_telegram_link.sql allows only unlinking and generated codes. Rows are
-- created by the auth.users trigger and removed with the auth user: traders insert and delete nothing.

alter table public.user_config enable row level security;

revoke all on table public.user_config from public, anon, authenticated, service_role;
grant select on table public.user_config to authenticated;
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

-- Structure and privileges: what the policies promise, checked on the catalog itself.
begin;
set local search_path = extensions, public;
select plan(27);

select tables_are('public', array['plans', 'user_config', 'signals', 'webhook_deliveries', 'trader_notices'],
  'public holds exactly the dashboard tables');
select is((select count(*)::int from pg_tables where schemaname = 'public' and not rowsecurity), 0,
  'every public table has row level security enabled');
select policies_are('public', 'signals', array['traders read their own signals',
  'traders journal their own signals', 'traders delete their own signals']);
select policies_are('public', 'user_config', array['traders read their own config', 'traders update their own config']);
select policies_are('public', 'webhook_deliveries', array['traders read their own deliveries']);
select policies_are('public', 'plans', array['plans are readable by signed-in users']);
select policies_are('public', 'trader_notices', array['traders read their own notices',
  'traders mark their own notices read', 'traders delete their own notices']);
select ok(not exists (select 1 from pg_policies where schemaname = 'public' and 'public' = any(roles)),
  'no policy applies to every role: each names the role it is for');

-- Anonymous callers have no privilege on any public table, sequence or function.
select is((select count(*)::int from information_schema.role_table_grants
            where table_schema = 'public' and grantee in ('anon', 'PUBLIC')), 0,
  'anon has no table privileges in public');
select is((select count(*)::int from pg_proc p join pg_namespace n on n.oid = p.pronamespace
            where n.nspname in ('public', 'private') and has_function_privilege('anon', p.oid, 'execute')), 0,
  'anon can execute no function of ours');
select ok(not has_schema_privilege('anon', 'private', 'usage') and not has_schema_privilege('authenticated', 'private', 'usage'),
  'clients have no usage on the private schema');

-- Column privileges: the trader edits only the journal on signals and only settings on user_config.
select is((select array_agg(column_name::text order by column_name) from information_schema.column_privileges
            where table_schema = 'public' and table_name = 'signals' and grantee = 'authenticated' and privilege_type = 'UPDATE'),
  array['notes', 'profit_loss', 'result'], 'authenticated updates only result, profit_loss, notes on signals');
select is((select array_agg(column_name::text order by column_name) from information_schema.column_privileges
            where table_schema = 'public' and table_name = 'user_config' and grantee = 'authenticated' and privilege_type = 'UPDATE'),
  array['chart_theme', 'default_chart_id', 'notify_on_failure', 'notify_telegram', 'screenshot_resolution',
        'telegram_link_code_expires_at', 'telegram_linked_at', 'webhook_enabled', 'webhook_token'],
  'authenticated updates only settings (and the guarded token and Telegram link; never the chat id) on user_config');
select ok(not has_table_privilege('authenticated', 'public.signals', 'insert')
          and not has_table_privilege('authenticated', 'public.user_config', 'insert')
          and not has_table_privilege('authenticated', 'public.user_config', 'delete')
          and not has_table_privilege('authenticated', 'public.webhook_deliveries', 'insert')
          and not has_table_privilege('authenticated', 'public.webhook_deliveries', 'update')
          and not has_table_privilege('authenticated', 'public.trader_notices', 'insert')
          and not has_column_privilege('authenticated', 'public.trader_notices', 'message', 'update'),
  'authenticated inserts nothing, deletes no config, writes no delivery log, only marks notices read');

-- Functions: search_path pinned everywhere, SECURITY DEFINER never reachable by clients.
select is((select array_agg(p.oid::regprocedure::text) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
            where n.nspname in ('public', 'private')
              and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%')),
  null, 'every function of ours pins its search_path');
select is((select array_agg(p.oid::regprocedure::text) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
            where n.nspname in ('public', 'private') and p.prosecdef
              and (has_function_privilege('authenticated', p.oid, 'execute') or has_function_privilege('anon', p.oid, 'execute'))),
  null, 'no SECURITY DEFINER function is executable by anon or authenticated');
select function_privs_are('public', 'ingest_signal',
  array['text', 'timestamp with time zone', 'text', 'text', 'text', 'text', 'text', 'numeric', 'text', 'text', 'text', 'text',
        'timestamp with time zone', 'text', 'text', 'uuid'],
  'authenticated', array[]::text[], 'signed-in users cannot call ingest_signal');
select ok(has_function_privilege('service_role', 'public.ingest_signal(text, timestamptz, text, text, text, text, text, numeric, text, text, text, text, timestamptz, text, text, uuid)', 'execute'),
  'the service role can call ingest_signal');
select function_privs_are('public', 'rotate_webhook_token', array[]::text[], 'authenticated', array['EXECUTE']);
select function_privs_are('public', 'signal_stats', array[]::text[], 'authenticated', array['EXECUTE']);
select function_privs_are('public', 'telegram_link_code', array[]::text[], 'authenticated', array['EXECUTE']);
select function_privs_are('public', 'unlink_telegram', array[]::text[], 'authenticated', array['EXECUTE']);
select ok(not has_function_privilege('authenticated', 'private.claim_capture_jobs(text, integer, interval)', 'execute')
          and has_function_privilege('service_role', 'private.claim_capture_jobs(text, integer, interval)', 'execute'),
  'only the service role works the capture queue');

-- Realtime and storage.
select ok(exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime'
                   and schemaname = 'public' and tablename = 'signals'), 'signals is in supabase_realtime');
select is((select count(*)::int from pg_publication_tables where pubname = 'supabase_realtime'
            and schemaname = 'private'), 0, 'queue tables stay out of Realtime');
select results_eq($$ select public, file_size_limit, allowed_mime_types from storage.buckets where id = 'screenshots' $$,
  $$ values (false, 5242880::bigint, array['image/png']) $$, 'screenshots is private, PNG only, 5 MB');
select is((select array_agg(policyname::text) from pg_policies where schemaname = 'storage' and tablename = 'objects'
            and policyname like 'traders%'), array['traders read their own screenshots'],
  'end users only read their own screenshots');

select * from finish();
rollback;

-- How `postgres` may create policies on auth and storage tables it does not own.
--
-- PostgreSQL lets only a table's owner CREATE/ALTER/DROP POLICY on it or DROP TRIGGER from it.
-- On Supabase `postgres` owns neither auth.users nor storage.objects, and it is no longer a member
-- of their owners: the membership Supabase granted in supabase/postgres
-- migrations/db/migrations/20220609081115_grant-supabase-auth-admin-and-supabase-storage-admin-to-postgres.sql
-- was revoked by 20240319072844_lock_down_postgres_access_to_auth_and_storage.sql,
-- 20240607084701_revoke_supabase_storage_admin_from_postgres.sql,
-- 20240627101908_revoke_supabase_auth_admin_from_postgres.sql and
-- 20250421084701_revoke_admin_roles_from_postgres.sql. What lets it create a policy on
-- storage.objects today is the `supautils` library Supabase preloads, configured in
-- ansible/files/postgresql_config/conf.d/supautils.conf:
--   supautils.policy_grants       = '{"postgres": ["auth.users", ..., "storage.buckets", "storage.objects", ...]}'
--   supautils.drop_trigger_grants = (the same list)
-- i.e. neither ownership nor membership, but a per-table exemption from the ownership check for
-- exactly those two commands.
--
-- supautils is not packaged for Debian, so on a cluster without it this file emulates it:
--   1. `postgres` becomes a member of supabase_auth_admin and supabase_storage_admin, Supabase's
--      own mechanism from 2022 to 2024, which gives it the owners' rights;
--   2. event triggers narrow those rights back to what supautils allows. When `postgres` runs DDL
--      on an object in schema auth, storage or realtime, the statement fails with SQLSTATE 42501
--      unless it is CREATE/ALTER/DROP POLICY or DROP TRIGGER on a table of the supautils list,
--      CREATE TRIGGER (which Supabase allows through the TRIGGER privilege postgres holds), or
--      GRANT/REVOKE. An index, a column, a comment, RLS settings or a new table in those schemas
--      therefore fails here as it fails on Supabase.
-- Known gap: GRANT and REVOKE are not narrowed (event triggers do not say which privileges a
-- GRANT names); on Supabase postgres can only pass on what it holds WITH GRANT OPTION (SELECT on
-- auth.users, everything on storage.buckets and storage.objects).
--
-- The functions live in schema `supabase_compat`, which exists only on the local stack, belongs
-- to the superuser and holds nothing but these read-only checks. Skipped where supautils is configured (a real Supabase
-- database) and where the emulation is already installed.

do $emulation$
begin
  if current_setting('supautils.policy_grants', true) is not null then
    return;
  end if;
  if exists (select from pg_namespace where nspname = 'supabase_compat') then
    return;
  end if;

  create schema supabase_compat authorization supabase_admin;
  revoke all on schema supabase_compat from public;
  comment on schema supabase_compat is
    'Local stack only: emulates supautils.policy_grants / drop_trigger_grants for postgres (supabase/bootstrap/60-policy-grants-emulation.sql).';

  -- The tables of supautils.policy_grants and supautils.drop_trigger_grants for postgres, as in
  -- conf.d/supautils.conf (both lists are the same).
  create function supabase_compat.grantable_tables() returns text[]
    language sql immutable
    set search_path = pg_catalog
    as $$
      select array[
        'auth.audit_log_entries', 'auth.flow_state', 'auth.identities', 'auth.instances',
        'auth.mfa_amr_claims', 'auth.mfa_challenges', 'auth.mfa_factors', 'auth.oauth_clients',
        'auth.one_time_tokens', 'auth.refresh_tokens', 'auth.saml_providers',
        'auth.saml_relay_states', 'auth.sessions', 'auth.sso_domains', 'auth.sso_providers',
        'auth.users', 'realtime.messages', 'realtime.subscription', 'storage.buckets',
        'storage.buckets_analytics', 'storage.objects', 'storage.prefixes',
        'storage.s3_multipart_uploads', 'storage.s3_multipart_uploads_parts'
      ]
    $$;

  create function supabase_compat.guarded_schemas() returns text[]
    language sql immutable
    set search_path = pg_catalog
    as $$ select array['auth', 'storage', 'realtime'] $$;

  -- Whether this statement runs with postgres's rights (directly or after SET ROLE).
  create function supabase_compat.acting_as_postgres() returns boolean
    language sql stable
    set search_path = pg_catalog
    as $$ select 'postgres' in (session_user::text, current_user::text) $$;

  create function supabase_compat.check_ddl_command_end() returns event_trigger
    language plpgsql
    set search_path = pg_catalog
    as $$
    declare
      cmd record;
      target_schema text;
      target_table text;
    begin
      if not supabase_compat.acting_as_postgres() then
        return;
      end if;
      for cmd in select * from pg_event_trigger_ddl_commands() loop
        if cmd.command_tag in ('GRANT', 'REVOKE') then
          continue;
        end if;

        target_table := null;
        if cmd.classid = 'pg_policy'::regclass then
          select n.nspname, n.nspname || '.' || c.relname into target_schema, target_table
          from pg_policy p join pg_class c on c.oid = p.polrelid join pg_namespace n on n.oid = c.relnamespace
          where p.oid = cmd.objid;
        elsif cmd.classid = 'pg_trigger'::regclass then
          select n.nspname, n.nspname || '.' || c.relname into target_schema, target_table
          from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
          where t.oid = cmd.objid;
        elsif cmd.object_type = 'schema' then
          target_schema := cmd.object_identity;
        else
          target_schema := cmd.schema_name;
        end if;

        if target_schema is null or target_schema <> all (supabase_compat.guarded_schemas()) then
          continue;
        end if;
        if cmd.command_tag in ('CREATE POLICY', 'ALTER POLICY')
           and target_table = any (supabase_compat.grantable_tables()) then
          continue;
        end if;
        if cmd.command_tag = 'CREATE TRIGGER' then
          continue;
        end if;

        raise exception '% on % is not allowed: on Supabase, postgres does not own the % schema''s objects',
            cmd.command_tag, cmd.object_identity, target_schema
          using errcode = '42501',
                hint = 'Supabase lets postgres only create/alter/drop policies and create/drop triggers '
                       'on auth and storage tables (supautils.policy_grants); this local stack '
                       'enforces the same (supabase/bootstrap/60-policy-grants-emulation.sql).';
      end loop;
    end
    $$;

  create function supabase_compat.check_sql_drop() returns event_trigger
    language plpgsql
    set search_path = pg_catalog
    as $$
    declare
      obj record;
      target_schema text;
      target_table text;
    begin
      if not supabase_compat.acting_as_postgres() then
        return;
      end if;
      -- Only what the statement named: objects dropped as a consequence (for example the
      -- foreign-key triggers on auth.users when a table referencing it is dropped) are fine.
      for obj in select * from pg_event_trigger_dropped_objects() where original loop
        target_table := null;
        if obj.object_type in ('policy', 'trigger') then
          -- address_names = {schema, table, policy or trigger}
          target_schema := obj.address_names[1];
          target_table := obj.address_names[1] || '.' || obj.address_names[2];
        elsif obj.object_type = 'schema' then
          target_schema := obj.object_identity;
        else
          target_schema := obj.schema_name;
        end if;

        if target_schema is null or target_schema <> all (supabase_compat.guarded_schemas()) then
          continue;
        end if;
        if obj.object_type in ('policy', 'trigger')
           and target_table = any (supabase_compat.grantable_tables()) then
          continue;
        end if;

        raise exception 'DROP % % is not allowed: on Supabase, postgres does not own the % schema''s objects',
            upper(obj.object_type), obj.object_identity, target_schema
          using errcode = '42501',
                hint = 'Supabase lets postgres only drop policies and triggers on auth and storage '
                       'tables (supautils.drop_trigger_grants); this local stack enforces the same '
                       '(supabase/bootstrap/60-policy-grants-emulation.sql).';
      end loop;
    end
    $$;

  -- Event trigger functions run with the rights of whoever runs the DDL (any role, even `anon`
  -- creating a temporary table), so every role must reach these read-only helpers.
  grant usage on schema supabase_compat to public;

  create event trigger supabase_compat_policy_grants_ddl on ddl_command_end
    execute function supabase_compat.check_ddl_command_end();
  create event trigger supabase_compat_policy_grants_drop on sql_drop
    execute function supabase_compat.check_sql_drop();

  grant supabase_auth_admin, supabase_storage_admin to postgres;
end
$emulation$;

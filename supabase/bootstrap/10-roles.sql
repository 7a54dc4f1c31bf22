-- Roles: who may do what on a Supabase project, created only when missing.
--
-- The cluster superuser is `supabase_admin` (initdb -U supabase_admin), as on Supabase where
-- 00000000000000-initial-schema.sql makes it SUPERUSER CREATEDB CREATEROLE REPLICATION BYPASSRLS.
-- `postgres` is the role the dashboard, `supabase db push` and `supabase migration up` use. It
-- starts as a superuser on Supabase's images and is demoted by
-- migrations/db/migrations/10000000000000_demote-postgres.sql:
--   ALTER ROLE postgres NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS;
-- so migrations that pass here pass there. Settings and memberships below are applied together
-- with the CREATE ROLE, never to a role that already existed (a real project keeps its own).

do $roles$
declare
  db text := current_database();
begin
  -- The API roles PostgREST switches to. Created NOLOGIN NOINHERIT by
  -- init-scripts/00000000000000-initial-schema.sql, made INHERIT by
  -- migrations/20230529180330_alter_api_roles_for_inherit.sql. Short statement timeouts as in
  -- 00000000000000-initial-schema.sql.
  if not exists (select from pg_roles where rolname = 'anon') then
    create role anon nologin inherit;
    alter role anon set statement_timeout = '3s';
  end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin inherit;
    alter role authenticated set statement_timeout = '8s';
  end if;
  if not exists (select from pg_roles where rolname = 'service_role') then
    -- BYPASSRLS: the service role key is meant to bypass policies.
    create role service_role nologin inherit bypassrls;
  end if;

  -- PostgREST logs in as `authenticator` and switches to the JWT's role. NOINHERIT, so it has no
  -- privileges of its own (initial-schema); timeouts from
  -- migrations/20221028101028_set_authenticator_timeout.sql and
  -- 20231130133139_set_lock_timeout_to_authenticator_role.sql. Its membership in supabase_admin
  -- was revoked by 20221103090837_revoke_admin.sql, so it is not granted here.
  if not exists (select from pg_roles where rolname = 'authenticator') then
    execute format('create role authenticator login noinherit password %L',
                   current_setting('bootstrap.authenticator_password'));
    alter role authenticator set statement_timeout = '8s';
    alter role authenticator set lock_timeout = '8s';
    grant anon, authenticated, service_role to authenticator;
  end if;

  -- Owners of the auth and storage schemas' tables: GoTrue and the Storage API connect as these.
  -- init-scripts/00000000000001-auth-schema.sql, 00000000000002-storage-schema.sql;
  -- supabase_auth_admin lost CREATEROLE in 20260821154147_revoke_createrole_from_auth_admin.sql
  -- and got CREATE on the database in 20251121141100_supabase_auth_admin_db_grants.sql;
  -- supabase_storage_admin became a member of authenticator in
  -- 20231013070755_grant_authenticator_to_supabase_storage_admin.sql.
  -- No passwords: nothing on the local stack logs in as them.
  if not exists (select from pg_roles where rolname = 'supabase_auth_admin') then
    create role supabase_auth_admin login noinherit nocreaterole noreplication;
    alter role supabase_auth_admin set search_path = auth;
    execute format('grant create on database %I to supabase_auth_admin', db);
  end if;
  if not exists (select from pg_roles where rolname = 'supabase_storage_admin') then
    create role supabase_storage_admin login noinherit createrole noreplication;
    alter role supabase_storage_admin set search_path = storage;
    grant authenticator to supabase_storage_admin;
  end if;

  -- What the project's `postgres` can do on Supabase, minus superuser.
  if not exists (select from pg_roles where rolname = 'postgres') then
    execute format(
      'create role postgres login nosuperuser createdb createrole replication bypassrls password %L',
      current_setting('bootstrap.postgres_password'));
    -- init-scripts/00000000000003-post-setup.sql
    alter role postgres set search_path = "$user", public, extensions;
    -- Supabase's migrate.sh makes postgres the owner of the project database, hence of `public`
    -- (owned by pg_database_owner on PostgreSQL 15).
    execute format('alter database %I owner to postgres', db);
    -- migrations/20230201083204_grant_auth_roles_to_postgres.sql: postgres may SET ROLE to the API
    -- roles (pgTAP tests do `set local role authenticated`).
    grant anon, authenticated, service_role to postgres;
    -- migrations/20240606060239_grant_predefined_roles_to_postgres.sql
    grant pg_read_all_data, pg_signal_backend to postgres;
  end if;

  -- migrations/20230713185014_add_supabase_superuser.sql: pg_monitor and pg_signal_backend reach
  -- postgres through this role.
  if not exists (select from pg_roles where rolname = 'supabase_superuser') then
    create role supabase_superuser nologin;
    grant pg_monitor, pg_signal_backend to supabase_superuser;
    grant supabase_superuser to postgres;
  end if;
end
$roles$;

-- `public`: usage for the API roles, and the default privileges Supabase sets for objects that
-- `postgres` creates there (init-scripts/00000000000000-initial-schema.sql ran as postgres).
-- Because of them, on Supabase every table and function a migration creates in `public` is
-- granted to anon and authenticated unless the migration revokes it; the local stack keeps that
-- behaviour so migrations are tested against it. Applied only when this run created `postgres`
-- (no default ACL of postgres exists yet in `public`).
do $public$
begin
  if exists (
    select from pg_default_acl d
    where d.defaclrole = 'postgres'::regrole and d.defaclnamespace = 'public'::regnamespace
  ) then
    return;
  end if;
  grant usage on schema public to postgres, anon, authenticated, service_role;
  alter default privileges for role postgres in schema public
    grant all on tables to postgres, anon, authenticated, service_role;
  alter default privileges for role postgres in schema public
    grant all on functions to postgres, anon, authenticated, service_role;
  alter default privileges for role postgres in schema public
    grant all on sequences to postgres, anon, authenticated, service_role;
  alter default privileges for role supabase_admin in schema public
    grant all on tables to postgres, anon, authenticated, service_role;
  alter default privileges for role supabase_admin in schema public
    grant all on functions to postgres, anon, authenticated, service_role;
  alter default privileges for role supabase_admin in schema public
    grant all on sequences to postgres, anon, authenticated, service_role;
end
$public$;

-- Schema `auth`: the part of Supabase Auth (GoTrue) that project migrations and policies touch.
--
-- Mirrored: the schema and its grants, `auth.users` with the columns, defaults, constraints and
-- indexes GoTrue's migrations leave it with, RLS on it, and the JWT helper functions
-- `auth.uid()`, `auth.role()`, `auth.email()`, `auth.jwt()`. The other GoTrue tables (sessions,
-- identities, mfa_*, ...) are not needed by this project and are left out.
--
-- Ownership and grants, so that `postgres` can do exactly what it can on Supabase:
--   * schema `auth` belongs to supabase_admin (init-scripts/00000000000001-auth-schema.sql);
--     anon/authenticated/service_role get USAGE (same file), supabase_auth_admin ALL, postgres
--     USAGE (migrations/20211115181400_update-auth-permissions.sql) but not CREATE
--     (revoked by migrations/20240627101908_revoke_supabase_auth_admin_from_postgres.sql and
--     20250421084701_revoke_admin_roles_from_postgres.sql);
--   * tables and functions belong to supabase_auth_admin (init-scripts/...-auth-schema.sql,
--     migrations/20211124212715_update-auth-owner.sql);
--   * postgres has ALL on the tables (20211115181400_update-auth-permissions.sql, also as default
--     privileges of supabase_auth_admin) and SELECT WITH GRANT OPTION (supabase/auth
--     migrations/20240612123726_enable_rls_update_grants.up.sql). That is what lets a migration
--     run as postgres create a trigger on auth.users (TRIGGER) and a foreign key to it
--     (REFERENCES) without owning it.
--
-- Created only if schema `auth` does not exist.

do $auth$
begin
  if exists (select from pg_namespace where nspname = 'auth') then
    return;
  end if;

  create schema auth authorization supabase_admin;
  grant usage on schema auth to anon, authenticated, service_role, postgres;
  grant all on schema auth to supabase_auth_admin;

  alter default privileges for role supabase_auth_admin in schema auth grant all on tables to postgres;
  alter default privileges for role supabase_auth_admin in schema auth grant all on sequences to postgres;
  alter default privileges for role supabase_auth_admin in schema auth grant all on routines to postgres;

  -- auth.users as left by supabase/auth migrations: 00_init_auth_schema (base table),
  -- 20210710035447_alter_users (phone columns, confirmed_at renamed email_confirmed_at),
  -- 20210722035447_adds_confirmed_at (generated confirmed_at),
  -- 20210730183235_add_email_change_confirmed (email_change_token renamed _new, _current, status),
  -- 20220114185340_add_banned_until, 20220323170000_add_user_reauthentication,
  -- 20221215195500_modify_users_email_unique_index (is_sso_user, partial unique email),
  -- 20230116124310_alter_phone_type (phone columns text), 20230116124412_add_deleted_at,
  -- 20240214120130_add_is_anonymous_column.
  create table auth.users (
    instance_id uuid,
    id uuid not null,
    aud varchar(255),
    role varchar(255),
    email varchar(255),
    encrypted_password varchar(255),
    email_confirmed_at timestamptz,
    invited_at timestamptz,
    confirmation_token varchar(255),
    confirmation_sent_at timestamptz,
    recovery_token varchar(255),
    recovery_sent_at timestamptz,
    email_change_token_new varchar(255),
    email_change varchar(255),
    email_change_sent_at timestamptz,
    last_sign_in_at timestamptz,
    raw_app_meta_data jsonb,
    raw_user_meta_data jsonb,
    is_super_admin boolean,
    created_at timestamptz,
    updated_at timestamptz,
    phone text default null,
    phone_confirmed_at timestamptz,
    phone_change text default '',
    phone_change_token varchar(255) default '',
    phone_change_sent_at timestamptz,
    confirmed_at timestamptz generated always as (least(email_confirmed_at, phone_confirmed_at)) stored,
    email_change_token_current varchar(255) default '',
    email_change_confirm_status smallint default 0
      check (email_change_confirm_status >= 0 and email_change_confirm_status <= 2),
    banned_until timestamptz,
    reauthentication_token varchar(255) default '',
    reauthentication_sent_at timestamptz,
    is_sso_user boolean not null default false,
    deleted_at timestamptz,
    is_anonymous boolean not null default false,
    constraint users_pkey primary key (id),
    constraint users_phone_key unique (phone)
  );
  comment on table auth.users is 'Auth: Stores user login data within a secure schema.';
  comment on column auth.users.is_sso_user is
    'Auth: Set this column to true when the account comes from SSO. These accounts can have duplicate emails.';
  create index users_instance_id_idx on auth.users using btree (instance_id);
  create index users_instance_id_email_idx on auth.users using btree (instance_id, lower(email));
  create unique index users_email_partial_key on auth.users (email) where (is_sso_user = false);
  comment on index auth.users_email_partial_key is
    'Auth: A partial unique index that applies only when is_sso_user is false';
  create unique index confirmation_token_idx on auth.users (confirmation_token)
    where confirmation_token !~ '^[0-9 ]*$';
  create unique index recovery_token_idx on auth.users (recovery_token)
    where recovery_token !~ '^[0-9 ]*$';
  create unique index email_change_token_current_idx on auth.users (email_change_token_current)
    where email_change_token_current !~ '^[0-9 ]*$';
  create unique index email_change_token_new_idx on auth.users (email_change_token_new)
    where email_change_token_new !~ '^[0-9 ]*$';
  create unique index reauthentication_token_idx on auth.users (reauthentication_token)
    where reauthentication_token !~ '^[0-9 ]*$';
  create index users_is_anonymous_idx on auth.users using btree (is_anonymous);
  -- supabase/auth migrations/20240612123726_enable_rls_update_grants.up.sql
  alter table auth.users enable row level security;

  alter table auth.users owner to supabase_auth_admin;
  grant all on table auth.users to postgres;
  grant select on table auth.users to postgres with grant option;

  -- JWT helpers, as last redefined by supabase/auth
  -- migrations/20220224000811_update_auth_functions.up.sql (uid, role, email: the legacy
  -- per-claim setting first, then PostgREST's `request.jwt.claims` JSON) and
  -- 20220531120530_add_auth_jwt_function.up.sql (jwt, and the deprecation comments).
  create function auth.uid() returns uuid
    language sql stable
    as $$
      select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
      )::uuid
    $$;
  create function auth.role() returns text
    language sql stable
    as $$
      select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
      )::text
    $$;
  create function auth.email() returns text
    language sql stable
    as $$
      select coalesce(
        nullif(current_setting('request.jwt.claim.email', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
      )::text
    $$;
  create function auth.jwt() returns jsonb
    language sql stable
    as $$
      select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
      )::jsonb
    $$;
  comment on function auth.uid() is 'Deprecated. Use auth.jwt() -> ''sub'' instead.';
  comment on function auth.role() is 'Deprecated. Use auth.jwt() -> ''role'' instead.';
  comment on function auth.email() is 'Deprecated. Use auth.jwt() -> ''email'' instead.';
  alter function auth.uid() owner to supabase_auth_admin;
  alter function auth.role() owner to supabase_auth_admin;
  alter function auth.email() owner to supabase_auth_admin;
  alter function auth.jwt() owner to supabase_auth_admin;
  grant all on function auth.uid(), auth.role(), auth.email(), auth.jwt() to postgres;
end
$auth$;

-- Supabase-compatible bootstrap for a plain PostgreSQL 15 cluster.
--
-- What it guarantees:
--   * After it, the cluster has what a hosted Supabase project has before any project migration
--     runs and that this project's migrations touch: the roles (`postgres` as a NON-superuser,
--     `anon`, `authenticated`, `service_role`, `authenticator`, `supabase_auth_admin`,
--     `supabase_storage_admin`), the `extensions` schema with pgcrypto and uuid-ossp,
--     `auth.users` with GoTrue's columns and `auth.uid()/role()/email()/jwt()`,
--     `storage.buckets`/`storage.objects` with Storage's columns, helpers, triggers and RLS, and
--     the empty `supabase_realtime` publication owned by `postgres`; each owned and granted as on
--     Supabase.
--   * Everything is created only where it does not exist yet. On a real Supabase project every
--     statement is a no-op, and a second run on the local cluster changes nothing.
--   * Where the cluster lacks Supabase's `supautils` library, `postgres` gets the exemptions it
--     grants (policies and triggers on auth/storage tables) and no more
--     (60-policy-grants-emulation.sql).
--   * Test and lint tooling (pgTAP, plpgsql_check) is not in here: local-tooling.sql adds it.
--
-- Run it as the cluster superuser (`supabase_admin`, like Supabase's own migrations), in ONE
-- transaction, with the passwords of the two login roles it may create:
--
--   psql --single-transaction -v ON_ERROR_STOP=1 \
--        -v postgres_password=... -v authenticator_password=... \
--        -f supabase/bootstrap/supabase-compat.sql
--
-- Sources (read them to see what is mirrored and why; nothing here is copied verbatim):
--   supabase/postgres  migrations/db/init-scripts/*.sql, migrations/db/migrations/*.sql and
--                      ansible/files/postgresql_config/conf.d/supautils.conf
--   supabase/auth      migrations/*.up.sql (the `auth` schema GoTrue maintains)
--   supabase/storage   migrations/tenant/*.sql (the `storage` schema the Storage API maintains)
-- Each part names the exact files it follows.

\set ON_ERROR_STOP on

-- The passwords reach the DO blocks through transaction-local settings, because psql does not
-- substitute variables inside dollar-quoted bodies. `\gset` keeps them out of the output.
select set_config('bootstrap.postgres_password', :'postgres_password', true) as _postgres_password,
       set_config('bootstrap.authenticator_password', :'authenticator_password', true) as _authenticator_password
\gset

\ir 10-roles.sql
\ir 20-extensions.sql
\ir 30-auth.sql
\ir 40-storage.sql
\ir 50-realtime.sql
\ir 60-policy-grants-emulation.sql

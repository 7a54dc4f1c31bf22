-- Test and lint tooling for the local stack, installed in schema `extensions` like every
-- extension on Supabase. Not part of the Supabase mirror (supabase-compat.sql): a hosted project
-- has these available but not installed.
--
--   * pgTAP runs the tests under supabase/tests/ (`supabase test db` creates it the same way:
--     `create extension if not exists pgtap with schema extensions`).
--   * plpgsql_check is what `supabase db lint` calls. The CLI first runs
--     `CREATE EXTENSION IF NOT EXISTS plpgsql_check` on the connection it lints with. On Supabase
--     postgres may create it (it is in supautils.privileged_extensions); on plain PostgreSQL only a
--     superuser may (the extension is not trusted). Installing it here, as the superuser, turns the
--     CLI's statement into a no-op, so lint works whether it connects as postgres or supabase_admin.
--     Its functions are found through the `extensions` entry of both roles' search_path.
--
-- Run as the cluster superuser; idempotent.

create extension if not exists pgtap with schema extensions;
create extension if not exists plpgsql_check with schema extensions;

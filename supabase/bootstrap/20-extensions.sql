-- Schema `extensions`: where Supabase installs extensions, so their functions stay out of the
-- exposed `public` schema.
--
-- init-scripts/00000000000000-initial-schema.sql (run as postgres, hence owned by postgres)
-- creates it with uuid-ossp and pgcrypto and grants usage to the API roles;
-- migrations/20230224042246_grant_extensions_perms_for_postgres.sql gives postgres everything in
-- it with grant option. On Supabase the extensions themselves belong to supabase_admin (supautils
-- creates privileged extensions as `supautils.privileged_extensions_superuser`); here the
-- superuser running this file creates them, with the same result. pgjwt, also in the initial
-- schema, is not packaged for Debian and is deprecated by Supabase; nothing here uses it.

do $extensions$
begin
  if exists (select from pg_namespace where nspname = 'extensions') then
    return;
  end if;

  create schema extensions authorization postgres;
  grant usage on schema extensions to postgres, anon, authenticated, service_role;

  alter default privileges for role supabase_admin in schema extensions
    grant all on tables to postgres with grant option;
  alter default privileges for role supabase_admin in schema extensions
    grant all on routines to postgres with grant option;
  alter default privileges for role supabase_admin in schema extensions
    grant all on sequences to postgres with grant option;

  create extension if not exists "uuid-ossp" with schema extensions;
  create extension if not exists pgcrypto with schema extensions;

  grant all on all tables in schema extensions to postgres with grant option;
  grant all on all routines in schema extensions to postgres with grant option;
  grant all on all sequences in schema extensions to postgres with grant option;
end
$extensions$;

create extension if not exists "uuid-ossp" with schema extensions;
create extension if not exists pgcrypto with schema extensions;

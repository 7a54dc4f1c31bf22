-- Schema `storage`: the tables and helpers of Supabase Storage that project migrations and
-- policies touch.
--
-- Mirrored: `storage.buckets` and `storage.objects` with the columns, defaults, constraints,
-- indexes, triggers and RLS that supabase/storage's tenant migrations leave them with, and the
-- path helpers `storage.foldername()`, `storage.filename()`, `storage.extension()` used in
-- policies. Storage's other tables (migrations, s3_multipart_uploads, buckets_analytics, ...) and
-- its search functions are not needed by this project and are left out.
--
-- Ownership and grants, so that `postgres` can do exactly what it can on Supabase:
--   * schema `storage` belongs to supabase_admin (supabase/postgres
--     init-scripts/00000000000002-storage-schema.sql); USAGE for postgres and the API roles (same
--     file), ALL for supabase_storage_admin; postgres lost CREATE in
--     migrations/20240607084701_revoke_supabase_storage_admin_from_postgres.sql and holds USAGE
--     WITH GRANT OPTION since 20250709135250_grant_storage_schema_to_postgres_with_grant_option.sql;
--   * tables and functions belong to supabase_storage_admin (supabase/storage
--     migrations/tenant/0002-storage-schema.sql);
--   * ALL on buckets and objects for anon, authenticated, service_role, and for postgres WITH
--     GRANT OPTION (tenant/0046-buckets-objects-grants.sql, 0049-buckets-objects-grants-postgres.sql):
--     RLS, not grants, decides what an API role sees. postgres can therefore insert buckets and
--     create triggers, but it does not own the tables: how it may still create policies on them is
--     explained in 60-policy-grants-emulation.sql.
--
-- Created only if schema `storage` does not exist.

do $storage$
begin
  if exists (select from pg_namespace where nspname = 'storage') then
    return;
  end if;

  create schema storage authorization supabase_admin;
  grant usage on schema storage to postgres with grant option;
  grant usage on schema storage to anon, authenticated, service_role;
  grant all on schema storage to supabase_storage_admin;

  -- Default privileges Storage's own migration sets as supabase_storage_admin (tenant/0002).
  alter default privileges for role supabase_storage_admin in schema storage
    grant all on tables to postgres, anon, authenticated, service_role;
  alter default privileges for role supabase_storage_admin in schema storage
    grant all on functions to postgres, anon, authenticated, service_role;
  alter default privileges for role supabase_storage_admin in schema storage
    grant all on sequences to postgres, anon, authenticated, service_role;

  -- tenant/0038-iceberg-catalog-flag-on-buckets.sql
  create type storage.buckettype as enum ('STANDARD', 'ANALYTICS');

  -- buckets: tenant/0002 (base), 0007 (RLS), 0008 (public), 0012 (avif_autodetection),
  -- 0013 + 0014 (allowed_mime_types, file_size_limit in bytes), 0018 (owner_id, owner deprecated,
  -- foreign key to auth.users dropped), 0038 (type).
  create table storage.buckets (
    id text not null,
    name text not null,
    owner uuid,
    created_at timestamptz default now(),
    updated_at timestamptz default now(),
    public boolean default false,
    avif_autodetection boolean default false,
    file_size_limit bigint,
    allowed_mime_types text[],
    owner_id text,
    type storage.buckettype not null default 'STANDARD',
    constraint buckets_pkey primary key (id)
  );
  create unique index bname on storage.buckets using btree (name);
  comment on column storage.buckets.owner is 'Field is deprecated, use owner_id instead';
  alter table storage.buckets enable row level security;

  -- objects: tenant/0002 (base), 0003 (path_tokens), 0016 (version), 0017 + 0018 (owner_id, the
  -- owner foreign key dropped), 0019 (id default), 0025 (user_metadata).
  create table storage.objects (
    id uuid not null default gen_random_uuid(),
    bucket_id text,
    name text,
    owner uuid,
    created_at timestamptz default now(),
    updated_at timestamptz default now(),
    last_accessed_at timestamptz default now(),
    metadata jsonb,
    path_tokens text[] generated always as (string_to_array(name, '/')) stored,
    version text,
    owner_id text,
    user_metadata jsonb,
    constraint objects_pkey primary key (id),
    constraint "objects_bucketId_fkey" foreign key (bucket_id) references storage.buckets (id)
  );
  create unique index bucketid_objname on storage.objects using btree (bucket_id, name);
  create index name_prefix_search on storage.objects using btree (name text_pattern_ops);
  comment on column storage.objects.owner is 'Field is deprecated, use owner_id instead';
  alter table storage.objects enable row level security;

  -- Path helpers for policies, as last defined by tenant/0060-optimize-existing-functions-again.sql
  -- (foldername, extension) and 0061-mark-filename-immutable.sql (filename).
  create function storage.foldername(name text) returns text[]
    language plpgsql immutable
    as $$
    declare
      _parts text[];
    begin
      -- every path segment but the last one (the file name)
      select string_to_array(name, '/') into _parts;
      return _parts[1 : array_length(_parts, 1) - 1];
    end
    $$;
  create function storage.filename(name text) returns text
    language plpgsql immutable
    as $$
    declare
      _parts text[];
    begin
      select string_to_array(name, '/') into _parts;
      return _parts[array_length(_parts, 1)];
    end
    $$;
  create function storage.extension(name text) returns text
    language plpgsql immutable
    as $$
    declare
      _parts text[];
      _filename text;
    begin
      select string_to_array(name, '/') into _parts;
      select _parts[array_length(_parts, 1)] into _filename;
      -- what follows the last dot of the file name
      return reverse(split_part(reverse(_filename), '.', 1));
    end
    $$;

  -- tenant/0011-add-trigger-to-auto-update-updated_at-column.sql
  create function storage.update_updated_at_column() returns trigger
    language plpgsql
    as $$
    begin
      new.updated_at = now();
      return new;
    end
    $$;
  create trigger update_objects_updated_at before update on storage.objects
    for each row execute function storage.update_updated_at_column();

  -- tenant/0055-prevent-direct-deletes.sql: rows in buckets and objects are deleted through the
  -- Storage API (which sets storage.allow_delete_query), never by plain SQL, so that no file is
  -- orphaned. A migration or test that deletes them directly fails on Supabase and here alike.
  create function storage.protect_delete() returns trigger
    language plpgsql
    as $$
    begin
      if coalesce(current_setting('storage.allow_delete_query', true), 'false') != 'true' then
        raise exception 'Direct deletion from storage tables is not allowed. Use the Storage API instead.'
          using hint = 'This prevents accidental data loss from orphaned objects.',
                errcode = '42501';
      end if;
      return null;
    end
    $$;
  create trigger protect_buckets_delete before delete on storage.buckets
    for each statement execute function storage.protect_delete();
  create trigger protect_objects_delete before delete on storage.objects
    for each statement execute function storage.protect_delete();

  alter table storage.buckets owner to supabase_storage_admin;
  alter table storage.objects owner to supabase_storage_admin;
  alter function storage.foldername(text) owner to supabase_storage_admin;
  alter function storage.filename(text) owner to supabase_storage_admin;
  alter function storage.extension(text) owner to supabase_storage_admin;
  alter function storage.update_updated_at_column() owner to supabase_storage_admin;
  alter function storage.protect_delete() owner to supabase_storage_admin;
  alter type storage.buckettype owner to supabase_storage_admin;

  grant all on table storage.buckets, storage.objects to anon, authenticated, service_role;
  grant all on table storage.buckets, storage.objects to postgres with grant option;
  grant all on function storage.foldername(text), storage.filename(text), storage.extension(text)
    to postgres, anon, authenticated, service_role;
end
$storage$;

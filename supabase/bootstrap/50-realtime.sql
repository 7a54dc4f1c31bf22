-- Publication `supabase_realtime`: the tables Supabase Realtime streams to subscribers.
--
-- supabase/postgres init-scripts/00000000000000-initial-schema.sql creates it empty
-- (`create publication supabase_realtime;`) while running as postgres, so on Supabase it belongs to
-- `postgres`, which is what lets a migration run as postgres `alter publication
-- supabase_realtime add table ...` for a table it owns. The Realtime server's own `realtime`
-- schema is not mirrored: this project only adds tables to the publication. Logical decoding
-- needs `wal_level = logical`, which the local stack sets in postgresql.conf at initdb time.
--
-- Created only if missing.

do $realtime$
begin
  if exists (select from pg_publication where pubname = 'supabase_realtime') then
    return;
  end if;
  create publication supabase_realtime;
  alter publication supabase_realtime owner to postgres;
end
$realtime$;

-- Schema privileges. `private` holds the queue and helpers: clients get nothing there; the service
-- role (capture daemons, ingest over a direct pool) reaches it only through SECURITY DEFINER
-- functions, which still need USAGE on the schema to be called.

revoke all on schema private from public, anon, authenticated;
grant usage on schema private to service_role;

-- Tables in private are reached through functions only.
revoke all on all tables in schema private from public, anon, authenticated, service_role;

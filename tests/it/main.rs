//! The end-to-end suite: what the database side promises, proven against the real local stack
//! (Postgres with the bootstrap and the migrations, PostgREST, the gateway) the way its clients
//! meet it. One test binary, so the suite links once; `scripts/test` runs it with the test stack's
//! `stack.env` exported (by hand: `set -a; . .dev/stack.env; set +a` after `scripts/dev up`, then
//! `cargo nextest run -p end-to-end`). Every helper it shares with ingest's and capture's tests is in
//! `stack-harness` (`tests/harness`).
//!
//! Layout:
//! - `postgrest_policies`, `storage_policies`: row level security and grants as the dashboard's
//!   supabase-js client and Supabase Storage meet them.
//! - `realtime_wal2json`: what Supabase Realtime sends the dashboard about `signals`.
//! - `ingest_signal_concurrency`, `delivery_id`: `public.ingest_signal` through PostgREST under
//!   concurrency and replays.
//! - `capture_queue`: the capture queue's SQL under real concurrency.
//! - `postgres_tls`: TLS to Postgres as our clients make it: plaintext refused, verified TLS with
//!   channel binding, a certificate for another name refused under `verify-full`.
//! - `spool_replay`: ingest's spool replayed into the real `ingest_signal`.
//! - `sync_migrations`: `scripts/sync-migrations` keeps `supabase/migrations` in step with `sql/`,
//!   `rls-policies/` and `storage-policies/`, one changed file at a time.

mod capture_queue;
mod delivery_id;
mod ingest_signal_concurrency;
mod postgres_tls;
mod postgrest_policies;
mod realtime_wal2json;
mod spool_replay;
mod storage_policies;
mod sync_migrations;

-- signal-capture: who took each screenshot, and a dead-letter count that does not scan the queue.
--
-- What this migration guarantees:
--   * private.capture_completions holds one row per completed capture: the signal, the worker id of
--     the daemon whose lease completed it and the attempt it took. A completed job leaves
--     private.capture_jobs (its outcome lives on the signal), so without this row nobody could say
--     which daemon did the work: an operator spreading captures over several daemons (deploy/, the
--     scale-out scenario in scripts/chaos) reads the share of each here. The primary key makes a
--     second completion of the same signal impossible, not merely unlikely. The row goes with its
--     signal (on delete cascade). Written by private.complete_capture_job only; no client sees it.
--   * capture_jobs_failed_idx covers the dead letters (state = 'failed'): public.capture_queue_status()
--     counts them on every /health call, and without it that count read the whole queue.
--
-- A change to a table is a new hand-written migration (see the first one); the functions that use
-- these live in sql/30_capture_queue.sql and reach the migrations through scripts/sync-migrations.

create table private.capture_completions (
  signal_id uuid primary key references public.signals (id) on delete cascade,
  worker_id text not null check (length(worker_id) between 1 and 200),
  attempt smallint not null check (attempt >= 1),
  completed_at timestamptz not null default now()
);
comment on table private.capture_completions is
  'One row per completed capture: which daemon (worker id) completed it, at which attempt.';
revoke all on private.capture_completions from public, anon, authenticated, service_role;

create index capture_jobs_failed_idx on private.capture_jobs (signal_id) where state = 'failed';

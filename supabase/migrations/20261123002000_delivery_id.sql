-- Delivery ids: a replayed webhook is stored once, however late the replay comes.
--
-- The webhook edge gives each request a delivery id (a UUIDv7) and sends it with every call of
-- public.ingest_signal for that request (p_delivery_id). When a call commits but its answer is
-- lost (a timeout, a crash of ingest), the edge spools the webhook and replays it later with the
-- same id; ingest_signal then finds the accepted delivery and answers `duplicate` with the first
-- signal instead of storing a second one. The 30-second fingerprint window cannot do that: a replay
-- may come minutes or hours later, after other alerts of the same trader.
--
-- What this migration guarantees:
--   * webhook_deliveries.delivery_id records the edge's id on every delivery row that has one
--     (null for callers that send none, and for rows from before this migration).
--   * At most one accepted delivery per trader and delivery id (a unique partial index, which is
--     also what the replay lookup reads). Duplicate and rejected rows may repeat an id: they log
--     every replay.
--   * The ids live as long as the delivery log: no separate table to insert into or prune on the
--     hot path, which only adds an entry to this index for an accepted delivery with an id.
alter table public.webhook_deliveries add column delivery_id uuid;
comment on column public.webhook_deliveries.delivery_id is
  'The id the webhook edge gave this request; the same id on a replay, so a replay of an accepted delivery is recognised.';
create unique index webhook_deliveries_user_delivery_idx
  on public.webhook_deliveries (user_id, delivery_id)
  where outcome = 'accepted' and delivery_id is not null;

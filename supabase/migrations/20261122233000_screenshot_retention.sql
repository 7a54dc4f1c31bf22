-- signal-capture: find screenshots past their plan's retention without scanning every signal.
--
-- `capture prune` asks for the oldest signals that still have a stored screenshot
-- (private.screenshots_due_for_pruning in sql/50_retention.sql); this partial index holds exactly
-- those rows, in that order, and shrinks as screenshots are pruned.
create index if not exists signals_screenshot_created_idx
  on public.signals (created_at)
  where screenshot_path is not null;

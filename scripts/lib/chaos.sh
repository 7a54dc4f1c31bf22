# shellcheck shell=bash
# The fault-injection scenarios (issue 5, "Nothing lost"): sourced by scripts/chaos, which runs them
# on a throwaway stack of its own, and by scripts/test, which runs them on its test stack at the
# end. Needs scripts/lib/common.sh, stack.sh, ingest.sh, capture.sh and load.sh, and a configured
# stack that is up (stack_up).
#
# Each scenario sends a bounded load (CHAOS_RATE webhooks/s for CHAOS_SECONDS s, spread over
# LOAD_TRADERS traders, retried like TradingView: up to 3 times, CHAOS_RETRY_DELAY apart) and, a
# third of the way in, breaks one thing for CHAOS_OUTAGE seconds:
#
#   baseline          nothing (the control: proves the reconciliation itself)
#   postgres-restart  pg_ctl stop -m fast, then start again
#   postgrest-kill    kill -9 PostgREST, then start it again
#   ingest-kill       kill -9 ingest, then start it again on the same spool directory
#   capture-kill      kill -9 the capture daemon while it renders, then start a new one; the dead
#                     one's jobs come back when their lease (CAPTURE_LEASE) expires, and its
#                     Chromium must have died with it (an orphan fails the scenario)
#   chromium-kill     kill -9 every Chromium process of the capture daemon
#
# Then it waits for ingest's spool to drain (when ingest reports one) and for every capture to end
# (bounded: see load_wait_captures), reconciles what was sent with what is stored, and prints a row.
# A 2xx answer without a stored signal, a signal stored twice, a capture still open, a failure
# without a reason, or a service that did not come back fails the scenario.

CHAOS_SCENARIOS=(baseline postgres-restart postgrest-kill ingest-kill capture-kill chromium-kill)

chaos_config() {
  CHAOS_RATE="${CHAOS_RATE:-4}"
  CHAOS_SECONDS="${CHAOS_SECONDS:-12}"
  CHAOS_OUTAGE="${CHAOS_OUTAGE:-3}"
  CHAOS_RETRY_DELAY="${CHAOS_RETRY_DELAY:-5s}"
  load_config
  # A capture is given up as stuck once nothing moved for a whole lease plus the retry schedule
  # (2 + 4 + 8 s) plus two poll intervals and some slack; never more than 5 minutes in all.
  local lease="${CAPTURE_LEASE%s}" poll="${CAPTURE_POLL_INTERVAL%s}"
  CHAOS_STUCK_AFTER=$((lease + 14 + 2 * poll + 10))
  CHAOS_CAPTURE_LIMIT=300
  CHAOS_FAILURES=0
  CHAOS_ROWS=()
  CHAOS_NOTES=()
}

# --- faults ------------------------------------------------------------------------------------

fault_baseline() { :; }

fault_postgres_restart() {
  pg_ctl_ -w -t 60 stop -m fast >/dev/null || die "pg_ctl stop failed"
  sleep "$CHAOS_OUTAGE"
  pg_ctl_ -l "$LOG_DIR/postgres.log" -w -t 60 start >/dev/null || die "postgres did not start again, see $LOG_DIR/postgres.log"
}

fault_postgrest_kill() {
  pid_alive "$POSTGREST_PID" || die "PostgREST is not running"
  local pid
  pid="$(cat "$POSTGREST_PID")"
  kill -KILL "$pid"
  # When this shell started it (stack_up), reap it quietly instead of letting bash report "Killed".
  wait "$pid" 2>/dev/null || true
  sleep "$CHAOS_OUTAGE"
  stack_start_postgrest >/dev/null
}

fault_ingest_kill() {
  pid_alive "$INGEST_PID" || die "ingest is not running"
  kill -KILL "$(cat "$INGEST_PID")"
  sleep "$CHAOS_OUTAGE"
  ingest_start >/dev/null
}

# The daemon's Chromium processes (all descendants of the daemon).
capture_chromium_pids() {
  pid_alive "$CAPTURE_PID" || return 0
  process_tree "$(cat "$CAPTURE_PID")" | tail -n +2
}

fault_capture_kill() {
  pid_alive "$CAPTURE_PID" || die "the capture daemon is not running"
  local daemon chromium=() orphans=() pid
  daemon="$(cat "$CAPTURE_PID")"
  mapfile -t chromium < <(capture_chromium_pids)
  kill -KILL "$daemon"
  sleep "$CHAOS_OUTAGE"
  # Chromium is started to die with the daemon (capture/src/chromium.rs): anything left over is an
  # orphan holding memory, a failure of this scenario; end it (by pid: the killed daemon's processes).
  for pid in "${chromium[@]}"; do
    kill -0 "$pid" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] && orphans+=("$pid")
  done
  if [[ ${#orphans[@]} -gt 0 ]]; then
    CHAOS_NOTES+=("capture-kill: ${#orphans[@]} of ${#chromium[@]} Chromium processes outlived the killed daemon (ended by the script)")
    CHAOS_FAILURES=$((CHAOS_FAILURES + 1))
    kill -KILL "${orphans[@]}" 2>/dev/null || true
  fi
  capture_start >/dev/null
}

fault_chromium_kill() {
  local chromium=()
  mapfile -t chromium < <(capture_chromium_pids)
  [[ ${#chromium[@]} -gt 0 ]] || die "the capture daemon has no Chromium to kill"
  kill -KILL "${chromium[@]}" 2>/dev/null || true
  sleep "$CHAOS_OUTAGE"
}

# The scenarios need the capture queue to themselves: every capture still open when they start
# would be worked first and make theirs look stuck. scripts/test's earlier steps leave about a
# thousand (signals of test traders sent through the gateway, never captured). On this throwaway
# stack they are marked skipped, with a reason, and taken off the queue; prints how many.
chaos_clear_backlog() {
  psql_as "$(database_url)" -At <<'SQL'
with dropped as (delete from private.capture_jobs returning signal_id),
     skipped as (
       update public.signals s
          set screenshot_status = 'skipped',
              screenshot_error = 'not captured: left open by an earlier test step before the chaos run',
              updated_at = now()
         from dropped
        where s.id = dropped.signal_id and s.screenshot_status in ('pending', 'processing')
       returning 1)
select count(*) from skipped
SQL
}

# --- one scenario ------------------------------------------------------------------------------

# Runs scenario $1: load, fault, drain, reconcile; appends its row and counts its failures.
chaos_scenario() {
  local name="$1" label fault_at started violations=()
  label="$name.$(date +%s)"
  started="$(date +%s)"
  fault_at=$((CHAOS_SECONDS / 3))
  load_start "$label" "$CHAOS_RATE" "$CHAOS_SECONDS" --retry-delay "$CHAOS_RETRY_DELAY"
  sleep "$fault_at"
  "fault_${name//-/_}"
  load_wait
  load_wait_spool_empty 60
  load_wait_captures "$label" "$CHAOS_STUCK_AFTER" "$CHAOS_CAPTURE_LIMIT"

  # The figures, violations and notes come from webhook-load reconcile (see load_reconcile).
  local report figures line sent a2 a5 none spooled stored dups lost completed failed stuck unanswered
  report="$(load_reconcile "$label" "$LOAD_OUT")" || die "reconciling $name failed (above)"
  figures="${report%%$'\n'*}"
  IFS='|' read -r sent a2 a5 none _ spooled stored dups lost completed failed _ _ stuck unanswered <<<"$figures"
  [[ -n "$unanswered" ]] || die "reconciling $name failed: '$figures'"
  while IFS= read -r line; do
    case "$line" in
      "violation "*) violations+=("${line#violation }") ;;
      "note "*) CHAOS_NOTES+=("$name: ${line#note }") ;;
    esac
  done <<<"$report"
  curl -sf --max-time 2 -o /dev/null "$INGEST_URL/health/ready" || violations+=("ingest is not ready")
  curl -sf --max-time 2 -o /dev/null "$CAPTURE_HEALTH_URL/health/live" || violations+=("capture is not live")

  local verdict=ok
  if [[ ${#violations[@]} -gt 0 ]]; then
    verdict="FAIL: $(IFS=';'; printf '%s' "${violations[*]}")"
    CHAOS_FAILURES=$((CHAOS_FAILURES + 1))
  fi
  CHAOS_ROWS+=("$(printf '| %-16s | %4s | %4s | %4s | %4s | %4s | %6s | %4s | %4s | %5s | %6s | %5s | %4s | %4s |' \
    "$name" "$sent" "$a2" "$a5" "$none" "$spooled" "$stored" "$dups" "$lost" "$completed" "$failed" "$stuck" \
    "$(($(date +%s) - started))" "$verdict")")
  printf '%s\n' "${CHAOS_ROWS[-1]}"
}

chaos_table_header() {
  printf '| %-16s | %4s | %4s | %4s | %4s | %4s | %6s | %4s | %4s | %5s | %6s | %5s | %4s | %4s |\n' \
    scenario sent 2xx 5xx none 202s stored dup lost shots failed stuck secs ok
  printf '|%s|\n' "------------------|------|------|------|------|------|--------|------|------|-------|--------|-------|------|------"
}

# Runs the scenarios named in the arguments (default: all) on the configured stack, which must be
# up; starts and stops ingest and the capture daemon itself. Returns 1 when any scenario failed.
chaos_run() {
  local scenarios=("$@") name
  [[ ${#scenarios[@]} -gt 0 ]] || scenarios=("${CHAOS_SCENARIOS[@]}")
  for name in "${scenarios[@]}"; do
    declare -F "fault_${name//-/_}" >/dev/null || die "unknown scenario: $name (known: ${CHAOS_SCENARIOS[*]})"
  done
  chaos_config
  load_build
  load_traders
  local backlog
  backlog="$(chaos_clear_backlog)" || die "could not clear the capture queue before the scenarios"
  [[ "$backlog" == 0 ]] || info "took $backlog open captures left by earlier steps off the queue (marked skipped)"
  load_start_services
  info "$CHAOS_RATE webhooks/s for $CHAOS_SECONDS s per scenario from $LOAD_TRADERS traders; faults last $CHAOS_OUTAGE s;"
  info "capture lease $CAPTURE_LEASE, job timeout $CAPTURE_JOB_TIMEOUT; a capture still open after $CHAOS_STUCK_AFTER s without progress is stuck"
  info "columns: answers by attempt (2xx, 5xx, none = no answer), 202s = spooled, stored signals, duplicates,"
  info "2xx without a stored signal (lost), captures completed / failed / stuck, wall time"
  printf '\n'
  chaos_table_header
  for name in "${scenarios[@]}"; do
    chaos_scenario "$name"
  done
  load_stop_services
  local note
  for note in "${CHAOS_NOTES[@]}"; do info "note: $note"; done
  if [[ $CHAOS_FAILURES -gt 0 ]]; then
    warn "$CHAOS_FAILURES of ${#scenarios[@]} scenarios failed (logs in $LOG_DIR)"
    return 1
  fi
  info "all ${#scenarios[@]} scenarios: nothing lost, nothing stored twice, nothing stuck"
}

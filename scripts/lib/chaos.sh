# shellcheck shell=bash
# The fault-injection scenarios (issue 5, "Nothing lost"): sourced by scripts/chaos, which runs them
# on a throwaway stack of its own, and by scripts/test, which runs them on its test stack at the
# end. Needs scripts/lib/common.sh, stack.sh, ingest.sh, capture.sh and load.sh, and a configured
# stack that is up (stack_up).
#
# Each scenario sends a bounded load, retried like TradingView (up to 3 times, CHAOS_RETRY_DELAY
# apart, after a 5xx other than 504 or no answer within 3 s), and breaks one thing while it runs
# for CHAOS_OUTAGE seconds. The load is one of two (CHAOS_LOAD):
#
#   burst   (the default) bar closes, as TradingView sends: CHAOS_BARS times, CHAOS_BAR_EVERY apart,
#           every one of CHAOS_TRADERS traders sends CHAOS_ALERTS alerts at the same moment, each
#           on a new connection, from the loopback addresses CHAOS_SOURCES (TradingView's four
#           shared addresses; ingest's INGEST_ALLOWED_SOURCES names them). Hundreds at once
#           saturate the database path, so ingest spools the excess. The fault comes
#           CHAOS_FAULT_DELAY s after the second bar left, while that burst is in flight; for the
#           faults of the webhook path (Postgres, PostgREST, ingest) a fault that hit no webhook
#           in flight fails the scenario, and the third bar arrives during or just after the
#           outage. Before the first scenario every trader sends one alert, so their tokens are
#           known to ingest, as after any earlier alert.
#           Captures: LOAD_TRADERS of the traders are captured first (capture priority 2); the
#           rest are on a plan captured last (priority 4). Once the load is over and the spool
#           is empty, the jobs of those bulk traders that no daemon has touched yet are taken off
#           the queue and their signals marked skipped with a reason; every job a daemon claimed
#           must end, as must every captured trader's. So the capture checks see every crash
#           path while the step does not wait for a thousand renders.
#   steady  CHAOS_RATE webhooks/s for CHAOS_SECONDS s over LOAD_TRADERS traders, kept
#           connections, the fault a third of the way in; every signal is captured.
#
# The faults:
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
  CHAOS_LOAD="${CHAOS_LOAD:-burst}"
  CHAOS_RATE="${CHAOS_RATE:-4}"
  CHAOS_SECONDS="${CHAOS_SECONDS:-12}"
  CHAOS_TRADERS="${CHAOS_TRADERS:-100}"
  CHAOS_ALERTS="${CHAOS_ALERTS:-3}"
  CHAOS_BARS="${CHAOS_BARS:-3}"
  CHAOS_BAR_EVERY="${CHAOS_BAR_EVERY:-4s}"
  CHAOS_FAULT_DELAY="${CHAOS_FAULT_DELAY:-0.2}"
  CHAOS_SOURCES="${CHAOS_SOURCES:-127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5}"
  CHAOS_OUTAGE="${CHAOS_OUTAGE:-3}"
  CHAOS_RETRY_DELAY="${CHAOS_RETRY_DELAY:-5s}"
  case "$CHAOS_LOAD" in
    burst | steady) ;;
    *) die "CHAOS_LOAD is burst or steady, not '$CHAOS_LOAD'" ;;
  esac
  if [[ "$CHAOS_LOAD" == burst ]]; then
    [[ "$CHAOS_TRADERS" =~ ^[0-9]+$ && "$CHAOS_TRADERS" -ge "$LOAD_TRADERS" ]] ||
      die "CHAOS_TRADERS ($CHAOS_TRADERS) must be a number of traders, at least LOAD_TRADERS ($LOAD_TRADERS)"
    [[ "$CHAOS_BARS" =~ ^[0-9]+$ && "$CHAOS_BARS" -ge 2 ]] ||
      die "CHAOS_BARS ($CHAOS_BARS) must be at least 2: the fault follows the second bar"
    CHAOS_ALLOWED_SOURCES="$(printf '%s' "$CHAOS_SOURCES" | sed 's#\([^,]*\)#\1/32#g')"
  fi
  load_config
  # A capture is given up as stuck once nothing moved for a whole lease plus the retry schedule
  # (2 + 4 + 8 s) plus two poll intervals and some slack; never more than 5 minutes in all.
  local lease="${CAPTURE_LEASE%s}" poll="${CAPTURE_POLL_INTERVAL%s}"
  CHAOS_STUCK_AFTER=$((lease + 14 + 2 * poll + 10))
  CHAOS_CAPTURE_LIMIT=300
  CHAOS_TOKENS="$LOAD_WORK/chaos-tokens"
  CHAOS_FAILURES=0
  CHAOS_ROWS=()
  CHAOS_NOTES=()
}

# Runs "$@" (what starts ingest) with INGEST_ALLOWED_SOURCES naming the burst's sources as
# TradingView's, at burst load. Only for that call: ingest then accepts webhooks from those
# addresses alone, and a later step's ingest (scripts/test's) must not inherit that.
chaos_ingest_env() {
  if [[ "$CHAOS_LOAD" == burst ]]; then
    INGEST_ALLOWED_SOURCES="$CHAOS_ALLOWED_SOURCES" "$@"
  else
    "$@"
  fi
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
  chaos_ingest_env ingest_start >/dev/null
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

# The bulk traders' captures no daemon has touched yet (never claimed: attempts 0, queued) come
# off the queue, their signals marked skipped with a reason; a job that was claimed, even once and
# by a daemon that died, stays and must end. Prints how many. Row locks are taken with SKIP LOCKED,
# so a claim under way wins and that job is worked.
chaos_skip_untouched() {
  psql_as "$(database_url)" -At -v plan="$LOAD_BULK_PLAN" <<'SQL'
with untouched as materialized (
       select j.signal_id
         from private.capture_jobs j
         join public.signals s on s.id = j.signal_id
         join public.user_config c on c.user_id = s.user_id
        where c.plan = :'plan' and j.state = 'queued' and j.attempts = 0
          for update of j skip locked),
     dropped as (delete from private.capture_jobs j using untouched u
                  where j.signal_id = u.signal_id returning j.signal_id),
     skipped as (
       update public.signals s
          set screenshot_status = 'skipped',
              screenshot_error = 'not captured: a chaos run captures only its first traders and what the daemon reached',
              updated_at = now()
         from dropped
        where s.id = dropped.signal_id and s.screenshot_status = 'pending'
       returning 1)
select count(*) from skipped
SQL
}

# Every trader's first alert (steady, from the burst's sources), so ingest knows their tokens
# before the first bar, as it does after any earlier alert of theirs.
chaos_warm_up() {
  local count
  count="$(wc -l <"$CHAOS_TOKENS")"
  load_send "warmup.$(date +%s)" --tokens "$CHAOS_TOKENS" --rate "$count" --duration 1s \
    --source-addrs "$CHAOS_SOURCES" --retry-delay 1s
  load_wait
  # What it spooled is replayed before the first bar, so that its answers teach ingest the tokens.
  load_wait_spool_empty 60
  info "warm-up: $(sed 's/^webhook-load [^:]*: //' "$LOAD_SUMMARY")"
}

# --- one scenario ------------------------------------------------------------------------------

# Whether a fault must hit webhooks in flight to mean anything (those of the webhook path).
chaos_fault_on_path() {
  case "$1" in
    postgres-restart | postgrest-kill | ingest-kill) return 0 ;;
    *) return 1 ;;
  esac
}

# Runs scenario $1: load, fault, drain, reconcile; appends its row and counts its failures.
chaos_scenario() {
  local name="$1" label started fault_ms reconcile_flags=() violations=()
  label="$name.$(date +%s)"
  started="$(date +%s)"
  if [[ "$CHAOS_LOAD" == burst ]]; then
    load_start_bars "$label" "$CHAOS_BARS" "$CHAOS_BAR_EVERY" "$CHAOS_ALERTS" --tokens "$CHAOS_TOKENS" \
      --source-addrs "$CHAOS_SOURCES" --retry-delay "$CHAOS_RETRY_DELAY"
    load_wait_bar 2 60
    sleep "$CHAOS_FAULT_DELAY"
  else
    load_start "$label" "$CHAOS_RATE" "$CHAOS_SECONDS" --retry-delay "$CHAOS_RETRY_DELAY"
    sleep $((CHAOS_SECONDS / 3))
  fi
  fault_ms="$(date +%s%3N)"
  "fault_${name//-/_}"
  load_wait
  load_wait_spool_empty 60
  if [[ "$CHAOS_LOAD" == burst ]]; then
    chaos_skip_untouched >/dev/null || die "could not take the untouched bulk captures off the queue"
  fi
  load_wait_captures "$label" "$CHAOS_STUCK_AFTER" "$CHAOS_CAPTURE_LIMIT"

  # The figures, violations and notes come from webhook-load reconcile (see load_reconcile).
  reconcile_flags=(--fault-at "$fault_ms")
  [[ "$CHAOS_LOAD" == burst ]] && chaos_fault_on_path "$name" && reconcile_flags+=(--fault-in-flight)
  local report figures line sent a2 a5 none spooled stored dups lost completed failed skipped stuck unanswered
  local in_flight=-
  report="$(load_reconcile "$label" "$LOAD_OUT" "${reconcile_flags[@]}")" || die "reconciling $name failed (above)"
  figures="${report%%$'\n'*}"
  IFS='|' read -r sent a2 a5 none _ spooled stored dups lost completed failed _ skipped stuck unanswered <<<"$figures"
  [[ -n "$unanswered" ]] || die "reconciling $name failed: '$figures'"
  while IFS= read -r line; do
    case "$line" in
      "violation "*) violations+=("${line#violation }") ;;
      "note "*) CHAOS_NOTES+=("$name: ${line#note }") ;;
      "fault-in-flight "*) in_flight="${line#fault-in-flight }" ;;
    esac
  done <<<"$report"
  curl -sf --max-time 2 -o /dev/null "$INGEST_URL/health/ready" || violations+=("ingest is not ready")
  curl -sf --max-time 2 -o /dev/null "$CAPTURE_HEALTH_URL/health/live" || violations+=("capture is not live")

  local verdict=ok
  if [[ ${#violations[@]} -gt 0 ]]; then
    verdict="FAIL: $(IFS=';'; printf '%s' "${violations[*]}")"
    CHAOS_FAILURES=$((CHAOS_FAILURES + 1))
  fi
  # shellcheck disable=SC2059 # the format is this file's own constant
  CHAOS_ROWS+=("$(printf "$CHAOS_ROW_FORMAT" \
    "$name" "$sent" "$in_flight" "$a2" "$a5" "$none" "$spooled" "$stored" "$dups" "$lost" "$completed" \
    "$failed" "$skipped" "$stuck" "$(($(date +%s) - started))" "$verdict")")
  printf '%s\n' "${CHAOS_ROWS[-1]}"
}

CHAOS_ROW_FORMAT='| %-16s | %4s | %4s | %4s | %4s | %4s | %4s | %6s | %4s | %4s | %5s | %6s | %5s | %5s | %4s | %4s |'

chaos_table_header() {
  # shellcheck disable=SC2059 # the format is this file's own constant
  printf "$CHAOS_ROW_FORMAT\n" \
    scenario sent infl 2xx 5xx none 202s stored dup lost shots failed skip stuck secs ok
  printf '|%s|\n' "------------------|------|------|------|------|------|------|--------|------|------|-------|--------|-------|-------|------|------"
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
  if [[ "$CHAOS_LOAD" == burst ]]; then
    load_traders $((CHAOS_TRADERS - LOAD_TRADERS)) "bulk.$LOAD_EMAIL_DOMAIN" "$LOAD_WORK/bulk-tokens" "$LOAD_BULK_PLAN"
    cat "$LOAD_TOKENS" "$LOAD_WORK/bulk-tokens" >"$CHAOS_TOKENS"
  fi
  local backlog
  backlog="$(chaos_clear_backlog)" || die "could not clear the capture queue before the scenarios"
  [[ "$backlog" == 0 ]] || info "took $backlog open captures left by earlier steps off the queue (marked skipped)"
  # Started afresh, so that they run with this run's settings (INGEST_ALLOWED_SOURCES).
  load_stop_services
  chaos_ingest_env load_start_services
  if [[ "$CHAOS_LOAD" == burst ]]; then
    chaos_warm_up
    info "$CHAOS_BARS bar closes $CHAOS_BAR_EVERY apart per scenario: $CHAOS_TRADERS traders x $CHAOS_ALERTS alerts at once"
    info "($((CHAOS_TRADERS * CHAOS_ALERTS)) webhooks, each on a new connection from $CHAOS_SOURCES); captured first: $LOAD_TRADERS traders;"
    info "the fault $CHAOS_FAULT_DELAY s after the second bar left, for $CHAOS_OUTAGE s"
  else
    info "$CHAOS_RATE webhooks/s for $CHAOS_SECONDS s per scenario from $LOAD_TRADERS traders; faults last $CHAOS_OUTAGE s;"
  fi
  info "capture lease $CAPTURE_LEASE, job timeout $CAPTURE_JOB_TIMEOUT; a capture still open after $CHAOS_STUCK_AFTER s without progress is stuck"
  info "columns: infl = webhooks in flight when the fault hit, answers by attempt (2xx, 5xx, none = no answer),"
  info "202s = spooled, stored signals, duplicates, 2xx without a stored signal (lost), captures completed / failed /"
  info "skip (bulk traders' captures no daemon reached, taken off the queue) / stuck, wall time"
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

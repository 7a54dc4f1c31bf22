# shellcheck shell=bash
# scripts/bench soak: steady load for a bounded time, one line per minute, so that leaks, bloat and
# drift show up as columns that do not stay flat (sourced by scripts/bench).
#
# It starts a throwaway stack of its own (SOAK_STACK_DIR, default .dev/soak-stack; ports
# SOAK_PG_PORT 55432, SOAK_GATEWAY_PORT 55431 with ingest on +2 and capture's health on +3,
# SOAK_POSTGREST_PORT 29440), with ingest (through PostgREST, the default path) and one capture
# daemon, debug builds as scripts/dev runs them, and removes it afterwards (KEEP_SOAK_STACK=1 keeps
# it). Two streams of webhooks from webhook-load, SOAK_RATE per second in all (default 20):
#
#   alerts  SOAK_CAPTURE_RATE/s (default 0.8) accepted alerts from 8 traders, each captured: one
#           daemon renders about 80 charts a minute on two cores, so this must stay below that or
#           the queue grows by construction, whatever the code does;
#   edge    the rest, from 8 traders whose webhook is switched off: each is the same round trip
#           through ingest, PostgREST and public.ingest_signal (token lookup under the trader's
#           row lock, the delivery logged in webhook_deliveries), answered 403, without a signal
#           or a capture.
#
# Per minute: webhooks sent that minute and their answers, first-attempt latency p50/p95/p99;
# PSS of ingest, PostgREST, the capture daemon, its Chromium (all processes) and Postgres (all
# backends, without shared memory), and apart the shared memory Postgres has touched (its shared
# buffers fill up as data is read and written, up to the size of the segment); total size and dead tuples of public.signals and private.capture_jobs (the queue),
# the size of private.signal_dedup, the open jobs. At the end the accepted alerts are reconciled
# (nothing lost, stored twice or stuck), and the verdict: after the first minute (warm-up) a
# series is flat when the mean of its last third is within 10 % (plus 5 MB of memory, or 256 kB
# of table) of the mean of the first third; Postgres's shared memory within its segment; p99 of
# every minute within 2x the first minute's.
#
# The daemons get the caller's environment, so CAPTURE_BROWSER_RECYCLE_AFTER (and the other
# CAPTURE_* settings) can be set for a run; RUST_BACKTRACE is unset, as for a service (with it, the
# first error that records a backtrace maps the debug build's symbols: about 150 MB more PSS).

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=scripts/lib/install.sh
source "$REPO_ROOT/scripts/lib/install.sh"
# shellcheck source=scripts/lib/stack.sh
source "$REPO_ROOT/scripts/lib/stack.sh"
# shellcheck source=scripts/lib/ingest.sh
source "$REPO_ROOT/scripts/lib/ingest.sh"
# shellcheck source=scripts/lib/capture.sh
source "$REPO_ROOT/scripts/lib/capture.sh"
# shellcheck source=scripts/lib/load.sh
source "$REPO_ROOT/scripts/lib/load.sh"

SOAK_PIDS=()

soak_cleanup() {
  set +e
  [[ ${#SOAK_PIDS[@]} -gt 0 ]] && kill "${SOAK_PIDS[@]}" 2>/dev/null
  if [[ "${KEEP_SOAK_STACK:-0}" == 1 ]]; then
    echo "== leaving the soak stack running (KEEP_SOAK_STACK=1): STACK_DIR=$STACK_DIR scripts/dev down"
  else
    load_config
    load_stop_services
    load_clean
    (stack_down) >/dev/null
  fi
}

now_ms() { date +%s%3N; }

# Sleeps until the given time (Unix ms).
sleep_until_ms() {
  local wait_ms=$(($1 - $(now_ms)))
  ((wait_ms > 0)) && sleep "$(awk -v ms="$wait_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
  return 0
}

# Webhooks first sent in [from, to) ms, over both streams: "count ok refused other p50 p95 p99"
# (ok = final 2xx, refused = final 403, other = anything else; latency of the first attempt,
# nearest-rank percentiles).
soak_minute_traffic() {
  local from="$1" to="$2" rows="$LOAD_WORK/minute"
  shift 2
  awk -F'\t' -v lo="$from" -v hi="$to" '$2 >= lo && $2 < hi { print $3, $6 }' "$@" >"$rows"
  printf '%s %s\n' \
    "$(awk '{ n++; if ($1 ~ /^2/) ok++; else if ($1 == "403") r++; else o++ }
            END { printf "%d %d %d %d", n, ok, r, o }' "$rows")" \
    "$(cut -d' ' -f2 "$rows" | sort -n | awk '
        function rank(p,   i) { i = int(p * NR + 0.999999); return v[i < 1 ? 1 : i] }
        { v[NR] = $1 }
        END { if (NR == 0) print "0 0 0"; else printf "%.1f %.1f %.1f", rank(0.50), rank(0.95), rank(0.99) }')"
}

# PSS in MB of: ingest, PostgREST, the capture daemon, its Chromium, Postgres without its shared
# memory; then the shared memory Postgres's processes have touched (their Pss_Shmem summed).
soak_memory() {
  local capture_pid chromium=() postmaster
  capture_pid="$(cat "$CAPTURE_PID")"
  mapfile -t chromium < <(process_tree "$capture_pid" | tail -n +2)
  postmaster="$(head -n 1 "$PGDATA_DIR/postmaster.pid")"
  local values=()
  values+=("$(pss_kb "$(cat "$INGEST_PID")")")
  values+=("$(pss_kb "$(cat "$POSTGREST_PID")")")
  values+=("$(pss_kb "$capture_pid")")
  values+=("$(pss_kb "${chromium[@]}")")
  local postgres=() pid private=0 shared=0 kb shm
  mapfile -t postgres < <(process_tree "$postmaster")
  for pid in "${postgres[@]}"; do
    read -r kb shm < <(awk '/^Pss:/ { p = $2 } /^Pss_Shmem:/ { s = $2 } END { print p + 0, s + 0 }' \
      /proc/"$pid"/smaps_rollup 2>/dev/null || echo "0 0")
    private=$((private + kb - shm))
    shared=$((shared + shm))
  done
  values+=("$private" "$shared")
  printf '%s\n' "${values[@]}" | awk '{ printf "%.1f ", $1 / 1024 } END { print "" }'
}

# Table figures: signals kB, signals dead tuples, capture_jobs kB, capture_jobs dead tuples,
# signal_dedup kB, open jobs (queued or running), captures completed so far.
soak_tables() {
  psql_as "$(database_url)" -At -F ' ' <<'SQL'
select pg_total_relation_size('public.signals') / 1024,
       (select n_dead_tup from pg_stat_user_tables where relid = 'public.signals'::regclass),
       pg_total_relation_size('private.capture_jobs') / 1024,
       (select n_dead_tup from pg_stat_user_tables where relid = 'private.capture_jobs'::regclass),
       pg_total_relation_size('private.signal_dedup') / 1024,
       (select count(*) from private.capture_jobs where state in ('queued', 'running')),
       (select count(*) from public.signals where screenshot_status = 'completed')
SQL
}

# The verdict over the per-minute series file (columns as soak_row writes them).
soak_verdict() {
  awk '
    function mean(col, from, to,   i, s) { s = 0; for (i = from; i <= to; i++) s += v[i, col]; return s / (to - from + 1) }
    function flat(name, col, slack, unit,   first, last, ok) {
      first = mean(col, 2, 1 + k); last = mean(col, n - k + 1, n)
      ok = last <= first * 1.10 + slack
      printf "  %-28s first third %9.1f %s, last third %9.1f %s: %s\n", name, first, unit, last, unit, ok ? "flat" : "GROWS"
      if (!ok) bad++
    }
    { n++; for (i = 1; i <= NF; i++) v[n, i] = $i }
    END {
      if (n < 4) { print "  (a verdict needs at least 4 minutes)"; exit }
      k = int((n - 1) / 3)
      flat("ingest PSS", 9, 5, "MB"); flat("PostgREST PSS", 10, 5, "MB"); flat("capture daemon PSS", 11, 5, "MB")
      flat("Chromium PSS", 12, 5, "MB"); flat("Postgres PSS (private)", 13, 5, "MB")
      flat("capture_jobs size", 17, 256, "kB"); flat("signal_dedup size", 19, 256, "kB")
      top = 0
      for (i = 1; i <= n; i++) if (v[i, 14] > top) top = v[i, 14]
      ok = top <= segment
      printf "  %-28s at most %.1f MB of the %.1f MB segment: %s\n", "Postgres shared memory", top, segment, ok ? "bounded" : "OVER THE SEGMENT"
      if (!ok) bad++
      worst = 0
      for (i = 1; i <= n; i++) if (v[i, 8] > worst) { worst = v[i, 8]; at = i }
      ok = worst <= 2 * v[1, 8]
      printf "  %-28s minute 1 %.1f ms, worst minute %d %.1f ms (%.2fx): %s\n", "p99 latency", v[1, 8], at, worst, worst / v[1, 8], ok ? "within 2x" : "OVER 2x"
      if (!ok) bad++
      print bad ? "  verdict: NOT FLAT (see above)" : "  verdict: flat after warm-up, p99 within 2x of minute 1"
    }' segment="$2" "$1"
}

bench_soak() {
  local minutes=${1:-10} rate=${SOAK_RATE:-20} capture_rate=${SOAK_CAPTURE_RATE:-0.8}
  STACK_DIR="${SOAK_STACK_DIR:-$REPO_ROOT/.dev/soak-stack}"
  PG_PORT="${SOAK_PG_PORT:-55432}"
  GATEWAY_PORT="${SOAK_GATEWAY_PORT:-55431}"
  POSTGREST_PORT="${SOAK_POSTGREST_PORT:-29440}"
  unset INGEST_PORT CAPTURE_HEALTH_PORT DATABASE_URL
  DEMO_USER_EMAIL="$DEMO_USER_EMAIL_DEFAULT"
  stack_config
  local edge_rate
  edge_rate="$(awk -v r="$rate" -v c="$capture_rate" 'BEGIN { if (r <= c) exit 1; print r - c }')" \
    || die "SOAK_RATE ($rate) must be above SOAK_CAPTURE_RATE ($capture_rate)"

  echo "== soak: $minutes min, $rate webhooks/s ($capture_rate/s accepted and captured, $edge_rate/s to switched-off webhooks)"
  install_prerequisites >/dev/null
  trap soak_cleanup EXIT
  (load_config && load_stop_services && load_clean && stack_down) >/dev/null 2>&1 || true
  echo "== a throwaway stack in ${STACK_DIR#"$REPO_ROOT"/} (postgres $PG_PORT, gateway $GATEWAY_PORT)"
  stack_up >/dev/null
  load_config
  load_build >/dev/null
  load_traders 8 alerts.load.local "$LOAD_WORK/alert-tokens"
  load_traders 8 edge.load.local "$LOAD_WORK/edge-tokens"
  psql_as "$(database_url)" -c "update public.user_config c set webhook_enabled = false
    from auth.users u where u.id = c.user_id and u.email like '%@edge.load.local'" >/dev/null
  unset RUST_BACKTRACE RUST_LIB_BACKTRACE
  load_start_services

  local tag seconds=$((minutes * 60)) t0 alerts_out edge_out
  tag="$(date +%s)"
  t0="$(now_ms)"
  load_start "soak-alerts.$tag" "$capture_rate" "$seconds" --tokens "$LOAD_WORK/alert-tokens"
  SOAK_PIDS+=("$LOAD_PID")
  alerts_out="$LOAD_OUT"
  load_start "soak-edge.$tag" "$edge_rate" "$seconds" --tokens "$LOAD_WORK/edge-tokens"
  SOAK_PIDS+=("$LOAD_PID")
  edge_out="$LOAD_OUT"

  local series="$LOAD_WORK/series" minute
  : >"$series"
  echo "   memory: PSS in MB; tables: total size in kB (dead tuples); latency: first attempt, ms"
  printf '%3s %6s %5s %4s %5s %6s %6s %6s | %6s %6s %6s %6s %6s %6s | %8s %6s %8s %6s %7s %5s %6s\n' \
    min sent ok 403 other p50 p95 p99 ingest pgrst captd chrome pg pgshm signals dead jobs dead dedup open shots
  for ((minute = 1; minute <= minutes; minute++)); do
    # Three seconds past the minute, so that its webhooks have all been answered.
    sleep_until_ms $((t0 + minute * 60000 + 3000))
    local traffic memory tables
    traffic="$(soak_minute_traffic $((t0 + (minute - 1) * 60000)) $((t0 + minute * 60000)) "$alerts_out" "$edge_out")"
    memory="$(soak_memory)"
    tables="$(soak_tables)"
    # shellcheck disable=SC2086 # word splitting of the figures is the point
    set -- $traffic $memory $tables
    printf '%s %s\n' "$minute" "$*" >>"$series"
    printf '%3d %6d %5d %4d %5d %6.1f %6.1f %6.1f | %6.1f %6.1f %6.1f %6.1f %6.1f %6.1f | %8d %6d %8d %6d %7d %5d %6d\n' \
      "$minute" "$@"
  done
  local pid
  for pid in "${SOAK_PIDS[@]}"; do wait "$pid" || die "webhook-load failed"; done
  SOAK_PIDS=()

  echo "== after the load: captures drained, accepted alerts reconciled"
  load_wait_captures "soak-alerts.$tag" 60 300
  local report figures sent a2 a5 none given_up spooled stored dups lost completed failed no_reason skipped stuck unanswered
  report="$(load_reconcile "soak-alerts.$tag" "$alerts_out")" || die "reconciling the alerts failed (above)"
  figures="${report%%$'\n'*}"
  IFS='|' read -r sent a2 a5 none given_up spooled stored dups lost completed failed no_reason skipped stuck unanswered <<<"$figures"
  printf '  alerts: sent %d, 2xx answers %d (spooled %d), 5xx %d, no answer %d, given up %d; stored %d (without a 2xx %d),\n' \
    "$sent" "$a2" "$spooled" "$a5" "$none" "$given_up" "$stored" "$unanswered"
  printf '          duplicates %d, 2xx without a signal %d; captures completed %d, failed %d (without a reason %d), skipped %d, stuck %d\n' \
    "$dups" "$lost" "$completed" "$failed" "$no_reason" "$skipped" "$stuck"
  # The violations and notes webhook-load found, if any.
  grep -E '^(violation|note) ' <<<"$report" | sed 's/^/  /' || true
  awk -F'\t' '{ n++; if ($3 == "403") r++ } END { printf "  edge:   sent %d, answered 403 %d, other %d\n", n, r, n - r }' "$edge_out"
  echo "== verdict (minute 1 is the warm-up)"
  local segment
  segment="$(psql_as "$(database_url)" -At -c 'select round(sum(allocated_size) / 1048576.0, 1) from pg_shmem_allocations')"
  soak_verdict "$series" "$segment"
}

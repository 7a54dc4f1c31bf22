# shellcheck shell=bash
# The scale-out scenario (issue 15, "Scale-out, shown"): `scripts/chaos scale-out`. Needs
# scripts/lib/common.sh, stack.sh, ingest.sh, capture.sh and load.sh, and a configured stack that
# is up (stack_up).
#
# Three ingest replicas behind nginx (with deploy/nginx/ingest-proxy.conf, the settings an operator
# uses: deploy/nginx/ingest.conf) and three capture daemons (worker ids scale-out-1..3, one Chromium
# each, the built-in chart, fs storage shared under $SCREENSHOT_DIR) share the stack's Postgres
# (through PostgREST, as ingest always reaches it here) and its queue. A bar-close burst,
# SCALE_ALERTS webhooks from SCALE_TRADERS traders within SCALE_BURST, each on a new connection from
# one of TradingView-like source addresses 127.0.0.2-127.0.0.5, goes to the proxy with TradingView's
# retries (3 s deadline, 3 retries 5 s apart). Ingest replica 2 is killed with SIGKILL while it is
# serving the burst: the script follows the proxy's access log and kills it once it has answered
# SCALE_KILL_AFTER requests of it, not after a fixed sleep (which, on a loaded machine, landed after
# the burst had been answered and so proved nothing). As soon as capture daemon 1 holds leased jobs,
# it is killed with SIGKILL too. The replica is started again on its own spool once the burst is
# over, as its restart policy would (deploy/: Restart=on-failure, restart: unless-stopped); the
# daemon is not: the two others must take over its leased jobs when their lease (CAPTURE_LEASE,
# short here) runs out. Then, bounded: every replica's spool drained, every capture ended. It fails
# when:
#   - the replica's kill was not mid-burst: it answered nothing in the second before it, or no
#     request tried it after it (none answered 502 in flight, none passed on to another replica);
#   - an alert answered 2xx is not stored, or is stored twice (webhook-load reconcile);
#   - a capture is open, failed, or a job is left queued or running (reconcile, workers);
#   - a signal was completed twice, by an unknown worker, or has no object (or a damaged one) in
#     storage, or an object exists for a signal not completed (webhook-load workers);
#   - a daemon that lived to the end captured none of the burst (the work was not spread);
#   - a job the killed daemon held was not completed by another daemon after its lease ran out;
#   - the killed daemon's Chromium outlived it.
# Requests in flight on the killed replica are answered 502 by the proxy (the request had been
# sent, so a POST is not passed on: see deploy/nginx/ingest-proxy.conf); TradingView retries a
# 502 and the retry lands on a live replica. They are counted apart ("in flight, 502"), and are
# lost only if no retry got a 2xx (then "given up" says so).
#
# Settings (environment): SCALE_ALERTS (240), SCALE_TRADERS (40), SCALE_BURST (4s), SCALE_KILL_AFTER
# (a quarter of a replica's share of the burst: 20), SCALE_PORT (GATEWAY_PORT + 10: the proxy; the
# replicas on +1..+3, the daemons' health on +4..+6), SCALE_PROFILE (release: the figures in
# BENCHMARKS.md are from release builds), SCALE_CONCURRENCY (2 captures at once per daemon);
# CAPTURE_LEASE (20s) and CAPTURE_JOB_TIMEOUT (15s) as in scripts/lib/load.sh.

SCALE_SOURCES=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5
SCALE_REPLICAS=3
SCALE_DAEMONS=3

scale_config() {
  load_config
  SCALE_ALERTS="${SCALE_ALERTS:-240}"
  SCALE_TRADERS="${SCALE_TRADERS:-40}"
  SCALE_BURST="${SCALE_BURST:-4s}"
  SCALE_KILL_AFTER="${SCALE_KILL_AFTER:-$((SCALE_ALERTS / SCALE_REPLICAS / 4))}"
  SCALE_PORT="${SCALE_PORT:-$((GATEWAY_PORT + 10))}"
  SCALE_PROFILE="${SCALE_PROFILE:-release}"
  SCALE_CONCURRENCY="${SCALE_CONCURRENCY:-2}"
  case "$SCALE_PROFILE" in
    release) SCALE_CARGO_FLAGS=(--release) ;;
    debug) SCALE_CARGO_FLAGS=() ;;
    *) die "SCALE_PROFILE must be release or debug, not '$SCALE_PROFILE'" ;;
  esac
  SCALE_BIN="$CARGO_TARGET/$SCALE_PROFILE"
  LOAD_BIN="$SCALE_BIN/webhook-load"
  SCALE_WORK="$STACK_DIR/scale-out"
  SCALE_TOKENS="$SCALE_WORK/tokens"
  SCALE_PROXY_CONF="$SCALE_WORK/nginx.conf"
  SCALE_PROXY_PID="$RUN_DIR/scale-proxy.pid"
  SCALE_PROXY_URL="http://127.0.0.1:$SCALE_PORT"
  SCALE_PROXY_ACCESS="$LOG_DIR/scale-proxy-access.log"
  SCALE_PROXY_ERRORS="$LOG_DIR/scale-proxy-error.log"
  # The same burst is what the seconds measure: seconds-only durations keep the arithmetic simple.
  [[ "$SCALE_BURST" =~ ^[0-9]+s$ ]] || die "SCALE_BURST must be whole seconds, e.g. 4s"
  [[ "$SCALE_KILL_AFTER" =~ ^[0-9]+$ && "$SCALE_KILL_AFTER" -ge 1 ]] ||
    die "SCALE_KILL_AFTER must be a whole number of requests, at least 1 (SCALE_ALERTS too small?)"
}

scale_build() {
  info "building ingest, capture and webhook-load (cargo build ${SCALE_CARGO_FLAGS[*]})"
  (cd "$REPO_ROOT" && cargo build -q "${SCALE_CARGO_FLAGS[@]}" -p ingest &&
    cargo build -q "${SCALE_CARGO_FLAGS[@]}" -p capture &&
    cargo build -q "${SCALE_CARGO_FLAGS[@]}" -p webhook-load) || die "cargo build failed"
}

# --- the processes -----------------------------------------------------------------------------

scale_ingest_port() { printf '%s\n' "$((SCALE_PORT + $1))"; }
scale_ingest_pidfile() { printf '%s\n' "$RUN_DIR/scale-ingest-$1.pid"; }
scale_capture_pidfile() { printf '%s\n' "$RUN_DIR/scale-capture-$1.pid"; }
scale_worker_id() { printf 'scale-out-%s\n' "$1"; }

# Ingest replica $1 (1-based), through PostgREST as ingest_start runs it, on a spool of its own.
scale_ingest_start() {
  local i="$1" port pidfile log
  port="$(scale_ingest_port "$i")"
  pidfile="$(scale_ingest_pidfile "$i")"
  log="$LOG_DIR/scale-ingest-$i.log"
  require_free_port "$port" "ingest replica $i"
  (
    set -a
    # shellcheck disable=SC1090
    source "$STACK_ENV_FILE"
    set +a
    unset DATABASE_URL
    export INGEST_LISTEN="127.0.0.1:$port"
    # The proxy's X-Forwarded-For names the sender (127.0.0.2-127.0.0.5), as in deploy/nginx/.
    export INGEST_TRUSTED_PROXIES=127.0.0.1
    # Outside $SCALE_WORK, which is handed to the proxy's service user.
    export INGEST_SPOOL_DIR="$STACK_DIR/scale-spool-$i"
    nohup "$SCALE_BIN/ingest" >>"$log" 2>&1 &
    echo $! >"$pidfile"
  )
  wait_for_http "http://127.0.0.1:$port/health/ready" "ingest replica $i" "$pidfile" "$log"
}

# Capture daemon $1 (1-based) with worker id scale-out-$1, sharing the fs storage.
scale_capture_start() {
  local i="$1" port pidfile log
  port="$((SCALE_PORT + 3 + i))"
  pidfile="$(scale_capture_pidfile "$i")"
  log="$LOG_DIR/scale-capture-$i.log"
  require_free_port "$port" "capture daemon $i health"
  capture_ensure_key
  mkdir -p "$SCREENSHOT_DIR"
  (
    set -a
    # shellcheck disable=SC1090
    source "$STACK_ENV_FILE"
    set +a
    export STORAGE="fs:$SCREENSHOT_DIR"
    export CAPTURE_HEALTH_LISTEN="127.0.0.1:$port"
    export CAPTURE_WORKER_ID
    CAPTURE_WORKER_ID="$(scale_worker_id "$i")"
    export CAPTURE_CONCURRENCY="$SCALE_CONCURRENCY"
    COOKIE_SEAL_KEYS="$(secret cookie_seal_keys)"
    export COOKIE_SEAL_KEYS
    nohup "$SCALE_BIN/capture" >>"$log" 2>&1 &
    echo $! >"$pidfile"
  )
  wait_for_http "http://127.0.0.1:$port/health/live" "capture daemon $i" "$pidfile" "$log"
}

# The proxy: nginx (the gateway's package) with deploy/nginx/'s settings, this stack's replicas in
# the upstream block (with ingest.conf's max_fails and fail_timeout), run as the stack's service
# user like the gateway. The access log adds which replicas each request went to, and how it ended.
scale_proxy_start() {
  local servers="" i
  for i in $(seq 1 "$SCALE_REPLICAS"); do
    servers+="    server 127.0.0.1:$(scale_ingest_port "$i") max_fails=1 fail_timeout=2s;"$'\n'
  done
  mkdir -p "$SCALE_WORK/nginx"
  touch "$SCALE_PROXY_ACCESS" "$SCALE_PROXY_ERRORS"
  cp "$REPO_ROOT/deploy/nginx/ingest-proxy.conf" "$SCALE_WORK/ingest-proxy.conf"
  cat >"$SCALE_PROXY_CONF" <<EOF
# Rendered by scripts/lib/scale_out.sh for one scale-out run.
worker_processes 1;
pid $SCALE_PROXY_PID;
error_log $SCALE_PROXY_ERRORS warn;
events {
  worker_connections 4096;
}
http {
  log_format scale '\$msec \$remote_addr \$status "\$upstream_addr" "\$upstream_status" \$request_time';
  access_log $SCALE_PROXY_ACCESS scale;
  client_body_temp_path $SCALE_WORK/nginx/client_body;
  proxy_temp_path $SCALE_WORK/nginx/proxy;
  fastcgi_temp_path $SCALE_WORK/nginx/fastcgi;
  uwsgi_temp_path $SCALE_WORK/nginx/uwsgi;
  scgi_temp_path $SCALE_WORK/nginx/scgi;
  server_tokens off;
  upstream ingest {
$servers    keepalive 32;
  }
  server {
    listen 127.0.0.1:$SCALE_PORT backlog=4096;
    location / {
      include $SCALE_WORK/ingest-proxy.conf;
    }
  }
}
EOF
  own_for_service_user "$SCALE_WORK" "$LOG_DIR"
  require_free_port "$SCALE_PORT" "the scale-out proxy"
  as_service_user nginx -p "$SCALE_WORK/nginx/" -c "$SCALE_PROXY_CONF" -e "$SCALE_PROXY_ERRORS" </dev/null \
    || die "nginx (the scale-out proxy) did not start, see $SCALE_PROXY_ERRORS"
  wait_for_http "$SCALE_PROXY_URL/health/live" "the scale-out proxy" "$SCALE_PROXY_PID" "$SCALE_PROXY_ERRORS"
}

scale_stop_all() {
  local i
  for i in $(seq 1 "$SCALE_DAEMONS"); do stop_pidfile "$(scale_capture_pidfile "$i")" "capture daemon $i"; done
  for i in $(seq 1 "$SCALE_REPLICAS"); do stop_pidfile "$(scale_ingest_pidfile "$i")" "ingest replica $i"; done
  stop_pidfile "$SCALE_PROXY_PID" "the scale-out proxy"
}

# --- the faults --------------------------------------------------------------------------------

# Kills daemon $1 once it holds leased jobs (waiting at most 20 s); writes the signal ids it held
# to $SCALE_WORK/held and the Chromium processes it left behind to SCALE_ORPHANS.
scale_kill_daemon() {
  local i="$1" pidfile worker daemon chromium=() pid held=0
  pidfile="$(scale_capture_pidfile "$i")"
  worker="$(scale_worker_id "$i")"
  pid_alive "$pidfile" || die "capture daemon $i is not running"
  for _ in $(seq 1 200); do
    held="$(psql_as "$(database_url)" -At -v w="$worker" \
      <<<"select count(*) from private.capture_jobs where locked_by = :'w' and state = 'running'")"
    [[ "$held" -gt 0 ]] && break
    sleep 0.1
  done
  [[ "$held" -gt 0 ]] || die "capture daemon $i claimed nothing within 20 s of the burst; see $LOG_DIR/scale-capture-$i.log"
  daemon="$(cat "$pidfile")"
  mapfile -t chromium < <(process_tree "$daemon" | tail -n +2)
  kill -KILL "$daemon"
  # What it held when it died: its rows stay `running` under its name until their lease runs out.
  psql_as "$(database_url)" -At -v w="$worker" \
    <<<"select signal_id from private.capture_jobs where locked_by = :'w' and state = 'running'" >"$SCALE_WORK/held"
  sleep 2
  SCALE_ORPHANS=0
  for pid in "${chromium[@]}"; do
    if kill -0 "$pid" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]; then
      SCALE_ORPHANS=$((SCALE_ORPHANS + 1))
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

# Kills ingest replica $1 while it serves the burst: once the proxy's access log shows that it has
# answered SCALE_KILL_AFTER requests, and the sender ($2) is still running. Sets SCALE_KILLED_AT
# (epoch seconds, read the moment before the signal; nginx's \$msec is compared with it) and
# SCALE_KILLED_AFTER (what it had answered). The log is the only thing that tells the script the
# replica is serving: a sleep does not, on a machine whose load decides how fast the burst goes.
scale_kill_replica_serving() {
  local i="$1" sender="$2" port served=0 deadline
  port="$(scale_ingest_port "$i")"
  deadline=$(($(date +%s) + ${SCALE_BURST%s} + 30))
  while :; do
    served="$(awk -F'"' -v p="$port" '{ split($1, h, " "); n = split($2, a, ", "); sub(/.*:/, "", a[n]) }
      a[n] == p && h[3] ~ /^2/ { c++ } END { print c + 0 }' "$SCALE_PROXY_ACCESS")"
    [[ "$served" -ge "$SCALE_KILL_AFTER" ]] && break
    kill -0 "$sender" 2>/dev/null ||
      die "the sender ended before ingest replica $i had answered $SCALE_KILL_AFTER requests ($served); see $SCALE_PROXY_ACCESS"
    [[ "$(date +%s)" -lt "$deadline" ]] ||
      die "ingest replica $i answered $served requests, not $SCALE_KILL_AFTER, within the burst and 30 s"
    sleep 0.02
  done
  local pidfile pid
  pidfile="$(scale_ingest_pidfile "$i")"
  pid_alive "$pidfile" || die "ingest replica $i is not running"
  pid="$(cat "$pidfile")"
  kill -0 "$sender" 2>/dev/null || die "the sender ended before ingest replica $i could be killed mid-burst"
  # Read just before the signal, without a fork: a `date` after it ran late under load and put
  # the 502s of the requests in flight on the replica before the recorded kill.
  SCALE_KILLED_AT="$EPOCHREALTIME"
  kill -KILL "$pid"
  SCALE_KILLED_AFTER="$served"
}

# --- the figures -------------------------------------------------------------------------------

# Per replica port: requests whose last upstream it was, and of those 2xx and 502; then the
# requests the proxy passed on after a connection failure (more than one upstream tried).
scale_proxy_figures() {
  # Fields split on quotes: the upstream lists hold ", " when the proxy tried several replicas.
  awk -F'"' '
    {
      split($1, h, " "); n = split($2, a, ", ")
      last = a[n]; sub(/.*:/, "", last)
      total[last]++
      if (h[3] ~ /^2/) ok[last]++
      if (h[3] == 502) bad[last]++
      if (n > 1) redispatched++
    }
    END {
      for (p in total) printf "replica %s %d %d %d\n", p, total[p], ok[p], bad[p]
      printf "redispatched %d\n", redispatched
    }' "$SCALE_PROXY_ACCESS"
}

# Around the kill of the replica on port $1 at $2 (epoch seconds, as nginx's \$msec): "answered A"
# requests it answered 2xx before the kill, "late L" 2xx of it the proxy logged after the kill
# (answers it had written before it died, read by the proxy after), "before B" requests it answered
# 2xx in the second before the kill; "inflight F" requests it was the last to be tried for, logged
# after the kill and answered 502 by the proxy (they were in flight on it, or nothing else was left
# to try); "passed R" requests that tried it after the kill and were passed on to another replica
# (its connection refused).
scale_kill_figures() {
  awk -F'"' -v p="$1" -v t="$2" '
    {
      split($1, h, " "); n = split($2, a, ", "); split($4, s, ", ")
      for (k = 1; k <= n; k++) {
        port = a[k]; sub(/.*:/, "", port)
        if (port != p) continue
        if (h[1] < t && s[k] ~ /^2/) answered++
        if (h[1] >= t && s[k] ~ /^2/) late++
        if (h[1] >= t - 1 && h[1] < t && s[k] ~ /^2/) before++
        if (h[1] >= t && k == n && h[3] == 502) inflight++
        if (h[1] >= t && k < n) passed++
      }
    }
    END { printf "answered %d\nlate %d\nbefore %d\ninflight %d\npassed %d\n", answered, late, before, inflight, passed }' "$SCALE_PROXY_ACCESS"
}

# --- the run -----------------------------------------------------------------------------------

scale_out_run() {
  scale_config
  scale_build
  mkdir -p "$SCALE_WORK"
  load_traders "$SCALE_TRADERS" scale.local "$SCALE_TOKENS"
  local backlog
  backlog="$(chaos_clear_backlog)" || die "could not clear the capture queue before the scenario"
  [[ "$backlog" == 0 ]] || info "took $backlog open captures left by earlier steps off the queue (marked skipped)"
  : >"$SCALE_PROXY_ACCESS"

  local i
  for i in $(seq 1 "$SCALE_REPLICAS"); do scale_ingest_start "$i" >/dev/null; done
  for i in $(seq 1 "$SCALE_DAEMONS"); do scale_capture_start "$i" >/dev/null; done
  scale_proxy_start >/dev/null
  # The readiness probes went through the proxy too; count only the burst.
  : >"$SCALE_PROXY_ACCESS"
  local burst_s="${SCALE_BURST%s}" label started rate
  label="scale-out.$(date +%s)"
  rate="$(awk -v n="$SCALE_ALERTS" -v s="$burst_s" 'BEGIN { printf "%.3f", n / s }')"
  info "$SCALE_ALERTS webhooks from $SCALE_TRADERS traders within $SCALE_BURST through $SCALE_PROXY_URL"
  info "($SCALE_REPLICAS ingest replicas, $SCALE_DAEMONS capture daemons x $SCALE_CONCURRENCY, $SCALE_PROFILE builds,"
  info "lease $CAPTURE_LEASE, job timeout $CAPTURE_JOB_TIMEOUT); load average: $(cut -d' ' -f1-3 /proc/loadavg)"

  LOAD_OUT="$SCALE_WORK/$label.tsv"
  started="$EPOCHREALTIME"
  "$LOAD_BIN" send --url "$SCALE_PROXY_URL" --tokens "$SCALE_TOKENS" --rate "$rate" \
    --duration "$SCALE_BURST" --label "$label" --out "$LOAD_OUT" \
    --source-addrs "$SCALE_SOURCES" --new-connections 2>"$SCALE_WORK/$label.summary" &
  LOAD_PID=$!
  scale_kill_replica_serving 2 "$LOAD_PID"
  local kill_in
  kill_in="$(awk -v a="$SCALE_KILLED_AT" -v b="$started" 'BEGIN { printf "%.2f", a - b }')"
  info "killed ingest replica 2 (SIGKILL) $kill_in s into the burst, after it answered $SCALE_KILLED_AFTER requests"
  scale_kill_daemon 1
  info "killed capture daemon 1 (SIGKILL) holding $(wc -l <"$SCALE_WORK/held") leased jobs, $(awk -v b="$started" -v a="$(date +%s.%3N)" 'BEGIN { printf "%.0f", a - b }') s in"
  wait "$LOAD_PID" || die "webhook-load failed: $(cat "$SCALE_WORK/$label.summary")"
  LOAD_PID=""
  info "$(cat "$SCALE_WORK/$label.summary")"
  # The replica's restart policy brings it back on its own spool; what it spooled is replayed.
  stop_pidfile "$(scale_ingest_pidfile 2)" "ingest replica 2"
  scale_ingest_start 2 >/dev/null
  for i in $(seq 1 "$SCALE_REPLICAS"); do
    "$LOAD_BIN" wait-spool --ingest-url "http://127.0.0.1:$(scale_ingest_port "$i")" --timeout 60s
  done
  local lease="${CAPTURE_LEASE%s}" poll="${CAPTURE_POLL_INTERVAL%s}"
  load_wait_captures "$label" "$((lease + 14 + 2 * poll + 10))" 300
  local drained
  drained="$(awk -v b="$started" -v a="$(date +%s.%3N)" 'BEGIN { printf "%.0f", a - b }')"

  local violations=() notes=() report figures line
  report="$(load_reconcile "$label" "$LOAD_OUT")" || die "reconciling the scale-out run failed (above)"
  figures="${report%%$'\n'*}"
  local sent a2 a5 none given_up spooled stored dups lost completed failed _r skipped stuck _s
  IFS='|' read -r sent a2 a5 none given_up spooled stored dups lost completed failed _r skipped stuck _s <<<"$figures"
  [[ -n "$_s" ]] || die "reconciling the scale-out run failed: '$figures'"
  while IFS= read -r line; do
    case "$line" in
      "violation "*) violations+=("${line#violation }") ;;
      "note "*) notes+=("${line#note }") ;;
    esac
  done <<<"$report"
  [[ "$failed" == 0 && "$skipped" == 0 ]] || violations+=("$failed captures failed and $skipped were skipped: every stored alert must be captured")

  local workers_report per_worker=() objects temp open_jobs
  workers_report="$(DATABASE_URL="$(database_url)" "$LOAD_BIN" workers --label "$label" \
    --screenshots "$SCREENSHOT_DIR" --killed "$(scale_worker_id 1)" \
    --workers "$(scale_worker_id 1),$(scale_worker_id 2),$(scale_worker_id 3)")" \
    || die "checking the daemons' work failed (above)"
  while IFS= read -r line; do
    case "$line" in
      "worker "*) per_worker+=("${line#worker }") ;;
      "figures "*) IFS='|' read -r _ objects temp open_jobs <<<"${line#figures }" ;;
      "violation "*) violations+=("${line#violation }") ;;
      "note "*) notes+=("${line#note }") ;;
    esac
  done <<<"$workers_report"

  # Every job the killed daemon held must have been completed by another daemon, after its lease.
  local held_total held_taken_over
  held_total="$(wc -l <"$SCALE_WORK/held")"
  held_taken_over="$(psql_as "$(database_url)" -At -v w="$(scale_worker_id 1)" -v held="{$(paste -sd, "$SCALE_WORK/held")}" <<'SQL'
select count(*) from private.capture_completions
 where signal_id = any (:'held'::uuid[]) and worker_id <> :'w' and attempt >= 2
SQL
)"
  [[ "$held_taken_over" == "$held_total" ]] ||
    violations+=("only $held_taken_over of the $held_total jobs the killed daemon held were completed by another daemon")
  [[ "$SCALE_ORPHANS" == 0 ]] || violations+=("$SCALE_ORPHANS Chromium processes outlived the killed daemon (ended by the script)")

  local proxy redispatched=0 replica_rows=() port total ok bad
  proxy="$(scale_proxy_figures)"
  while read -r kind port total ok bad; do
    case "$kind" in
      replica) replica_rows+=("$port $total $ok $bad") ;;
      redispatched) redispatched="$port" ;;
    esac
  done <<<"$proxy"

  # The replica's kill must have landed mid-burst: serving before it, tried after it.
  local kind value kill_answered=0 kill_late=0 kill_before=0 kill_inflight=0 kill_passed=0
  while read -r kind value; do
    case "$kind" in
      answered) kill_answered="$value" ;;
      late) kill_late="$value" ;;
      before) kill_before="$value" ;;
      inflight) kill_inflight="$value" ;;
      passed) kill_passed="$value" ;;
    esac
  done <<<"$(scale_kill_figures "$(scale_ingest_port 2)" "$SCALE_KILLED_AT")"
  [[ "$kill_before" -gt 0 ]] ||
    violations+=("ingest replica 2 answered nothing in the second before its kill: the kill did not land while it was serving")
  [[ $((kill_inflight + kill_passed)) -gt 0 ]] ||
    violations+=("no request tried ingest replica 2 after its kill (none answered 502, none passed on): the kill landed after the burst")

  printf '\n| ingest replica 2 killed | seen answered when triggered | 2xx before the kill | of them in the second before | 2xx logged after (written before it died) | after: in flight, 502 | after: passed on to another replica |\n'
  printf '|%s\n' "---:|---:|---:|---:|---:|---:|---:|"
  printf '| %s s into the burst | %s | %s | %s | %s | %s | %s |\n' "$kill_in" "$SCALE_KILLED_AFTER" "$kill_answered" \
    "$kill_before" "$kill_late" "$kill_inflight" "$kill_passed"
  printf '\n| ingest replica | port | requests answered | 2xx | 502 (in flight when killed) |\n|---|---:|---:|---:|---:|\n'
  for i in $(seq 1 "$SCALE_REPLICAS"); do
    local row="" want
    want="$(scale_ingest_port "$i")"
    for line in "${replica_rows[@]}"; do [[ "${line%% *}" == "$want" ]] && row="$line"; done
    read -r port total ok bad <<<"${row:-$want 0 0 0}"
    printf '| %s | %s | %s | %s | %s |\n' "$i$([[ $i == 2 ]] && printf ' (SIGKILL)')" "$port" "$total" "$ok" "$bad"
  done
  printf '\n| capture daemon | captures | after a lost lease |\n|---|---:|---:|\n'
  local worker count reclaimed
  for line in "${per_worker[@]}"; do
    read -r worker count reclaimed <<<"$line"
    printf '| %s | %s | %s |\n' "$worker$([[ $worker == "$(scale_worker_id 1)" ]] && printf ' (SIGKILL)')" "$count" "$reclaimed"
  done
  printf '\n| sent | 2xx | 5xx seen by TradingView | no answer | redispatched by the proxy | given up | spooled | stored | duplicates | lost | captured | objects | stuck signals / open jobs | held by the killed daemon / taken over | drained after |\n'
  printf '|%s\n' "---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s s |\n' \
    "$sent" "$a2" "$a5" "$none" "$redispatched" "$given_up" "$spooled" "$stored" "$dups" "$lost" \
    "$completed" "$objects" "$stuck / $open_jobs" "$held_total" "$held_taken_over" "$drained"
  info "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); temp files left in storage: $temp"
  local note
  for note in "${notes[@]}"; do info "note: $note"; done
  scale_stop_all >/dev/null
  if [[ ${#violations[@]} -gt 0 ]]; then
    for note in "${violations[@]}"; do warn "scale-out: $note"; done
    warn "the scale-out scenario failed (logs in $LOG_DIR/scale-*)"
    return 1
  fi
  info "scale-out: work spread over the daemons, 0 duplicates, 0 lost, 0 stuck"
}

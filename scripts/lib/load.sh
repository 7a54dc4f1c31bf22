# shellcheck shell=bash
# A bounded webhook load against a running stack, and the reconciliation of what it sent with what
# the database holds: shared by scripts/chaos (scripts/lib/chaos.sh) and `scripts/bench soak`.
# Needs scripts/lib/common.sh, stack.sh, ingest.sh and capture.sh, and a configured stack
# (stack_config, or scripts/test's configure_test_stack).
#
# The load and the checks are the `webhook-load` tool (tests/load/): `send` is open loop, from
# several traders, with TradingView's retries, one line per webhook with a unique marker
# (`"chaos_id":"<label>-<n>"` in the JSON alert, kept in public.signals.raw_message); `wait-spool`,
# `wait-captures` and `reconcile` read ingest's /health and the database. This file starts and
# stops things. Traders are on a plan of their own without quota or rate limit, so every refusal is
# the system's, not a rule's. Captures hit nothing but 127.0.0.1: these traders have no
# TradingView session, so the daemon renders its built-in chart from a data: URL, and the chart URL
# template points at a closed local port anyway.

LOAD_TRADERS="${LOAD_TRADERS:-6}"
LOAD_PLAN=loadtest
# The same without limits, but captured last (capture priority 4 against LOAD_PLAN's 2): the bulk
# of scripts/chaos's bar-close bursts, whose captures a run does not wait for (chaos.sh).
LOAD_BULK_PLAN=loadbulk
LOAD_EMAIL_DOMAIN=load.local

load_config() {
  ingest_config
  capture_config
  LOAD_WORK="$STACK_DIR/load"
  LOAD_TOKENS="$LOAD_WORK/tokens"
  LOAD_BIN="$CARGO_TARGET/debug/webhook-load"
  # What the daemons get on top of stack.env (ingest_start and capture_start keep the caller's
  # environment; ingest's spool is its own, $INGEST_SPOOL).
  export CAPTURE_CHART_URL_TEMPLATE="http://127.0.0.1:9/chart/{chart_id}/?symbol={symbol}"
  # The session checks too: nothing beyond 127.0.0.1 (a closed port answers no session).
  export CAPTURE_TRADINGVIEW_URL="http://127.0.0.1:9/"
  export CAPTURE_JOB_TIMEOUT="${CAPTURE_JOB_TIMEOUT:-15s}"
  export CAPTURE_LEASE="${CAPTURE_LEASE:-20s}"
  export CAPTURE_POLL_INTERVAL="${CAPTURE_POLL_INTERVAL:-2s}"
  export LOG_FORMAT=json
}

# The two daemons and the load generator, debug builds (what scripts/dev runs). One package per
# cargo call, as ingest_start and capture_start build them: building them together unifies their
# dependencies' features differently, and every later restart would relink.
load_build() {
  info "building ingest, capture and webhook-load (cargo build, debug)"
  (cd "$REPO_ROOT" && cargo build --locked -q -p ingest && cargo build --locked -q -p capture &&
    cargo build --locked -q -p webhook-load) || die "cargo build failed"
}

# A plan without limits and traders on it; their tokens, one per line, in a file:
# load_traders [count (LOAD_TRADERS)] [e-mail domain (LOAD_EMAIL_DOMAIN)] [file (LOAD_TOKENS)]
# [plan (LOAD_PLAN, or LOAD_BULK_PLAN)].
load_traders() {
  local count="${1:-$LOAD_TRADERS}" domain="${2:-$LOAD_EMAIL_DOMAIN}" file="${3:-$LOAD_TOKENS}"
  local plan="${4:-$LOAD_PLAN}" priority=2
  [[ "$plan" == "$LOAD_BULK_PLAN" ]] && priority=4
  mkdir -p "$LOAD_WORK"
  psql_as "$(database_url)" -v traders="$count" -v plan="$plan" -v priority="$priority" -v domain="$domain" <<'SQL' >/dev/null
insert into public.plans (id, name, monthly_signal_quota, capture_priority, rate_limit_per_minute, screenshot_retention_days)
values (:'plan', 'Load test', 2000000000, :priority, 2000000000, 1) on conflict (id) do nothing;
insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)
select gen_random_uuid(), 'authenticated', 'authenticated', 'trader' || n || '@' || :'domain', '{}', '{}'
  from generate_series(1, :traders) n
 where not exists (select from auth.users u where u.email = 'trader' || n || '@' || :'domain');
update public.user_config c set plan = :'plan'
  from auth.users u where u.id = c.user_id and u.email like '%@' || :'domain';
SQL
  psql_as "$(database_url)" -At -v domain="$domain" <<'SQL' >"$file"
select c.webhook_token from public.user_config c join auth.users u on u.id = c.user_id
 where u.email like '%@' || :'domain' order by u.email
SQL
  [[ "$(wc -l <"$file")" -ge 1 ]] || die "no load-test traders were created"
}

# Starts ingest and the capture daemon on the configured stack (no-ops when they run).
load_start_services() {
  ingest_write_env
  capture_write_env
  ingest_start >/dev/null
  capture_start >/dev/null
}

load_stop_services() {
  capture_stop >/dev/null
  ingest_stop >/dev/null
}

# Removes what the load left in the stack directory (before stack_down, which removes the rest).
load_clean() {
  rm -rf "$LOAD_WORK" "$INGEST_SPOOL" "$SCREENSHOT_DIR"
}

# Starts the load in the background: load_start LABEL RATE SECONDS [extra webhook-load flags]
# (a later --tokens wins over LOAD_TOKENS). Sets LOAD_PID, LOAD_OUT and LOAD_SUMMARY (send's
# standard error: its `bar N of M left` lines, then its totals).
load_start() {
  local label="$1" rate="$2" seconds="$3"
  shift 3
  load_send "$label" --rate "$rate" --duration "${seconds}s" "$@"
}

# The same in bar closes: load_start_bars LABEL BARS EVERY ALERTS [extra webhook-load flags]
# sends BARS bursts EVERY apart (e.g. 4s), each of every trader's ALERTS alerts at once.
load_start_bars() {
  local label="$1" bars="$2" every="$3" alerts="$4"
  shift 4
  load_send "$label" --bars "$bars" --bar-every "$every" --alerts "$alerts" "$@"
}

load_send() {
  local label="$1"
  shift
  LOAD_OUT="$LOAD_WORK/$label.tsv"
  LOAD_SUMMARY="$LOAD_WORK/$label.summary"
  "$LOAD_BIN" send --url "$INGEST_URL" --tokens "$LOAD_TOKENS" --label "$label" --out "$LOAD_OUT" \
    "$@" 2>"$LOAD_SUMMARY" &
  LOAD_PID=$!
}

# Waits (at most $2 s) until the running load's bar $1 has left.
load_wait_bar() {
  local bar="$1" deadline=$((SECONDS + $2))
  until grep -q ": bar $bar of " "$LOAD_SUMMARY" 2>/dev/null; do
    ((SECONDS < deadline)) || die "bar $bar of the load did not leave within $2 s: $(cat "$LOAD_SUMMARY")"
    kill -0 "$LOAD_PID" 2>/dev/null || die "webhook-load ended before bar $bar: $(cat "$LOAD_SUMMARY")"
    sleep 0.02
  done
}

load_wait() {
  wait "$LOAD_PID" || die "webhook-load failed: $(cat "$LOAD_SUMMARY")"
}

# Waits (at most $1 s) until ingest reports an empty spool, if it reports a spool at all.
load_wait_spool_empty() {
  "$LOAD_BIN" wait-spool --ingest-url "$INGEST_URL" --timeout "${1}s"
}

# Waits until every signal of run $1 has a final screenshot status, giving up once the number of
# open ones has not moved for $2 s (longer than a lease plus the whole retry schedule, so a job
# whose daemon died has had its chance) or after $3 s in all. What is still open then is stuck.
load_wait_captures() {
  DATABASE_URL="$(database_url)" "$LOAD_BIN" wait-captures --label "$1" --idle-limit "${2}s" --total-limit "${3}s"
}

# Reconciles run $1 (its `send` file $2) with the database. Prints one line of '|'-separated
# figures,
#   sent|answers_2xx|answers_5xx|no_answer|given_up|spooled|stored|duplicates|lost|
#   completed|failed|failed_without_reason|skipped|stuck|stored_without_2xx
# then a `violation <text>` line for each promise the run broke (lost, stored twice, stuck, failed
# without a reason, captures that do not add up) and a `note <text>` line for each thing worth
# knowing (tests/load/src/reconcile.rs).
# Further flags go to reconcile (e.g. --fault-at MS --fault-in-flight: a `fault-in-flight <n>`
# line follows the figures).
load_reconcile() {
  local label="$1" sent="$2"
  shift 2
  DATABASE_URL="$(database_url)" "$LOAD_BIN" reconcile --label "$label" --sent "$sent" "$@"
}

# --- process memory ----------------------------------------------------------------------------

# A process and all its descendants, one pid a line.
process_tree() {
  local pids=("$1") i=0 children=()
  while [[ $i -lt ${#pids[@]} ]]; do
    read -ra children <<<"$(cat /proc/"${pids[$i]}"/task/*/children 2>/dev/null | tr '\n' ' ')"
    pids+=("${children[@]}")
    i=$((i + 1))
  done
  printf '%s\n' "${pids[@]}"
}

# Proportional set size (kB) of the given pids together (a shared page counts once, split between
# the processes sharing it, so the sum over a process tree is what the tree costs).
pss_kb() {
  local total=0 pid kb
  for pid in "$@"; do
    kb="$(awk '/^Pss:/ { print $2 }' /proc/"$pid"/smaps_rollup 2>/dev/null || true)"
    total=$((total + ${kb:-0}))
  done
  printf '%s\n' "$total"
}

# Resident set size (kB) of one process.
rss_kb() {
  awk '/^VmRSS:/ { print $2 }' /proc/"$1"/status 2>/dev/null || printf '0\n'
}

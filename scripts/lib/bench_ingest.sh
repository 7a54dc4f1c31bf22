# shellcheck shell=bash
# scripts/bench ingest: the webhook edge under load, side by side in one run (sourced by scripts/bench).
#
# Against the local stack (scripts/dev up), at the same concurrency, one after the other:
#   1. ingest over the direct Postgres pool              (wrk, a release build of ingest)
#   2. ingest through PostgREST behind the gateway       (wrk)
#      each of 1 and 2 batched (the defaults: alerts that arrive together go to the database in one
#      ingest_signals call) beside the same binary making one call per alert
#      (INGEST_DB_MAX_BATCH=1, 16 calls at once), two rounds alternating the order, and the ratio
#   3. the same PostgREST RPC called directly by wrk     (what the edge adds on top of 2)
#   4. the database ceiling: pgbench calling the same public.ingest_signal
# then p50/p99 latency at a fixed 200 req/s on both ingest paths (oha, with latency correction; after
# a CHECKPOINT and VACUUM, so the saturation runs' dirty pages and dead rows are not paid for inside
# it; two rounds, alternating the paths, so an order effect shows as a difference between rounds)
# beside the same function called by pgbench at the same rate (the database's own floor),
# ingest's peak RSS after 64 connections, and an exact-count run per path (oha -n) whose stored rows
# must equal its 200 answers. Every body is unique, so the retry dedup never short-circuits a call.
# Installs wrk (Debian) and oha (crates.io) when missing. Loopback only; every run is bounded.

bench_ingest() {
  local seconds=${1:-10} conns=64 traders=64
  load_stack_env
  command -v wrk >/dev/null || { echo "== installing wrk (apt)"; DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null; }
  command -v oha >/dev/null || [[ -x "$HOME/.cargo/bin/oha" ]] || { echo "== installing oha (cargo install oha --locked)"; cargo install -q oha --locked; }
  local oha; oha=$(command -v oha || echo "$HOME/.cargo/bin/oha")
  echo "== building ingest (release)"
  cargo build --locked -q --release -p ingest
  work=$(mktemp -d)
  BENCH_PIDS=()
  # Every accepted bench alert queues a capture: the stack's capture daemon would render tens of
  # thousands of charts on the same two cores during the measurement (and its claims would contend
  # with the cleanup). Stop it for the run and start it again afterwards.
  BENCH_CAPTURE_STOPPED=0
  if bench_stack_capture status >/dev/null 2>&1; then
    echo "== stopping the stack's capture daemon for the run (started again afterwards)"
    bench_stack_capture stop >/dev/null
    BENCH_CAPTURE_STOPPED=1
  fi
  trap 'kill "${BENCH_PIDS[@]}" 2>/dev/null; cleanup_ingest_bench; rm -rf "$work"
        if [[ $BENCH_CAPTURE_STOPPED == 1 ]]; then bench_stack_capture start >/dev/null || echo "bench: could not start the capture daemon again: scripts/dev up" >&2; fi' EXIT

  psql_super <<SQL
insert into public.plans (id, name, monthly_signal_quota, capture_priority, rate_limit_per_minute, screenshot_retention_days)
values ('bench', 'Benchmark', 2000000000, 2, 2000000000, 1) on conflict (id) do nothing;
insert into auth.users (id, aud, role, email)
select ('00000000-0000-4000-9000-' || lpad(to_hex(n), 12, '0'))::uuid, 'authenticated', 'authenticated',
       'ingestbench' || n || '@bench.local'
  from generate_series(1, $traders) n
on conflict (id) do nothing;
update public.user_config set plan = 'bench'
 where user_id in (select id from auth.users where email like 'ingestbench%@bench.local');
SQL
  psql_super -At -c "select c.webhook_token from public.user_config c join auth.users u on u.id = c.user_id
                      where u.email like 'ingestbench%@bench.local' order by u.email" >"$work/tokens"
  psql_super <<'SQL'
create table if not exists private.bench_ingest_tokens (n int primary key, token text not null);
truncate private.bench_ingest_tokens;
insert into private.bench_ingest_tokens
select row_number() over (order by u.email), c.webhook_token
  from public.user_config c join auth.users u on u.id = c.user_id where u.email like 'ingestbench%@bench.local';
SQL

  local pool_port=28390 rest_port=28391 pool_single_port=28392 rest_single_port=28393
  start_ingest() { # port, database_url-or-empty, batch (1: one call per alert)
    if curl -s -o /dev/null "http://127.0.0.1:$1/"; then
      echo "bench: port $1 is taken (a leftover ingest?); stop it first" >&2; exit 1
    fi
    (
      export INGEST_LISTEN="127.0.0.1:$1" RUST_LOG=warn INGEST_DB_POOL_SIZE=24
      if [[ ${3:-} == 1 ]]; then export INGEST_DB_MAX_BATCH=1 INGEST_DB_CONCURRENCY=16; fi
      if [[ -n "$2" ]]; then export DATABASE_URL="$2"; else unset DATABASE_URL; fi
      exec "$CARGO_TARGET/release/ingest"
    ) >>"$work/ingest-$1.log" 2>&1 &
    BENCH_PIDS+=("$!")
    local i
    for i in $(seq 1 100); do
      curl -sf "http://127.0.0.1:$1/health/ready" >/dev/null && return 0
      sleep 0.1
    done
    echo "bench: ingest on port $1 did not become ready (see $work/ingest-$1.log)" >&2; exit 1
  }
  start_ingest "$pool_port" "$DATABASE_URL"
  local pool_pid=${BENCH_PIDS[-1]}
  start_ingest "$rest_port" ""
  local rest_pid=${BENCH_PIDS[-1]}
  start_ingest "$pool_single_port" "$DATABASE_URL" 1
  start_ingest "$rest_single_port" "" 1

  # wrk: a token from the list per request, a unique body, JSON named arguments for the direct RPC.
  cat >"$work/webhook.lua" <<'LUA'
local tokens, counter = {}, 0
for line in io.lines(os.getenv("BENCH_TOKENS")) do tokens[#tokens + 1] = line end
local thread_tag = tostring(math.random(1, 1e9))
request = function()
  counter = counter + 1
  local token = tokens[(counter % #tokens) + 1]
  local body = "BINANCE:BTCUSDT buy #" .. thread_tag .. "-" .. counter
  if os.getenv("BENCH_RPC") == "1" then
    local args = '{"p_token":"' .. token .. '","p_received_at":"' .. os.date("!%Y-%m-%dT%H:%M:%SZ") ..
      '","p_raw_message":"' .. body .. '","p_ticker":"BINANCE:BTCUSDT","p_exchange":"BINANCE",' ..
      '"p_symbol":"BTCUSDT","p_direction":"long"}'
    return wrk.format("POST", "/rest/v1/rpc/ingest_signal", {
      ["Content-Type"] = "application/json", ["apikey"] = os.getenv("BENCH_KEY"),
      ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY") }, args)
  end
  return wrk.format("POST", "/webhook/u/" .. token, { ["Content-Type"] = "text/plain" }, body)
end
LUA
  export BENCH_TOKENS="$work/tokens" BENCH_KEY="$SUPABASE_SERVICE_ROLE_KEY"
  run_wrk() { # label, url, 1 to call the RPC directly, name of the figure
    local out rps non2xx
    out=$(BENCH_RPC=$3 wrk -t2 -c"$conns" -d"${seconds}s" --latency -s "$work/webhook.lua" "$2" 2>&1)
    rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out")
    non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' <<<"$out")
    printf '  %-46s %8.0f req/s   p99 %8s   non-2xx %s\n' "$1" "$rps" \
      "$(awk '/ 99%/ {print $2}' <<<"$out")" "${non2xx:-0}"
    eval "rps_$4=$rps"
  }
  echo "== throughput, $conns connections, ${seconds}s each, $traders traders"
  # Batched and one call per alert, side by side: two rounds, the second in reverse order, so drift
  # on the machine (or the tables growing) does not always favour the same one; the medians' ratio.
  local -A rounds=()
  local run name port var rps_pool= rps_pool_single= rps_rest= rps_rest_single=
  for run in pool pool_single rest rest_single rest_single rest pool_single pool; do
    case $run in
      pool) name="ingest, direct pool, batched"; port=$pool_port ;;
      pool_single) name="ingest, direct pool, one call per alert"; port=$pool_single_port ;;
      rest) name="ingest, through PostgREST, batched"; port=$rest_port ;;
      rest_single) name="ingest, through PostgREST, one call per alert"; port=$rest_single_port ;;
    esac
    run_wrk "$name" "http://127.0.0.1:$port" 0 "$run"
    var=rps_$run
    rounds[$run]+=" ${!var}"
  done
  local pool_rss; pool_rss=$(awk '/VmHWM/ {print $2}' "/proc/$pool_pid/status")
  local rest_rss; rest_rss=$(awk '/VmHWM/ {print $2}' "/proc/$rest_pid/status")
  for run in pool pool_single rest rest_single; do
    printf -v "rps_$run" '%s' "$(tr ' ' '\n' <<<"${rounds[$run]}" | awk 'NF {s += $1; n++} END {print s / n}')"
  done
  awk -v p="$rps_pool" -v ps="$rps_pool_single" -v r="$rps_rest" -v rs="$rps_rest_single" 'BEGIN {
    printf "  batched / one call per alert (mean of 2 rounds): pool %.2fx (target >= 1.5x), PostgREST %.2fx (target >= 2x)\n",
      p / ps, r / rs }'
  run_wrk "PostgREST RPC called directly" "$SUPABASE_URL" 1 rpc
  cat >"$work/pgbench.sql" <<SQL
\\set n random(1, $traders)
select public.ingest_signal((select token from private.bench_ingest_tokens where n = :n), now(),
          'BINANCE:BTCUSDT buy ' || :client_id || ' ' || random(), null,
          'BINANCE:BTCUSDT', 'BINANCE', 'BTCUSDT', null, 'long');
SQL
  local pgb; pgb=$(pgbench -n -c "$conns" -j 2 -T "$seconds" -f "$work/pgbench.sql" "$DATABASE_URL" 2>&1) \
    || { echo "$pgb" >&2; exit 1; }
  local rps_pg; rps_pg=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$pgb")
  printf '  %-46s %8.0f calls/s\n' "pgbench ceiling (same function)" "$rps_pg"
  awk -v p="$rps_pool" -v r="$rps_rest" -v d="$rps_rpc" -v c="$rps_pg" 'BEGIN {
    printf "  pool / pgbench ceiling: %.0f%% (target >= 75%%); PostgREST path / direct RPC: %.0f%% (target >= 75%%)\n",
      100 * p / c, 100 * r / d }'
  awk -v c="$conns" -v p="$pool_rss" -v r="$rest_rss" 'BEGIN {
    printf "  ingest peak RSS after %d connections: pool %.1f MB, PostgREST %.1f MB (target < 30 MB)\n", c, p / 1024, r / 1024 }'

  echo "== latency at a fixed 200 req/s for ${seconds}s (oha, latency correction), 2 rounds"
  # The saturation runs above leave tens of thousands of new rows and dirty pages: settle them first,
  # or the first latency run measures a checkpoint and autovacuum rather than the edge.
  psql_super -c 'checkpoint' -c 'vacuum (analyze) public.signals, public.webhook_deliveries, private.capture_jobs'
  # Every trader's token in turn: one trader's alerts are decided one after another under a lock on
  # their config row, so a single token would measure that lock, not the edge.
  local token; token="($(paste -sd '|' "$work/tokens"))"
  local label
  for label in pool rest pool rest; do
    port=$pool_port; [[ $label == rest ]] && port=$rest_port
    "$oha" --no-tui --output-format json -q 200 -z "${seconds}s" -c 16 --latency-correction -m POST \
      -H 'Content-Type: text/plain' -d 'BINANCE:BTCUSDT buy' \
      --rand-regex-url "http://127.0.0.1:$port/webhook/u/$token\\?chart=[a-zA-Z0-9]{16}" >"$work/oha-$label.json"
    python3 - "$work/oha-$label.json" "$label" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
print(f"  {sys.argv[2]:<6} p50 {p['p50'] * 1000:6.2f} ms   p99 {p['p99'] * 1000:6.2f} ms   (target p99 < 5 ms)   answers {codes}")
PY
  done

  # The same function at the same fixed rate without any HTTP: the floor the two paths stand on (a
  # commit's WAL flush included). pgbench measures latency from each call's scheduled start, as oha's
  # latency correction does.
  (cd "$work" && pgbench -n -R 200 -c 16 -j 2 -T "$seconds" -l --log-prefix=pgbench-rate -f "$work/pgbench.sql" \
    "$DATABASE_URL" >"$work/rate-run.out" 2>&1) || { cat "$work/rate-run.out" >&2; exit 1; }
  python3 - "$work" <<'PY'
import glob, sys
t = sorted(int(line.split()[2]) for f in glob.glob(sys.argv[1] + "/pgbench-rate.*") for line in open(f))
q = lambda p: t[min(len(t) - 1, int(p * len(t)))] / 1000
print(f"  {'db':<6} p50 {q(0.50):6.2f} ms   p99 {q(0.99):6.2f} ms   (ingest_signal alone, pgbench -R 200, {len(t)} calls)")
PY

  echo "== exactness: 2000 alerts per path, 64 at a time; stored rows must equal the 200 answers"
  for label in pool rest; do
    port=$pool_port; [[ $label == rest ]] && port=$rest_port
    local before after ok
    before=$(psql_super -At -c "select count(*) from public.signals s join auth.users u on u.id = s.user_id where u.email like 'ingestbench%@bench.local'")
    "$oha" --no-tui --output-format json -n 2000 -c 64 -m POST -H 'Content-Type: text/plain' -d 'BINANCE:BTCUSDT sell' \
      --rand-regex-url "http://127.0.0.1:$port/webhook/u/$token\\?chart=[a-zA-Z0-9]{16}" >"$work/exact-$label.json"
    after=$(psql_super -At -c "select count(*) from public.signals s join auth.users u on u.id = s.user_id where u.email like 'ingestbench%@bench.local'")
    ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("statusCodeDistribution", {}).get("200", 0))' "$work/exact-$label.json")
    other=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print({k: v for k, v in d.get("statusCodeDistribution", {}).items() if k != "200"} or "none")' "$work/exact-$label.json")
    printf '  %-6s 200 answers %5d, new rows %5d: %s (other answers: %s)\n' "$label" "$ok" "$((after - before))" \
      "$([[ $ok -eq $((after - before)) ]] && echo 'exact' || echo 'MISMATCH')" "$other"
  done
}

# The stack's capture daemon (scripts/lib/capture.sh): bench_stack_capture status|stop|start.
bench_stack_capture() {
  (
    # scripts/bench has them already (through bench_soak.sh); common.sh must not be sourced twice.
    if ! declare -F capture_status >/dev/null; then
      # shellcheck source=scripts/lib/common.sh
      source scripts/lib/common.sh
      # shellcheck source=scripts/lib/stack.sh
      source scripts/lib/stack.sh
      # shellcheck source=scripts/lib/capture.sh
      source scripts/lib/capture.sh
    fi
    stack_config
    "capture_$1"
  )
}

cleanup_ingest_bench() {
  psql_super <<'SQL' || true
drop table if exists private.bench_ingest_tokens;
delete from auth.users where email like 'ingestbench%@bench.local';
delete from public.plans p where id = 'bench' and not exists (select from public.user_config c where c.plan = p.id);
SQL
}

# scripts/bench loads the stack's settings itself where it has no load_stack_env.
declare -F load_stack_env >/dev/null || load_stack_env() { :; }

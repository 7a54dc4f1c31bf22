# shellcheck shell=bash
# scripts/bench burst: a bar close (sourced by scripts/bench). Every trader's alerts at once, each on
# a new connection, from 127.0.0.2-127.0.0.5 (TradingView sends from four addresses, which
# INGEST_ALLOWED_SOURCES names), optionally with strangers' bad tokens mixed in, against a release
# build of ingest on each database path:
#
#   rest        through PostgREST (the gateway), no spool
#   spool       through PostgREST, with a spool (as scripts/dev up and the README's production
#               setup run it): what would wait past INGEST_DB_QUEUE_BUDGET is spooled and
#               answered 202
#   pool        over the direct Postgres pool (DATABASE_URL), no spool
#   pool-spool  over the pool, with a spool
#
# First the same burst to /health (the floor: connections and HTTP, no database). For each path,
# webhook-load burst's line. Of the traders' alerts: how many, 2xx within 3 s, spooled, 4xx, 5xx,
# no answer, p50/p99/max from the burst's start, p99 from each webhook's own connection (what
# TradingView's 3 s counts); of the strangers' webhooks: 404, 429, anything else; then seconds
# until every 2xx alert is stored, lost, stored twice, stored though not answered 2xx. Before each
# burst every trader sends one alert (32 at a time), so their tokens are known, as they are after
# any earlier alert. With BURST_BASE_INGEST set to another ingest binary (e.g. main's), each path
# runs with both binaries in one run, alternating which goes first, so the two can be read as a
# ratio. The stack's capture daemon is stopped for the run (every accepted alert queues a capture).
#
#   scripts/bench burst [traders=1000] [alerts-per-trader=3] [strangers=0]
#
# BURST_PATHS picks paths (default "rest spool pool pool-spool"); BURST_ROUNDS repeats them
# (default 1), alternating the order of this build and the base's; BURST_KEEP=1 keeps each ingest's
# log and its /metrics after the burst (the directory is printed at the end). For each spool path
# the end lists how many fsyncs the spool made and the histogram bucket its slowest fell in.

bench_burst() {
  local traders=${1:-1000} alerts=${2:-3} strangers=${3:-0}
  load_stack_env
  echo "== building ingest and webhook-load (release)"
  cargo build -q --release -p ingest -p webhook-load
  local load="$CARGO_TARGET/release/webhook-load" port=${BURST_INGEST_PORT:-$((GATEWAY_PORT + 5))}
  local base=${BURST_BASE_INGEST:-}
  if [[ -n "$base" && ! -x "$base" ]]; then
    echo "bench: BURST_BASE_INGEST=$base is not an executable" >&2; exit 1
  fi
  work=$(mktemp -d)
  BURST_PID=
  BENCH_CAPTURE_STOPPED=0
  if bench_stack_capture status >/dev/null 2>&1; then
    echo "== stopping the stack's capture daemon for the run (started again afterwards)"
    bench_stack_capture stop >/dev/null
    BENCH_CAPTURE_STOPPED=1
  fi
  trap 'if [[ -n $BURST_PID ]]; then kill "$BURST_PID" 2>/dev/null; fi; cleanup_burst_bench; if [[ ${BURST_KEEP:-0} == 1 ]]; then echo "bench: logs kept in $work" >&2; else rm -rf "$work"; fi
        if [[ $BENCH_CAPTURE_STOPPED == 1 ]]; then bench_stack_capture start >/dev/null || echo "bench: could not start the capture daemon again: scripts/dev up" >&2; fi' EXIT

  echo "== $traders traders on a plan without limits"
  psql_super <<SQL
insert into public.plans (id, name, monthly_signal_quota, capture_priority, rate_limit_per_minute, screenshot_retention_days)
values ('bench', 'Benchmark', 2000000000, 2, 2000000000, 1) on conflict (id) do nothing;
insert into auth.users (id, aud, role, email)
select ('00000000-0000-4000-a000-' || lpad(to_hex(n), 12, '0'))::uuid, 'authenticated', 'authenticated',
       'burstbench' || n || '@bench.local'
  from generate_series(1, $traders) n
on conflict (id) do nothing;
update public.user_config set plan = 'bench'
 where user_id in (select id from auth.users where email like 'burstbench%@bench.local');
SQL
  psql_super -At -c "select c.webhook_token from public.user_config c join auth.users u on u.id = c.user_id
                      where u.email like 'burstbench%@bench.local' order by u.email limit $traders" >"$work/tokens"

  burst_once() { # name, binary, path
    local name=$1 bin=$2 path=$3
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
      echo "bench: port $port is taken (a leftover ingest?); stop it first" >&2; exit 1
    fi
    (
      export INGEST_LISTEN="127.0.0.1:$port" RUST_LOG=warn
      export INGEST_ALLOWED_SOURCES=127.0.0.2/32,127.0.0.3/32,127.0.0.4/32,127.0.0.5/32
      if [[ $path == pool* ]]; then export DATABASE_URL; else unset DATABASE_URL; fi
      if [[ $path == *spool ]]; then export INGEST_SPOOL_DIR="$work/spool-$name"; else unset INGEST_SPOOL_DIR; fi
      exec "$bin"
    ) >>"$work/ingest-$name.log" 2>&1 &
    BURST_PID=$!
    local i
    for i in $(seq 1 100); do
      curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break
      ((i == 100)) && { echo "bench: $name did not become ready (see $work/ingest-$name.log)" >&2; cat "$work/ingest-$name.log" >&2; exit 1; }
      sleep 0.1
    done
    local label; label="b$(date +%s%N)-$name"
    "$load" burst --url "http://127.0.0.1:$port" --tokens "$work/tokens" --alerts 1 --in-flight 32 \
      --label "w${label#b}" --name warm-up >/dev/null
    sleep 1
    printf '%s  load average %s\n' "$name" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/loadavg"
    "$load" burst --url "http://127.0.0.1:$port" --tokens "$work/tokens" --alerts "$alerts" \
      --strangers "$strangers" --label "$label" --name "$name" $floor
    curl -s "http://127.0.0.1:$port/metrics" >"$work/metrics-$name" || true
    if [[ $path == *spool ]]; then
      # The spool's fsyncs in this run: how many, and the bucket the slowest fell in.
      awk -v name="$name" '
        /^ingest_spool_sync_duration_seconds_count\{op="append"\}/ { total = $2 }
        /^ingest_spool_sync_duration_seconds_bucket\{op="append",le="/ {
          le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le); n[++k] = le; c[k] = $2 }
        END { for (i = 1; i <= k; i++) if (c[i] == total) { slowest = n[i]; break }
              if (total) printf "  %s: %d spool fsyncs, the slowest under %s s\n", name, total, slowest }' \
        "$work/metrics-$name" >>"$work/fsyncs"
    fi
    kill "$BURST_PID"; wait "$BURST_PID" 2>/dev/null || true
    BURST_PID=
  }

  echo "== $traders traders x $alerts alerts at once, $strangers strangers' webhooks mixed in"
  echo "path                     alerts 2xx<=3s spooled   4xx   5xx  none     p50     p99     max p99-own s-404 s-429 s-etc  stored  lost  dup stored-non2xx"
  # The floor: the same burst to /health (405, no database), what connections and HTTP alone
  # cost on this machine right now.
  local floor=--floor
  burst_once floor "$CARGO_TARGET/release/ingest" rest
  floor=
  local path round=0 rounds=${BURST_ROUNDS:-1}
  for _ in $(seq 1 "$rounds"); do
    for path in ${BURST_PATHS:-rest spool pool pool-spool}; do
      if [[ -z "$base" ]]; then
        burst_once "$path" "$CARGO_TARGET/release/ingest" "$path"
      elif ((round++ % 2 == 0)); then
        burst_once "$path-this" "$CARGO_TARGET/release/ingest" "$path"
        burst_once "$path-base" "$base" "$path"
      else
        burst_once "$path-base" "$base" "$path"
        burst_once "$path-this" "$CARGO_TARGET/release/ingest" "$path"
      fi
    done
  done
  echo "== load average before each burst (1, 5, 15 min)"
  sed 's/^/  /' "$work/loadavg"
  if [[ -s $work/fsyncs ]]; then
    echo "== spool fsyncs during each spool path's run (ingest_spool_sync_duration_seconds)"
    cat "$work/fsyncs"
  fi
}

cleanup_burst_bench() {
  psql_super <<'SQL' || true
delete from auth.users where email like 'burstbench%@bench.local';
delete from public.plans p where id = 'bench' and not exists (select from public.user_config c where c.plan = p.id);
SQL
}

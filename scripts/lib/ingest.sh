# shellcheck shell=bash
# The webhook service in the local stack (sourced by scripts/dev after stack.sh): built from this
# checkout and run in the background against the gateway's PostgREST with the service-role key, the
# path a hosted Supabase project uses (DATABASE_URL is left out on purpose), with its spool in
# STACK_DIR/ingest-spool, so alerts sent while PostgREST or Postgres is down are answered 202 and
# stored when it is back. The dashboard's session endpoint is on: the stack's JWT secret verifies the
# demo user's access token, the stack's cookie-seal key seals, and DASHBOARD_ORIGIN is a local
# Next.js dev server's.
#
# Settings (environment): INGEST_PORT (default GATEWAY_PORT + 2), DASHBOARD_ORIGIN (default
# http://localhost:3000, where `next dev` serves).

ingest_config() {
  INGEST_PID="$RUN_DIR/ingest.pid"
  INGEST_LOG="$LOG_DIR/ingest.log"
  INGEST_PORT="${INGEST_PORT:-$((GATEWAY_PORT + 2))}"
  INGEST_URL="http://127.0.0.1:$INGEST_PORT"
  INGEST_BIN="$CARGO_TARGET/debug/ingest"
  INGEST_SPOOL="$STACK_DIR/ingest-spool"
  INGEST_DASHBOARD_ORIGIN="${DASHBOARD_ORIGIN:-http://localhost:3000}"
}

ingest_start() {
  ingest_config
  if pid_alive "$INGEST_PID"; then
    info "ingest: already running (pid $(cat "$INGEST_PID"))"
    return 0
  fi
  require_free_port "$INGEST_PORT" INGEST_PORT
  info "ingest: building (cargo build --locked -p ingest)"
  (cd "$REPO_ROOT" && cargo build --locked -q -p ingest) || die "cargo build -p ingest failed"
  info "ingest: starting on $INGEST_URL (through PostgREST)"
  (
    set -a
    # shellcheck disable=SC1090
    source "$STACK_ENV_FILE"
    set +a
    unset DATABASE_URL
    export INGEST_LISTEN="127.0.0.1:$INGEST_PORT"
    export INGEST_SPOOL_DIR="$INGEST_SPOOL"
    # The session endpoint (PUT/DELETE /v1/tradingview-session); SUPABASE_JWT_SECRET is in stack.env.
    COOKIE_SEAL_KEYS="$(secret cookie_seal_keys)"
    export COOKIE_SEAL_KEYS
    export DASHBOARD_ORIGIN="$INGEST_DASHBOARD_ORIGIN"
    nohup "$INGEST_BIN" >>"$INGEST_LOG" 2>&1 &
    echo $! >"$INGEST_PID"
  )
  wait_for_http "$INGEST_URL/health/ready" ingest "$INGEST_PID" "$INGEST_LOG"
}

ingest_stop() {
  ingest_config
  if pid_alive "$INGEST_PID"; then
    info "ingest: stopping"
    stop_pidfile "$INGEST_PID" ingest
  fi
}

ingest_status() {
  ingest_config
  if pid_alive "$INGEST_PID"; then
    info "ingest:    running ($INGEST_URL/health)"
  else
    info "ingest:    stopped"
    return 1
  fi
}

# Adds the service's address and the dashboard origin it allows to stack.env (after stack_write_env
# rewrote it).
ingest_write_env() {
  ingest_config
  grep -q '^INGEST_URL=' "$STACK_ENV_FILE" 2>/dev/null || cat >>"$STACK_ENV_FILE" <<ENV
INGEST_URL=$INGEST_URL
DASHBOARD_ORIGIN=$INGEST_DASHBOARD_ORIGIN
ENV
}

# A ready-to-paste request that posts a sample alert for the demo trader.
ingest_print_curl() {
  ingest_config
  cat <<EOF

Post a sample alert as TradingView would (the answer names the new signal):

  curl -sS -X POST '$INGEST_URL/webhook/u/$DEMO_WEBHOOK_TOKEN' \\
    -H 'Content-Type: text/plain' \\
    --data '{"ticker":"BINANCE:BTCUSDT","price":"68450.25","action":"buy","interval":"60","strategy":"Demo"}'

EOF
}

# How to try the dashboard's session endpoint: the README's snippet, with curl and with supabase-js.
ingest_print_session() {
  ingest_config
  local rel="${STACK_DIR#"$REPO_ROOT"/}"
  cat <<EOF
Store the demo trader's TradingView session as the dashboard does (README, "The trader's
TradingView session"); the answer is {"success":true,"cookies_valid":true}:

  set -a; . $rel/stack.env; set +a
  curl -sS -X PUT "\$INGEST_URL/v1/tradingview-session" \\
    -H "Authorization: Bearer \$DEMO_USER_ACCESS_TOKEN" -H 'Content-Type: application/json' \\
    --data '{"sessionid":"<sessionid cookie>","sessionid_sign":"<sessionid_sign cookie>"}'
  node tests/supabase-js/try-session.mjs     # the same with supabase-js, signed in as the demo trader
  curl -sS -X DELETE "\$INGEST_URL/v1/tradingview-session" -H "Authorization: Bearer \$DEMO_USER_ACCESS_TOKEN"

From a browser page the endpoint answers CORS for $INGEST_DASHBOARD_ORIGIN (DASHBOARD_ORIGIN=...
scripts/dev up for another). With a session stored, the demo trader's alerts render TradingView's
chart page with it (CAPTURE_CHART_URL_TEMPLATE), which needs the internet and real cookies; without
one they get the built-in history chart.

EOF
}

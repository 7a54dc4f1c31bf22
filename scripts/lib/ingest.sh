# shellcheck shell=bash
# The webhook service in the local stack (sourced by scripts/dev after stack.sh): built from this
# checkout and run in the background against the gateway's PostgREST with the service-role key, the
# path a hosted Supabase project uses (DATABASE_URL is left out on purpose), with its spool in
# STACK_DIR/ingest-spool, so alerts sent while PostgREST or Postgres is down are answered 202 and
# stored when it is back.
#
# Settings (environment): INGEST_PORT (default GATEWAY_PORT + 2).

ingest_config() {
  INGEST_PID="$RUN_DIR/ingest.pid"
  INGEST_LOG="$LOG_DIR/ingest.log"
  INGEST_PORT="${INGEST_PORT:-$((GATEWAY_PORT + 2))}"
  INGEST_URL="http://127.0.0.1:$INGEST_PORT"
  INGEST_BIN="$CARGO_TARGET/debug/ingest"
  INGEST_SPOOL="$STACK_DIR/ingest-spool"
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

# Adds the service's address to stack.env (after stack_write_env rewrote it).
ingest_write_env() {
  ingest_config
  grep -q '^INGEST_URL=' "$STACK_ENV_FILE" 2>/dev/null || printf 'INGEST_URL=%s\n' "$INGEST_URL" >>"$STACK_ENV_FILE"
}

# A ready-to-paste request that posts a sample alert for the demo trader.
ingest_print_curl() {
  ingest_config
  cat <<EOF

Post a sample alert as TradingView would (the answer names the new signal):

  curl -sS -X POST '$INGEST_URL/webhook/u/$DEMO_WEBHOOK_TOKEN' \\
    -H 'Content-Type: text/plain' \\
    --data '{"ticker":"BINANCE:BTCUSDT","price":"67890.5","action":"buy","interval":"60","strategy":"Demo"}'

EOF
}

# shellcheck shell=bash
# The capture daemon in the local stack (sourced by scripts/dev after stack.sh): built from this
# checkout, run in the background with the stack's settings, screenshots written under
# $SCREENSHOT_DIR (STORAGE=fs:...), the stack's cookie-seal key (the one ingest seals sessions with).
# Run as root, it starts Chromium as CAPTURE_CHROMIUM_USER (created if missing), which
# capture_write_env puts into stack.env for the tests too.
#
# Settings (environment): CAPTURE_HEALTH_PORT (default GATEWAY_PORT + 3), CAPTURE_CHROMIUM_USER
# (default signalcap-chromium, when run as root), CAPTURE_EGRESS_ALLOW (the host:port entries of
# local pages Chromium may reach; passed through when set).

capture_config() {
  CAPTURE_PID="$RUN_DIR/capture.pid"
  CAPTURE_LOG="$LOG_DIR/capture.log"
  SCREENSHOT_DIR="$STACK_DIR/screenshots"
  CAPTURE_HEALTH_PORT="${CAPTURE_HEALTH_PORT:-$((GATEWAY_PORT + 3))}"
  CAPTURE_HEALTH_URL="http://127.0.0.1:$CAPTURE_HEALTH_PORT"
  CAPTURE_BIN="$CARGO_TARGET/debug/capture"
}

capture_start() {
  capture_config
  if pid_alive "$CAPTURE_PID"; then
    info "capture: already running (pid $(cat "$CAPTURE_PID"))"
    return 0
  fi
  require_free_port "$CAPTURE_HEALTH_PORT" "capture health"
  info "capture: building (cargo build --locked -p capture)"
  (cd "$REPO_ROOT" && cargo build --locked -q -p capture) || die "cargo build -p capture failed"
  ensure_chromium_user
  mkdir -p "$SCREENSHOT_DIR"
  info "capture: starting ($CAPTURE_HEALTH_URL, screenshots in $SCREENSHOT_DIR)"
  (
    set -a
    # shellcheck disable=SC1090
    source "$STACK_ENV_FILE"
    set +a
    export STORAGE="fs:$SCREENSHOT_DIR"
    export CAPTURE_HEALTH_LISTEN="127.0.0.1:$CAPTURE_HEALTH_PORT"
    COOKIE_SEAL_KEYS="$(secret cookie_seal_keys)"
    export COOKIE_SEAL_KEYS
    nohup "$CAPTURE_BIN" >>"$CAPTURE_LOG" 2>&1 &
    echo $! >"$CAPTURE_PID"
  )
  wait_for_http "$CAPTURE_HEALTH_URL/health/live" capture "$CAPTURE_PID" "$CAPTURE_LOG"
}

capture_stop() {
  capture_config
  if pid_alive "$CAPTURE_PID"; then
    info "capture: stopping"
    stop_pidfile "$CAPTURE_PID" capture
  fi
}

capture_status() {
  capture_config
  if pid_alive "$CAPTURE_PID"; then
    info "capture:   running ($CAPTURE_HEALTH_URL/health)"
  else
    info "capture:   stopped"
    return 1
  fi
}

# Adds the daemon's settings to stack.env (after stack_write_env rewrote it): where its
# screenshots and /health are and, when run as root, the user its Chromium runs as (the capture
# tests start Chromium too).
capture_write_env() {
  capture_config
  grep -q '^SCREENSHOT_DIR=' "$STACK_ENV_FILE" 2>/dev/null || cat >>"$STACK_ENV_FILE" <<ENV
SCREENSHOT_DIR=$SCREENSHOT_DIR
CAPTURE_HEALTH_URL=$CAPTURE_HEALTH_URL
ENV
  if is_root && ! grep -q '^CAPTURE_CHROMIUM_USER=' "$STACK_ENV_FILE" 2>/dev/null; then
    ensure_chromium_user
    printf 'CAPTURE_CHROMIUM_USER=%s\n' "$(chromium_user)" >>"$STACK_ENV_FILE"
  fi
}

# One demo alert for the demo trader, followed to its screenshot: prints the PNG's path. Without a
# TradingView session (a fresh stack) it is the built-in history chart of the seed's BTCUSDT signals
# and must complete; with one stored (the session snippet was tried), the capture renders
# TradingView's page, which needs the internet and real cookies, so its outcome is only reported.
capture_demo_alert() {
  capture_config
  local signal status path reason session
  session="$(psql_as "$(database_url)" -At -v id="$DEMO_USER_ID" \
    <<<"select cookies_valid from public.user_config where user_id = :'id'")"
  signal="$(psql_as "$(database_url)" -At -v token="$DEMO_WEBHOOK_TOKEN" <<'SQL'
select public.ingest_signal(:'token', now(), 'demo alert ' || clock_timestamp(), null,
  'BINANCE:BTCUSDT', 'BINANCE', 'BTCUSDT', 68512.5, 'long', 'entry', '60', 'Demo indicator') ->> 'signal_id';
SQL
)"
  [[ -n "$signal" ]] || die "the demo alert was not accepted"
  for _ in $(seq 1 150); do
    IFS='|' read -r status path reason < <(psql_as "$(database_url)" -At -v id="$signal" \
      <<<"select screenshot_status, coalesce(screenshot_path, ''), coalesce(screenshot_error, '') from public.signals where id = :'id'")
    [[ "$status" == completed || "$status" == failed ]] && break
    sleep 0.2
  done
  if [[ "$session" == t ]]; then
    info "demo alert: signal $signal, rendered with the demo trader's stored TradingView session: $status${path:+ ($SCREENSHOT_DIR/$path)}${reason:+: $reason}"
    return 0
  fi
  [[ "$status" == completed ]] || die "the demo alert's screenshot ended as '$status', see $CAPTURE_LOG"
  info "demo alert: signal $signal, screenshot $SCREENSHOT_DIR/$path"
}

# shellcheck shell=bash
# The end-to-end test of the dashboard's TradingView session (tests/supabase-js/session.e2e.mjs), run
# by scripts/test on its test stack. Needs scripts/lib/common.sh, stack.sh, ingest.sh and capture.sh,
# and a stack that is up.
#
# ingest and the capture daemon start exactly as scripts/dev starts them (ingest_start,
# capture_start: the session endpoint with the stack's JWT secret and seal key, DASHBOARD_ORIGIN),
# so what is tested is what `scripts/dev up` configures. On top, only where the trader's chart is:
# a TradingView-shaped page the test serves on E2E_CHART_PORT (default GATEWAY_PORT + 4), with its
# readiness and sign-in checks given explicitly rather than left to the TradingView defaults, and
# that one address allowed through the capture daemon's egress filter. Then the README's session
# snippet (tests/supabase-js/try-session.mjs) runs as `scripts/dev up` prints it: PUT must answer
# 2xx with cookies_valid true, and DELETE leave it false. Both services are stopped afterwards, also
# on failure, so later steps start their own.

# The test needs the capture queue to itself: scripts/test's earlier steps leave thousands of
# signals of test traders open (sent through the gateway, never captured), and the daemon works the
# oldest first, so this test's alerts would wait behind them. On this throwaway stack they are
# marked skipped, with a reason, and taken off the queue (as chaos_clear_backlog does before chaos);
# prints how many.
e2e_clear_backlog() {
  psql_as "$(database_url)" -At <<'SQL'
with dropped as (delete from private.capture_jobs returning signal_id),
     skipped as (
       update public.signals s
          set screenshot_status = 'skipped',
              screenshot_error = 'not captured: left open by an earlier test step before the e2e test',
              updated_at = now()
         from dropped
        where s.id = dropped.signal_id and s.screenshot_status in ('pending', 'processing')
       returning 1)
select count(*) from skipped
SQL
}

# What the test's chart page does once its chart is drawn, and what its sign-in wall is.
readonly E2E_READY_CHECK="document.body.dataset.chart === 'drawn'"
readonly E2E_LOGIN_CHECK="!!document.getElementById('sign-in-wall')"

e2e_run() {
  (
    ingest_config
    capture_config
    E2E_CHART_PORT="${E2E_CHART_PORT:-$((GATEWAY_PORT + 4))}"
    require_free_port "$E2E_CHART_PORT" E2E_CHART_PORT
    export E2E_CHART_PORT
    export CAPTURE_CHART_URL_TEMPLATE="http://127.0.0.1:$E2E_CHART_PORT/chart/{chart_id}/?symbol={symbol}&interval={interval}"
    export CAPTURE_READY_CHECK="$E2E_READY_CHECK"
    export CAPTURE_LOGIN_CHECK="$E2E_LOGIN_CHECK"
    export CAPTURE_EGRESS_ALLOW="127.0.0.1:$E2E_CHART_PORT"
    export CAPTURE_POLL_INTERVAL=1s
    trap 'capture_stop >/dev/null; ingest_stop >/dev/null' EXIT
    ingest_write_env
    capture_write_env
    info "e2e: $(e2e_clear_backlog) open captures of earlier steps skipped"
    ingest_start
    capture_start
    set -a
    # shellcheck disable=SC1090
    source "$STACK_ENV_FILE"
    set +a
    cd "$REPO_ROOT" || die "cannot enter $REPO_ROOT"
    if ! node --test tests/supabase-js/session.e2e.mjs; then
      tail -n 30 "$CAPTURE_LOG" >&2 || true
      die "the end-to-end session test failed (above; logs: $INGEST_LOG, $CAPTURE_LOG)"
    fi
    node tests/supabase-js/try-session.mjs || die "the README's session snippet (PUT) failed (above)"
    node tests/supabase-js/try-session.mjs --delete || die "the README's session snippet (DELETE) failed (above)"
  )
}

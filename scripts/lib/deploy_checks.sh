# shellcheck shell=bash
# Checks of what deploy/ ships, run by scripts/test: the Prometheus alert rules and their unit
# tests, the systemd units, the Grafana dashboard and the nginx proxy configuration. Needs scripts/common.sh (and, for the
# metric names, stack.sh, ingest.sh, capture.sh and load.sh with a running test stack).

DEPLOY_DIR="$REPO_ROOT/deploy"
PROMETHEUS_DIR="$DEPLOY_DIR/prometheus"
DASHBOARD="$DEPLOY_DIR/grafana/signal-capture.json"

# promtool comes in Debian's `prometheus` package, whose installation would also start a Prometheus
# server; only promtool is taken out of the package (apt-get download, dpkg-deb -x) into a tools
# directory. One already on PATH is used as it is.
ensure_promtool() {
  if command -v promtool >/dev/null 2>&1; then
    PROMTOOL="$(command -v promtool)"
  else
    local tools="$REPO_ROOT/.dev/tools"
    PROMTOOL="$tools/promtool"
    if [[ ! -x "$PROMTOOL" ]]; then
      info "promtool: taking it out of Debian's prometheus package"
      local work
      work="$(mktemp -d)"
      chmod 755 "$work" # apt's download user writes here
      (cd "$work" && apt-get download prometheus >/dev/null 2>&1) \
        || { apt-get update -qq && (cd "$work" && apt-get download prometheus >/dev/null); } \
        || die "apt-get download prometheus failed"
      dpkg-deb -x "$work"/prometheus_*.deb "$work/root" || die "could not unpack the prometheus package"
      mkdir -p "$tools"
      install -m 0755 "$work/root/usr/bin/promtool" "$PROMTOOL"
      rm -rf "$work"
    fi
  fi
  info "promtool: $("$PROMTOOL" --version 2>&1 | head -n 1)"
}

# --- alert rules -------------------------------------------------------------------------------

# The alert names in a rule file, one a line.
alert_names() { sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' "$1"; }

# Prints the rule file with one alert's expression replaced (the key's indentation is kept; the
# lines of a block expression are dropped): mutate_rule FILE ALERT EXPR.
mutate_rule() {
  awk -v target="$2" -v replacement="$3" '
    /^ *- alert: / { current = $3; in_expr = 0 }
    in_expr {
      match($0, /^ */)
      if (RLENGTH > indent && $0 !~ /^ *$/) next
      in_expr = 0
    }
    current == target && /^ *expr:/ {
      match($0, /^ */)
      indent = RLENGTH
      print substr($0, 1, indent) "expr: " replacement
      in_expr = 1
      next
    }
    { print }
  ' "$1"
}

# Prints the test file keeping only one alert's expectations of one kind: `firing` (exp_alerts
# lists alerts) or `silent` (exp_alerts: []); groups left without expectations are dropped.
# Relies on the layout of alerts_test.yml (two-space groups, items under alert_rule_test).
filter_tests() {
  awk -v target="$2" -v kind="$3" '
    function end_item() {
      if (item != "" && item_alert == target && ((kind == "silent") == item_silent)) kept = kept item
      item = ""; item_alert = ""; item_silent = 0
    }
    function end_group() {
      end_item()
      if (kept != "") { printf "%s%s", head, kept; groups++ }
      head = ""; kept = ""; in_group = 0; in_items = 0
    }
    !started { print; if ($0 ~ /^tests:/) started = 1; next }
    /^  - name:/ { end_group(); in_group = 1; head = $0 "\n"; next }
    /^  [^ ]/ || /^  #/ { end_group(); next }
    in_group && /^    alert_rule_test:/ { in_items = 1; head = head $0 "\n"; next }
    in_items && /^      - eval_time:/ { end_item(); item = $0 "\n"; next }
    in_items {
      item = item $0 "\n"
      if ($0 ~ /^        alertname: /) item_alert = $2
      if ($0 ~ /^        exp_alerts: \[\]/) item_silent = 1
      next
    }
    in_group { head = head $0 "\n"; next }
    END { end_group(); if (groups == 0) exit 3 }
  ' "$1"
}

# promtool check config (which checks the rules too) and test, then for each rule: the tests where it must fire fail when it never fires,
# and the tests where it must stay silent fail when it always fires. So every rule has at least one
# case of each kind, and none of them passes whatever the rule says.
check_alert_rules() {
  local rules="$PROMETHEUS_DIR/alerts.yml" tests="$PROMETHEUS_DIR/alerts_test.yml"
  "$PROMTOOL" check config "$PROMETHEUS_DIR/prometheus.yml" || die "promtool check config failed (above)"
  "$PROMTOOL" test rules "$tests" || die "promtool test rules failed (above)"
  local work name kind expr count=0
  work="$(mktemp -d)"
  while read -r name; do
    for kind in firing silent; do
      if [[ $kind == firing ]]; then expr='vector(1) < 0'; else expr='vector(1)'; fi
      filter_tests "$tests" "$name" "$kind" >"$work/alerts_test.yml" \
        || die "alerts_test.yml has no case where $name is expected to be $kind"
      mutate_rule "$rules" "$name" "$expr" >"$work/alerts.yml"
      grep -q "expr: $expr\$" "$work/alerts.yml" || die "could not replace the expression of $name"
      if "$PROMTOOL" test rules "$work/alerts_test.yml" >"$work/out" 2>&1; then
        die "the $kind tests of $name pass with 'expr: $expr' too: they do not test the rule"
      fi
      count=$((count + 1))
    done
  done < <(alert_names "$rules")
  rm -rf "$work"
  info "$(alert_names "$rules" | wc -l) rules; each one's firing and silent cases fail against a rule that never / always fires ($count mutants)"
}

# --- systemd units -----------------------------------------------------------------------------

# systemd-analyze verify needs each ExecStart binary to exist, and the units they depend on
# (sysinit.target, ...). It runs against a root directory of its own: the host's unit directory,
# this project's units in etc/systemd/system, and the freshly built binaries at their ExecStart
# paths, so nothing is installed on the machine. It only warns (and exits 0) about unknown keys and
# bad values, so any output fails the check.
check_systemd_units() {
  local bin
  for bin in ingest capture; do
    [[ -x "$CARGO_TARGET/debug/$bin" ]] || die "no $CARGO_TARGET/debug/$bin to put at the units' ExecStart (the nextest step builds it)"
  done
  local root
  root="$(mktemp -d)"
  mkdir -p "$root/etc/systemd/system" "$root/usr/local/bin" "$root/usr/lib/systemd"
  cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
  cp "$DEPLOY_DIR"/systemd/*.service "$DEPLOY_DIR"/systemd/*.timer "$root/etc/systemd/system/"
  for bin in ingest capture; do
    ln "$CARGO_TARGET/debug/$bin" "$root/usr/local/bin/$bin" 2>/dev/null \
      || cp "$CARGO_TARGET/debug/$bin" "$root/usr/local/bin/$bin"
  done
  local -a units
  mapfile -t units < <(cd "$DEPLOY_DIR/systemd" && ls -- *.service *.timer)
  local out rc=0
  out="$(systemd-analyze verify --root="$root" "${units[@]}" 2>&1)" || rc=$?
  rm -rf "$root"
  if [[ $rc -ne 0 || -n "$out" ]]; then
    printf '%s\n' "$out" >&2
    die "systemd-analyze verify found problems in deploy/systemd (above)"
  fi
  info "systemd-analyze verify: ${units[*]}"
}

# --- the dashboard -----------------------------------------------------------------------------

# Well-formed JSON with what Grafana needs to import it: a uid and title, unique panel ids, each
# panel placed on the grid and, unless it is a row, with at least one Prometheus query through the
# dashboard's datasource variable. Prints every query, one a line.
dashboard_queries() {
  node - "$DASHBOARD" <<'EOF'
const fs = require('fs');
const file = process.argv[2];
let dash;
try {
  dash = JSON.parse(fs.readFileSync(file, 'utf8'));
} catch (e) {
  console.error(`${file}: not valid JSON: ${e.message}`);
  process.exit(1);
}
const problems = [];
if (!dash.uid || !dash.title) problems.push('no uid or title');
const variables = (dash.templating?.list ?? []).map((v) => v.name);
const ids = new Set();
const queries = [];
for (const panel of dash.panels ?? []) {
  const name = panel.title ?? `panel ${panel.id}`;
  if (ids.has(panel.id)) problems.push(`${name}: duplicate id ${panel.id}`);
  ids.add(panel.id);
  const g = panel.gridPos ?? {};
  if (![g.x, g.y, g.w, g.h].every(Number.isInteger) || g.x + g.w > 24) problems.push(`${name}: bad gridPos`);
  if (panel.type === 'row') continue;
  const uid = panel.datasource?.uid ?? '';
  if (!uid.startsWith('${') || !variables.includes(uid.slice(2, -1))) problems.push(`${name}: datasource is not a dashboard variable`);
  const targets = panel.targets ?? [];
  if (targets.length === 0) problems.push(`${name}: no query`);
  for (const t of targets) {
    if (typeof t.expr !== 'string' || t.expr.trim() === '') problems.push(`${name}: empty query`);
    else queries.push(t.expr);
  }
}
if (ids.size < 2) problems.push('no panels');
if (problems.length) {
  console.error(problems.map((p) => `${file}: ${p}`).join('\n'));
  process.exit(1);
}
for (const q of queries) console.log(q.replace(/\s+/g, ' '));
EOF
}

check_dashboard() {
  local queries
  queries="$(dashboard_queries)" || die "the Grafana dashboard is malformed (above)"
  info "dashboard: $(wc -l <<<"$queries") queries, JSON and layout well-formed"
}

# deploy/nginx/ingest.conf with the proxy settings it includes, as nginx reads them: the paths of
# the certificate and of the include are pointed at a throwaway self-signed pair and the checkout,
# and the port at a free local one (nginx -t binds nothing, but resolves every path).
check_nginx_config() {
  local work
  work="$(mktemp -d)"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" -days 1 \
    -subj /CN=nginx-check >/dev/null 2>&1 || die "openssl could not make a test certificate"
  sed -e "s#/etc/ssl/certs/webhooks.example.com.pem#$work/cert.pem#" \
    -e "s#/etc/ssl/private/webhooks.example.com.key#$work/key.pem#" \
    -e "s#/etc/nginx/ingest-proxy.conf#$DEPLOY_DIR/nginx/ingest-proxy.conf#" \
    "$DEPLOY_DIR/nginx/ingest.conf" >"$work/site.conf"
  printf 'pid %s/nginx.pid;\nerror_log %s/error.log;\nevents {}\nhttp {\n  include %s/site.conf;\n}\n' \
    "$work" "$work" "$work" >"$work/nginx.conf"
  local out rc=0
  out="$(nginx -t -q -p "$work/" -c "$work/nginx.conf" 2>&1)" || rc=$?
  rm -rf "$work"
  [[ $rc -eq 0 ]] || die "nginx rejects deploy/nginx/ingest.conf: $out"
  info "nginx: deploy/nginx/ingest.conf and ingest-proxy.conf pass nginx -t"
}

# --- metric names ------------------------------------------------------------------------------

# The expressions of the alert rules, one a line (block expressions joined).
rule_expressions() {
  awk '
    in_expr {
      match($0, /^ */)
      if (RLENGTH > indent && $0 !~ /^ *$/) { expr = expr " " $0; next }
      print expr; in_expr = 0
    }
    /^ *expr:/ {
      match($0, /^ */); indent = RLENGTH
      sub(/^ *expr: */, "")
      if ($0 ~ /^[|>]/) { in_expr = 1; expr = "" } else print
    }
    END { if (in_expr) print expr }
  ' "$PROMETHEUS_DIR/alerts.yml"
}

# This project's metric names in PromQL on stdin: identifiers that start with ingest_ or capture_,
# outside quoted strings (label values such as call="ingest_signal" are not metrics).
metric_names_in() {
  sed 's/"[^"]*"//g' | grep -oE '\b(ingest|capture)_[a-z0-9_]+' | sort -u
}

# Names a /metrics exposition defines (from its # TYPE lines; a histogram's series too).
exported_names() {
  awk '$1 == "#" && $2 == "TYPE" {
         print $3
         if ($4 == "histogram") { print $3 "_bucket"; print $3 "_count"; print $3 "_sum" }
       }' | sort -u
}

# Every metric the rules and the dashboard name is one that ingest or capture really exports
# (scraped from the binaries after they have done each thing once).
check_metric_names() {
  local work scraped
  work="$(mktemp -d)"
  scraped="$work/exported"
  load_start_services
  # One webhook through ingest, followed to its screenshot: the labelled series exist once used.
  local body signal status token
  token="$(psql_as "$(database_url)" -At -v email="$DEMO_USER_EMAIL" <<<"
    select c.webhook_token from public.user_config c join auth.users u on u.id = c.user_id
     where u.email = :'email'")"
  body="$(curl -s --max-time 5 -X POST -H 'Content-Type: text/plain' \
    --data '{"ticker":"BINANCE:BTCUSDT","price":"1","action":"buy","interval":"60","strategy":"metric names"}' \
    "$INGEST_URL/webhook/u/$token")"
  signal="$(grep -o '"signal_id":"[0-9a-f-]*"' <<<"$body" | cut -d'"' -f4)" \
    || die "ingest did not store the webhook: $body"
  for _ in $(seq 1 100); do
    status="$(psql_as "$(database_url)" -At -v id="$signal" <<<"select screenshot_status from public.signals where id = :'id'")"
    [[ "$status" == completed || "$status" == failed ]] && break
    sleep 0.3
  done
  curl -s --max-time 5 "$INGEST_URL/health" >/dev/null
  curl -s --max-time 5 "$INGEST_URL/metrics" >"$work/ingest.prom"
  curl -s --max-time 5 "$CAPTURE_HEALTH_URL/metrics" >"$work/capture.prom"
  # And an ingest whose database path is down, with a spool: the failure and spool series. (Both
  # ingests run with a spool: ingest_spool_sync_duration_seconds is exported only then, with a
  # series per op at 0 from the start; this one's spooled webhook is one append sync.)
  local port=$((GATEWAY_PORT + 7)) pid
  require_free_port "$port" "ingest without a database"
  mkdir -p "$work/spool"
  INGEST_LISTEN="127.0.0.1:$port" SUPABASE_URL="http://127.0.0.1:9" SUPABASE_SERVICE_ROLE_KEY=unused \
    INGEST_SPOOL_DIR="$work/spool" DATABASE_URL='' RUST_LOG=error \
    "$CARGO_TARGET/debug/ingest" >"$work/ingest-down.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$port/health/live" && break; sleep 0.2; done
  curl -s -o /dev/null --max-time 5 -X POST --data 'BINANCE:BTCUSDT buy' \
    "http://127.0.0.1:$port/webhook/u/$token"
  curl -s --max-time 5 "http://127.0.0.1:$port/metrics" >"$work/ingest-down.prom"
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  cat "$work"/*.prom | exported_names >"$scraped"

  local used missing
  used="$( { rule_expressions; dashboard_queries; } | metric_names_in)"
  missing="$(comm -23 <(printf '%s\n' "$used") <(sort -u "$scraped"))"
  rm -rf "$work"
  [[ -z "$missing" ]] || die "the alert rules or the dashboard use metrics no binary exports: $(tr '\n' ' ' <<<"$missing")"
  info "$(wc -l <<<"$used") metric names in the rules and the dashboard, all exported"
}

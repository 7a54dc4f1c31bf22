# shellcheck shell=bash
# The RustSec advisory check of Cargo.lock (cargo-deny), offline. No machine here can download the
# advisory database, so it is read from a plain copy of its files (ADVISORY_DB_SOURCE, default
# shared/advisory-db next to the main checkout; its SNAPSHOT file says which commit it is).
# cargo-deny wants a git repository at a path it derives from the database's URL and reads the
# HEAD commit's date, so each run makes a throwaway one from the copy, dated as the snapshot.
# The policy (which advisories fail the check) is deny.toml's; nothing is ignored.
# Source it after common.sh.

# The plain copy: ADVISORY_DB_SOURCE, else shared/advisory-db beside the main checkout (a
# worktree's common git directory is the main checkout's .git), else beside the checkout this one
# was cloned from when that is a local directory (a clean clone made for CI, `git clone . /tmp/x`).
advisory_db_source() {
  if [[ -n "${ADVISORY_DB_SOURCE:-}" ]]; then
    printf '%s\n' "$ADVISORY_DB_SOURCE"
    return
  fi
  local common candidate origin
  common="$(git -C "$REPO_ROOT" rev-parse --path-format=absolute --git-common-dir)"
  candidate="$(dirname "$(dirname "$common")")/shared/advisory-db"
  origin="$(git -C "$REPO_ROOT" config --get remote.origin.url || true)"
  if [[ ! -d "$candidate" && -n "$origin" && -d "$origin" ]]; then
    common="$(git -C "$origin" rev-parse --path-format=absolute --git-common-dir)"
    candidate="$(dirname "$(dirname "$common")")/shared/advisory-db"
  fi
  printf '%s\n' "$candidate"
}

# Makes the throwaway repository under $1 (a directory of its own) and writes there the config
# cargo-deny runs with: deny.toml plus db-path pointing at it. Prints that config's path.
advisory_db_prepare() {
  local work="$1" source snapshot_date
  source="$(advisory_db_source)"
  [[ -f "$source/SNAPSHOT" && -d "$source/crates" ]] \
    || die "no advisory database copy at $source (set ADVISORY_DB_SOURCE to a copy of rustsec/advisory-db)"
  snapshot_date="$(grep -oE '\([0-9]{4}-[0-9]{2}-[0-9]{2}\)' "$source/SNAPSHOT" | head -n 1 | tr -d '()')"
  [[ -n "$snapshot_date" ]] || die "$source/SNAPSHOT names no date (YYYY-MM-DD)"
  # The directory name cargo-deny derives from https://github.com/rustsec/advisory-db.
  local db="$work/db/advisory-db-3157b0e258782691"
  mkdir -p "$db"
  cp -R "$source/." "$db/"
  (
    cd "$db"
    export GIT_AUTHOR_DATE="${snapshot_date}T00:00:00Z" GIT_COMMITTER_DATE="${snapshot_date}T00:00:00Z"
    git init -q
    git add -A
    git -c user.name=advisory-snapshot -c user.email=advisory-snapshot@localhost \
      commit -q -m "snapshot of $(head -n 1 SNAPSHOT)"
  ) || die "could not make a git repository of the advisory database copy"
  # deny.toml's [advisories] table with the database's place added to it.
  awk -v path="$work/db" '{ print } /^\[advisories\]$/ { printf "db-path = \"%s\"\n", path }' \
    "$REPO_ROOT/deny.toml" >"$work/deny.toml"
  grep -q '^db-path = ' "$work/deny.toml" || die "deny.toml has no [advisories] table"
  printf '%s\n' "$work/deny.toml"
}

# cargo deny check advisories of the lock file next to manifest $2 with config $1, offline
# (after cargo fetch, so every crate in the lock is there to read).
advisory_check_manifest() {
  local config="$1" manifest="$2"
  cargo fetch --locked --manifest-path "$manifest" >/dev/null \
    || die "cargo fetch --locked failed for $manifest"
  cargo deny --offline --locked --manifest-path "$manifest" --config "$config" check advisories
}

# The check itself, then proof that it can fail: the fixture's lock pins smallvec 1.6.0
# (RUSTSEC-2021-0003) and must be refused.
advisory_check() {
  command -v cargo-deny >/dev/null 2>&1 || [[ -x "$HOME/.cargo/bin/cargo-deny" ]] || {
    info "installing cargo-deny"
    cargo install cargo-deny --locked || die "cargo install cargo-deny failed"
  }
  local work config
  work="$(mktemp -d)"
  config="$(advisory_db_prepare "$work")"
  info "advisory database: $(head -n 1 "$(advisory_db_source)/SNAPSHOT")"
  local status=0
  advisory_check_manifest "$config" "$REPO_ROOT/Cargo.toml" || status=$?
  local fixture="$REPO_ROOT/scripts/lib/advisory-fixture/Cargo.toml" out
  if out="$(advisory_check_manifest "$config" "$fixture" 2>&1)"; then
    printf '%s\n' "$out" >&2
    rm -rf "$work"
    die "the advisory check passed a lock file pinning smallvec 1.6.0 (RUSTSEC-2021-0003): it checks nothing"
  fi
  grep -q 'RUSTSEC-2021-0003' <<<"$out" || {
    printf '%s\n' "$out" >&2
    rm -rf "$work"
    die "the advisory check failed on the fixture, but not for RUSTSEC-2021-0003 (above)"
  }
  info "the fixture pinning smallvec 1.6.0 is refused (RUSTSEC-2021-0003), as it must be"
  rm -rf "$work"
  [[ $status -eq 0 ]] || die "cargo deny found advisories affecting Cargo.lock (above)"
}

# shellcheck shell=bash
# Builds the container images (deploy/Containerfile) with podman and smoke-tests them against a
# running local stack. Sourced by scripts/images after common.sh, install.sh and stack.sh.
#
# How podman runs on these machines (no registry, a VM whose cgroups crun cannot use; see
# README "Deploying"): runc, the vfs storage driver, the cgroupfs manager, no default ulimits, and a
# storage root of its own, so that whatever a developer keeps in podman's default storage (perhaps
# with another driver) is neither read nor touched. The Debian base image is made locally from
# Debian's packages with mmdebstrap and tagged with the name the Containerfile uses; every build
# runs with --pull=never. The Rust toolchain cannot be downloaded inside a build, so the binaries
# are compiled on the host (Debian 12, the runtime image's glibc) and copied in through the
# Containerfile's `prebuilt` stage (BINARIES=prebuilt); the `source` stage users build with is
# the same cargo command in the official Rust image.
#
# Settings (environment):
#   IMAGES_STORAGE_ROOT    podman's storage for these images (/var/lib/signal-capture/containers)
#   IMAGES_STORAGE_DRIVER  vfs (overlay is faster where the kernel and podman allow it)
#   IMAGES_TAG             tag of both images (dev): localhost/signal-capture/{ingest,capture}:TAG
#   IMAGES_INGEST_PORT, IMAGES_CAPTURE_PORT   the containers' listeners on 127.0.0.1 during the
#                          smoke test (GATEWAY_PORT + 5 and + 6)

# Packages podman needs here (Debian 12: podman 4.3), and mmdebstrap for the base image.
IMAGES_APT_PACKAGES=(podman runc mmdebstrap)

# The base image the Containerfile names; made locally when missing.
readonly IMAGES_BASE=docker.io/library/debian:bookworm-slim

images_config() {
  IMAGES_STORAGE_ROOT="${IMAGES_STORAGE_ROOT:-/var/lib/signal-capture/containers}"
  IMAGES_STORAGE_DRIVER="${IMAGES_STORAGE_DRIVER:-vfs}"
  IMAGES_TAG="${IMAGES_TAG:-dev}"
  INGEST_IMAGE="localhost/signal-capture/ingest:$IMAGES_TAG"
  CAPTURE_IMAGE="localhost/signal-capture/capture:$IMAGES_TAG"
  IMAGES_WORK="$STACK_DIR/images"
  IMAGES_INGEST_PORT="${IMAGES_INGEST_PORT:-$((GATEWAY_PORT + 5))}"
  IMAGES_CAPTURE_PORT="${IMAGES_CAPTURE_PORT:-$((GATEWAY_PORT + 6))}"
  # One name per stack, so two checkouts' smoke tests never stop each other's containers.
  IMAGES_RUN_PREFIX="signal-capture-smoke-$GATEWAY_PORT"
}

images_install() {
  local -a missing
  mapfile -t missing < <(apt_missing_packages "${IMAGES_APT_PACKAGES[@]}")
  if [[ ${#missing[@]} -eq 0 ]]; then
    info "podman, runc, mmdebstrap: present ($(podman --version))"
    return 0
  fi
  info "Debian packages to install: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install failed for: ${missing[*]}"
}

# podman with this project's engine settings and storage. A function, not an alias, so that every
# call (including from traps) gets the same flags.
pm() {
  CONTAINERS_CONF="$IMAGES_WORK/containers.conf" podman \
    --root "$IMAGES_STORAGE_ROOT" --runroot "/run/signal-capture-containers" \
    --storage-driver "$IMAGES_STORAGE_DRIVER" --runtime runc --cgroup-manager cgroupfs "$@"
}

images_prepare() {
  is_root || die "scripts/images runs podman as root (rootless podman needs subuid ranges this script does not set up)"
  mkdir -p "$IMAGES_WORK" "$IMAGES_STORAGE_ROOT"
  # Without default_ulimits = [] a run fails with "setrlimit RLIMIT_NOFILE: Operation not permitted".
  cat >"$IMAGES_WORK/containers.conf" <<'EOF'
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
EOF
}

# The Debian base under the name the Containerfile uses, from the host's own Debian sources, with
# the documentation left out as in the official slim image.
images_base() {
  if pm image exists "$IMAGES_BASE"; then
    info "base image: $IMAGES_BASE present"
    return 0
  fi
  info "base image: making $IMAGES_BASE with mmdebstrap (Debian's packages)"
  local tarball="$IMAGES_WORK/bookworm.tar"
  local -a sources=()
  [[ -f /etc/apt/sources.list.d/debian.sources ]] && sources=(/etc/apt/sources.list.d/debian.sources)
  mmdebstrap --variant=minbase --mode=root --quiet \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$tarball" "${sources[@]}" >"$IMAGES_WORK/mmdebstrap.log" 2>&1 \
    || { tail -n 20 "$IMAGES_WORK/mmdebstrap.log" >&2; die "mmdebstrap failed (log: $IMAGES_WORK/mmdebstrap.log)"; }
  pm import --quiet "$tarball" "$IMAGES_BASE" >/dev/null || die "podman import of the base image failed"
  rm -f "$tarball"
}

# Release binaries built on the host, or taken from a directory (scripts/images --binaries DIR).
images_binaries() {
  local from="${1:-}"
  if [[ -z "$from" ]]; then
    info "cargo build --release -p ingest -p capture"
    (cd "$REPO_ROOT" && cargo build --release --locked -q -p ingest -p capture) \
      || die "cargo build --release failed"
    from="$CARGO_TARGET/release"
  else
    info "binaries from $from (not built)"
  fi
  local context="$IMAGES_WORK/context"
  rm -rf "$context"
  mkdir -p "$context/prebuilt" "$context/deploy"
  cp "$from/ingest" "$from/capture" "$context/prebuilt/" || die "no ingest and capture binaries in $from"
  cp -r "$REPO_ROOT/deploy/image" "$context/deploy/"
}

images_build() {
  local target image
  for target in ingest capture; do
    image="localhost/signal-capture/$target:$IMAGES_TAG"
    info "podman build --target $target -> $image"
    # --format docker keeps HEALTHCHECK (the OCI format has no such field).
    pm build --quiet --pull=never --network host --isolation chroot --format docker \
      --build-arg BINARIES=prebuilt --target "$target" -t "$image" \
      -f "$REPO_ROOT/deploy/Containerfile" "$IMAGES_WORK/context" >"$IMAGES_WORK/build-$target.log" 2>&1 \
      || { tail -n 30 "$IMAGES_WORK/build-$target.log" >&2; die "podman build of $target failed (log: $IMAGES_WORK/build-$target.log)"; }
    info "  $(pm image inspect --format '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }'), user $(pm image inspect --format '{{.Config.User}}' "$image")"
  done
  # The images these replaced: with vfs, every one is a full copy on disk.
  pm image prune --force >/dev/null
}

# --- the smoke test ------------------------------------------------------------------------------

images_stop_containers() {
  local name
  for name in "$IMAGES_RUN_PREFIX-ingest" "$IMAGES_RUN_PREFIX-capture"; do
    pm rm --force --ignore --time 10 "$name" >/dev/null 2>&1 || true
  done
}

# Waits until the container's own HEALTHCHECK passes (podman runs it on request here: without
# systemd there is no timer), or fails with the container's log.
images_wait_healthy() {
  local name="$1"
  for _ in $(seq 1 60); do
    if pm healthcheck run "$name" >/dev/null 2>&1; then
      return 0
    fi
    if [[ "$(pm inspect --format '{{.State.Running}}' "$name" 2>/dev/null)" != true ]]; then
      pm logs "$name" 2>&1 | tail -n 30 >&2
      die "container $name exited: $(pm inspect --format 'status {{.State.Status}}, exit code {{.State.ExitCode}}' "$name" 2>/dev/null)"
    fi
    sleep 0.5
  done
  pm logs "$name" 2>&1 | tail -n 30 >&2
  die "container $name did not pass its HEALTHCHECK within 30 s"
}

# podman run logs errors about healthcheck timers it cannot create without systemd (the smoke
# test runs the checks itself) to podman.log; a run that failed shows what it said.
images_podman_failed() {
  tail -n 20 "$IMAGES_WORK/podman.log" >&2
  die "podman run $1 failed (above)"
}

# A secret as a file, the way README "Deploying" tells an operator to make one (root's, mode 0640,
# the images' group 10000), mounted at /run/secrets/NAME. Prints the -v argument.
images_secret() {
  local name="$1" value="$2"
  local file="$IMAGES_WORK/secrets/$name"
  mkdir -p "$IMAGES_WORK/secrets"
  (umask 077 && printf '%s\n' "$value" >"$file")
  chown root:10000 "$file"
  chmod 0640 "$file"
  printf '%s:/run/secrets/%s:ro' "$file" "$name"
}

# ingest: its HEALTHCHECK passes, /health/live answers from the host, and a webhook through
# PostgREST is stored (secret from a file, spool on a volume owned by the image's user).
images_smoke_ingest() {
  local name="$IMAGES_RUN_PREFIX-ingest" url="http://127.0.0.1:$IMAGES_INGEST_PORT"
  local spool="$IMAGES_WORK/ingest-spool"
  rm -rf "$spool"
  install -d -o 10001 -g 10000 -m 0700 "$spool"
  pm run --detach --name "$name" --network host --health-interval disable \
    -e INGEST_LISTEN="127.0.0.1:$IMAGES_INGEST_PORT" -e SUPABASE_URL="$SUPABASE_URL" \
    -e SUPABASE_SERVICE_ROLE_KEY_FILE=/run/secrets/supabase_service_role_key \
    -v "$(images_secret supabase_service_role_key "$(secret service_role_key)")" \
    -v "$spool:/var/lib/ingest/spool" \
    "$INGEST_IMAGE" >/dev/null 2>>"$IMAGES_WORK/podman.log" || images_podman_failed "$INGEST_IMAGE"
  images_wait_healthy "$name"
  local code body
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url/health/live" || true)"
  [[ "$code" == 200 ]] || die "ingest in its container: GET /health/live answered $code"
  body="$(curl -s --max-time 5 -X POST -H 'Content-Type: text/plain' \
    --data "{\"ticker\":\"BINANCE:BTCUSDT\",\"price\":\"67890.5\",\"action\":\"buy\",\"interval\":\"60\",\"strategy\":\"image smoke $(date +%s%N)\"}" \
    "$url/webhook/u/$DEMO_WEBHOOK_TOKEN" || true)"
  IMAGES_SIGNAL_ID="$(grep -o '"signal_id":"[0-9a-f-]*"' <<<"$body" | cut -d'"' -f4 || true)"
  [[ -n "$IMAGES_SIGNAL_ID" ]] || die "ingest in its container did not store a webhook: $body"
  info "ingest: healthy; GET /health/live 200; webhook stored as signal $IMAGES_SIGNAL_ID"
}

# capture: its HEALTHCHECK passes, it connects to the database (secrets from files) and renders the
# signal ingest stored into its fs storage, a volume owned by the image's user.
images_smoke_capture() {
  local name="$IMAGES_RUN_PREFIX-capture" shots="$IMAGES_WORK/screenshots"
  # The stack's URL checks its certificate against the stack's CA (verify-full): the container
  # gets that file, and the URL names it where it is mounted.
  local url
  url="$(database_url)"
  url="${url/sslrootcert=$STACK_CA_CERT/sslrootcert=/run/secrets/stack_ca.crt}"
  rm -rf "$shots"
  install -d -o 10002 -g 10000 -m 0700 "$shots"
  pm run --detach --name "$name" --network host --health-interval disable \
    -e CAPTURE_HEALTH_LISTEN="127.0.0.1:$IMAGES_CAPTURE_PORT" \
    -e STORAGE=fs:/var/lib/capture/screenshots \
    -e CAPTURE_CHART_URL_TEMPLATE='http://127.0.0.1:9/chart/{chart_id}' \
    -e DATABASE_URL_FILE=/run/secrets/database_url -e COOKIE_SEAL_KEYS_FILE=/run/secrets/cookie_seal_keys \
    -v "$(images_secret database_url "$url")" -v "$STACK_CA_CERT:/run/secrets/stack_ca.crt:ro" \
    -v "$(images_secret cookie_seal_keys "smoke1:$(openssl rand -base64 32)")" \
    -v "$shots:/var/lib/capture/screenshots" \
    "$CAPTURE_IMAGE" >/dev/null 2>>"$IMAGES_WORK/podman.log" || images_podman_failed "$CAPTURE_IMAGE"
  images_wait_healthy "$name"
  local status="" path=""
  for _ in $(seq 1 120); do
    IFS='|' read -r status path < <(psql_as "$(database_url)" -At -v id="$IMAGES_SIGNAL_ID" \
      <<<"select screenshot_status, coalesce(screenshot_path, '') from public.signals where id = :'id'")
    [[ "$status" == completed || "$status" == failed ]] && break
    sleep 0.5
  done
  if [[ "$status" != completed ]]; then
    pm logs "$name" 2>&1 | tail -n 30 >&2
    die "capture in its container: the signal's screenshot is '$status', not completed"
  fi
  local png="$shots/$path"
  [[ -s "$png" ]] || die "capture reported $path, but $png is missing or empty"
  [[ "$(head -c 8 "$png" | od -An -tx1 | tr -d ' \n')" == 89504e470d0a1a0a ]] \
    || die "$png is not a PNG"
  info "capture: healthy; rendered signal $IMAGES_SIGNAL_ID into $path ($(stat -c %s "$png") bytes) as uid $(stat -c %u "$png")"
}

# Chromium in the capture image starts with its sandbox on (no --no-sandbox) as the image's user,
# under podman's default seccomp profile: what capture needs once it stops passing --no-sandbox.
images_smoke_sandbox() {
  local out
  out="$(pm run --rm --network none --entrypoint /usr/bin/chromium "$CAPTURE_IMAGE" \
    --headless --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --disable-quic --disable-dev-shm-usage \
    --dump-dom 'data:text/html,<p id=sandbox>sandboxed</p>' 2>"$IMAGES_WORK/sandbox.log")" || true
  if ! grep -q '<p id="sandbox">sandboxed</p>' <<<"$out"; then
    tail -n 20 "$IMAGES_WORK/sandbox.log" >&2
    die "Chromium in $CAPTURE_IMAGE did not render with its sandbox on (log above)"
  fi
  info "chromium: renders with its sandbox on, as uid $(pm image inspect --format '{{.Config.User}}' "$CAPTURE_IMAGE")"
}

images_smoke() {
  images_stop_containers
  images_smoke_ingest
  images_smoke_capture
  images_smoke_sandbox
  images_stop_containers
}

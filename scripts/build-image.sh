#!/usr/bin/env bash
# build-image.sh - build the gateway's image without a Docker engine, then run it to check it.
#
# The base is Debian bookworm made here with debootstrap (no image pulled from a registry),
# imported into buildah's storage; the Dockerfile is built on it with buildah (daemonless); the
# image is then run with `buildah run`: `hpcgw db upgrade` migrates a fresh SQLite and
# `hpcgw serve --workers 2` answers /healthz and /readyz. See docs/operations.md.
#
# Usage (as root): scripts/build-image.sh [base|build|check|all]      (default: all)
#   IMAGE       the image's name                      (default localhost/hpcgw:latest)
#   BASE_IMAGE  the base's name                       (default localhost/hpcgw-base:bookworm)
#   CACHE       where the debootstrap tree is kept    (default /var/cache/hpcgw-image)
#   MIRROR      the Debian mirror                     (default http://deb.debian.org/debian)
#   BUILD_CA    the authorities pip trusts in the builder stage, e.g. behind an intercepting
#               proxy; a build secret, in no layer  (default /etc/ssl/certs/ca-certificates.crt)
#   PORT        the port `check` serves on            (default 18000)
# Inside a container (no user namespaces, no cgroups of its own) buildah works as root with
# the vfs storage driver and chroot isolation: set BUILDAH_STORAGE=overlay, BUILDAH_ISOLATION=oci
# on a normal host to use the faster ones.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${IMAGE:-localhost/hpcgw:latest}
BASE_IMAGE=${BASE_IMAGE:-localhost/hpcgw-base:bookworm}
CACHE=${CACHE:-/var/cache/hpcgw-image}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
BUILD_CA=${BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
PORT=${PORT:-18000}
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
BUILDAH=(buildah --storage-driver "${BUILDAH_STORAGE:-vfs}")

log() { printf '[build-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, and buildah without user namespaces)"
for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || die "$tool is missing: apt-get install -y buildah debootstrap"
done

has_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

do_base() {
  if has_image "$BASE_IMAGE"; then log "base $BASE_IMAGE is there"; return; fi
  local tree=$CACHE/rootfs
  if [[ ! -x $tree/usr/bin/apt-get ]]; then
    log "debootstrap --variant=minbase bookworm into $tree"
    rm -rf "$tree"
    mkdir -p "$CACHE"
    debootstrap --variant=minbase bookworm "$tree" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log"; die "debootstrap failed"; }
  fi
  rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
  log "importing $tree as $BASE_IMAGE"
  tar -C "$tree" --numeric-owner -cf "$CACHE/rootfs.tar" .
  local ctr
  ctr=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" add "$ctr" "$CACHE/rootfs.tar" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd /bin/bash "$ctr"
  "${BUILDAH[@]}" commit --rm "$ctr" "$BASE_IMAGE" >/dev/null
  rm -f "$CACHE/rootfs.tar"
}

do_build() {
  has_image "$BASE_IMAGE" || do_base
  local secret=()
  [[ -s $BUILD_CA ]] && secret=(--secret "id=build_ca,src=$BUILD_CA")
  log "buildah bud $IMAGE on $BASE_IMAGE"
  # docker format: OCI image configs have no HEALTHCHECK
  "${BUILDAH[@]}" bud --format docker --pull=never --layers --network host \
    --build-arg "BASE=$BASE_IMAGE" "${secret[@]}" -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT"
}

do_check() {
  has_image "$IMAGE" || die "no image $IMAGE: build it first"
  local ctr env pid ok=0 secret
  secret=$(head -c 48 /dev/urandom | base64 | tr -d '\n/+=')
  ctr=$("${BUILDAH[@]}" from --pull=never "$IMAGE")
  # shellcheck disable=SC2064 # the container's name now, not at exit
  trap "'${BUILDAH[0]}' --storage-driver '${BUILDAH_STORAGE:-vfs}' rm '$ctr' >/dev/null" EXIT
  env=(-e "HPCGW_SECRET_KEY=$secret" -e "HPCGW_PORT=$PORT" -e HPCGW_HOST=127.0.0.1)
  log "in the image: hpcgw db upgrade (a fresh SQLite in /var/lib/hpcgw)"
  "${BUILDAH[@]}" run --network host "${env[@]}" "$ctr" -- hpcgw db upgrade
  # two workers, as compose.yaml and the systemd unit run several: the supervisor starts each
  # as `python -m gateway.api.worker` from the installed wheel
  log "in the image: hpcgw serve --workers 2 on 127.0.0.1:$PORT," \
    "as $("${BUILDAH[@]}" run "$ctr" -- id -un)"
  "${BUILDAH[@]}" run --network host "${env[@]}" "$ctr" -- hpcgw serve --workers 2 &
  pid=$!
  for _ in $(seq 60); do
    if curl -fs "http://127.0.0.1:$PORT/healthz" && echo \
        && curl -fs "http://127.0.0.1:$PORT/readyz" && echo \
        && (($(pgrep -fc "gateway.api.worker") == 2)); then ok=1; break; fi
    sleep 1
  done
  # the healthcheck as the image declares it
  "${BUILDAH[@]}" inspect --type image --format '{{.Docker.Config.Healthcheck.Test}}' "$IMAGE"
  "${BUILDAH[@]}" run --network host "${env[@]}" "$ctr" -- python3 -c \
    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$PORT/readyz').status)"
  pkill -TERM -P "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  ((ok)) || die "the image did not serve /healthz and /readyz with its two workers"
  log "ok: $IMAGE migrates and serves with two workers"
}

case "${1:-all}" in
  base) do_base ;;
  build) do_build ;;
  check) do_check ;;
  all) do_base; do_build; do_check ;;
  *) die "usage: $0 [base|build|check|all]" ;;
esac

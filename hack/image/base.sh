#!/usr/bin/env bash
# Build the image's base locally from Debian packages (no registry needed), once, and cache it.
#
#   hack/image/base.sh          prints the base image name (localhost/tierwise-base:<tag>)
#
# debootstrap --variant=minbase + python3, python3-venv and ca-certificates, documentation and
# package lists removed. The root filesystem is cached as a tarball under
# ${XDG_CACHE_HOME:-~/.cache}/tierwise/image/, keyed by a hash of this script and the suite, so
# a wiped container store is refilled in seconds and a changed recipe rebuilds. Progress goes
# to stderr; stdout carries only the image name.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
SUITE="${TIERWISE_BASE_SUITE:-bookworm}"
PACKAGES="python3,python3-venv,ca-certificates"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tierwise/image"
CONTAINERS_CONF="${CONTAINERS_CONF:-$("$here/install-tools.sh")}"
export CONTAINERS_CONF

log() { printf '[image-base] %s\n' "$*" >&2; }

stamp="$(cat "$0" | sha256sum | cut -c1-12)"
image="localhost/tierwise-base:${SUITE}-${stamp}"
rootfs_tar="$cache/base-${SUITE}-${stamp}.tar"

if buildah inspect --type image "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

# The first Debian mirror this machine's apt uses (deb822 .sources or one-line lists).
mirror() {
  local uri
  uri="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' |
    grep -v security | head -n1 || true)"
  [[ -n "$uri" ]] || uri="$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' | grep -v security | head -n1 || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

mkdir -p "$cache"
exec 9>"$cache/.base.lock"
flock 9
if buildah inspect --type image "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

if [[ ! -f "$rootfs_tar" ]]; then
  work="$(mktemp -d "$cache/.rootfs.XXXXXX")"
  cleanup() {
    mountpoint -q "$work/rootfs/proc" && umount "$work/rootfs/proc"
    rm -rf "$work"
  }
  trap cleanup EXIT
  root="$work/rootfs"
  url="$(mirror)"
  log "debootstrap $SUITE from $url (minbase + ${PACKAGES})"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$url" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
  # Slim: what a runtime image never reads.
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
    "$root"/var/cache/debconf/*-old "$root"/var/log/* "$root"/tmp/*
  find "$root/usr/lib/python3" -name __pycache__ -prune -exec rm -rf {} +
  tar -C "$root" --numeric-owner -cpf "$rootfs_tar.tmp" .
  mv "$rootfs_tar.tmp" "$rootfs_tar"
  trap - EXIT
  cleanup
fi

log "committing $image"
c="$(buildah from scratch)"
trap 'buildah rm "$c" >/dev/null 2>&1 || true' EXIT
mnt="$(buildah mount "$c")"
tar -C "$mnt" --numeric-owner -xpf "$rootfs_tar"
buildah umount "$c" >/dev/null
buildah config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 \
  --cmd /bin/sh \
  --label org.opencontainers.image.description="Debian ${SUITE} minbase with python3 (Tierwise build base)" \
  "$c"
buildah commit --quiet --rm "$c" "$image" >/dev/null
trap - EXIT
# Older tags of the base are replaced by this one.
buildah images --format '{{.Name}}:{{.Tag}}' 2>/dev/null |
  grep -E '^localhost/tierwise-base:' | grep -vx "$image" | xargs -r buildah rmi >/dev/null 2>&1 || true
echo "$image"

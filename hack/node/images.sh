#!/usr/bin/env bash
# The node's images as OCI archives for `ctr images import` (no registry): the pause image,
# built from the Kubernetes sources in the module cache (gcc -static), and the project image
# from `make image`. Archives are cached under ${XDG_CACHE_HOME:-~/.cache}/tierwise/node/images,
# keyed by their inputs (pause) or image id (project). stdout: one archive path per line.
#
#   hack/node/images.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
CONTAINERS_CONF="${CONTAINERS_CONF:-$("$root/hack/image/install-tools.sh")}"
export CONTAINERS_CONF
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tierwise/node/images"
PAUSE_IMAGE=localhost/tierwise-pause:3.10
mkdir -p "$cache"

log() { printf '[node-images] %s\n' "$*" >&2; }

pause_archive() {
  local src digest out work c
  src="$(cd "$here/module" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
  [[ -f "$src" ]] || (cd "$here/module" && go mod download k8s.io/kubernetes)
  digest="$(cat "$src" "$0" | sha256sum | cut -c1-12)"
  out="$cache/pause-$digest.tar"
  if [[ ! -f "$out" ]]; then
    log "building $PAUSE_IMAGE from $(basename "$src")"
    find "$cache" -name 'pause-*.tar' -delete
    work="$(mktemp -d)"
    gcc -Os -static -DVERSION=3.10 -o "$work/pause" "$src"
    strip "$work/pause"
    c="$(buildah from scratch)"
    buildah copy --quiet "$c" "$work/pause" /pause >/dev/null
    buildah config --entrypoint '["/pause"]' --user 65535:65535 "$c"
    buildah commit --quiet --rm "$c" "$PAUSE_IMAGE" >/dev/null
    buildah push --quiet "$PAUSE_IMAGE" "oci-archive:$out.tmp:$PAUSE_IMAGE" >&2
    mv "$out.tmp" "$out"
    rm -rf "$work"
  fi
  echo "$out"
}

project_archive() {
  local image id out
  image="$("$root/hack/image/build.sh")"
  id="$(podman image inspect --format '{{.Id}}' "$image" | cut -c1-12)"
  out="$cache/tierwise-$id.tar"
  if [[ ! -f "$out" ]]; then
    log "exporting $image"
    find "$cache" -name 'tierwise-*.tar' -delete
    buildah push --quiet "$image" "oci-archive:$out.tmp:$image" >&2
    mv "$out.tmp" "$out"
  fi
  echo "$image" >"$cache/project-image"
  echo "$out"
}

pause_archive
project_archive

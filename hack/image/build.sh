#!/usr/bin/env bash
# Build the top-level Dockerfile with buildah (no Docker engine, no registry): installs the
# tools if needed, makes the Debian base once (hack/image/base.sh), then `buildah bud`.
#
#   hack/image/build.sh [IMAGE]      default IMAGE: localhost/tierwise:<version>
#   IMAGE_ARCHIVE=FILE hack/image/build.sh   also export the image as an OCI archive
#
# Layers are cached (--layers), so a rebuild after a code change reuses the dependency layer.
# The host's CA bundle is mounted into RUN steps (pip must reach the package index through
# this machine's TLS setup); it is not baked into the image. stdout carries only the image name.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
CONTAINERS_CONF="${CONTAINERS_CONF:-$("$root/hack/image/install-tools.sh")}"
export CONTAINERS_CONF
version="$(sed -nE 's/^__version__ = "(.*)"/\1/p' "$root/operator/tierwise/__init__.py")"
image="${1:-localhost/tierwise:$version}"
revision="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"

log() { printf '[image] %s\n' "$*" >&2; }

base="$("$root/hack/image/base.sh")"
mounts=()
for ca in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  if [[ -f "$ca" ]]; then
    mounts=(-v "$ca:/etc/ssl/certs/ca-certificates.crt:ro")
    break
  fi
done
start=$SECONDS
log "building $image on $base"
buildah bud --quiet --layers --isolation chroot \
  --build-arg "BASE=$base" --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
  "${mounts[@]}" -t "$image" -f "$root/Dockerfile" "$root" >&2
size="$(buildah inspect --type image --format '{{.FromImageID}}' "$image" >/dev/null 2>&1 && podman image inspect --format '{{.Size}}' "$image")"
log "built $image in $((SECONDS - start)) s, $((size / 1000000)) MB"
if [[ -n "${IMAGE_ARCHIVE:-}" ]]; then
  buildah push --quiet "$image" "oci-archive:$IMAGE_ARCHIVE:$image" >&2
  log "exported $IMAGE_ARCHIVE"
fi
echo "$image"

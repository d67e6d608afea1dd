#!/usr/bin/env bash
# Install the daemonless image tools from Debian's packages (buildah, podman, runc, debootstrap)
# and write the containers.conf that makes them work on hosts like the CI machine.
#
#   hack/image/install-tools.sh      idempotent; prints the containers.conf path on stdout
#
# The configuration is written to the cache (not /etc), and the image scripts point buildah and
# podman at it with CONTAINERS_CONF:
# - runtime "runc": crun, podman's default, fails on hosts with mixed cgroup v1/v2 hierarchies;
# - default_ulimits: podman's default open-files limit (1048576) is above what such hosts allow.
set -euo pipefail
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tierwise/image"
conf="$cache/containers.conf"
packages=(buildah podman runc debootstrap slirp4netns)

log() { printf '[image-tools] %s\n' "$*" >&2; }

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || { log "need root to install: ${missing[*]}"; exit 1; }
    SUDO=sudo
  fi
  log "installing ${missing[*]}"
  out="$(mktemp)"
  trap 'rm -f "$out"' EXIT
  if ! { $SUDO apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"; } >"$out" 2>&1; then
    cat "$out" >&2
    log "installing ${missing[*]} failed"
    exit 1
  fi
fi

mkdir -p "$cache"
nofile="$(ulimit -Hn)"
[[ "$nofile" == unlimited ]] && nofile=1048576
tmp="$(mktemp "$cache/.containers.conf.XXXXXX")"
cat >"$tmp" <<CONF
# Written by hack/image/install-tools.sh; used through CONTAINERS_CONF.
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=32768:32768"]

[engine]
runtime = "runc"
CONF
mv "$tmp" "$conf"
echo "$conf"

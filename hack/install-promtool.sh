#!/usr/bin/env bash
# Build promtool (Prometheus' rule checker) from the Go module proxy, once, and cache it.
#
#   hack/install-promtool.sh        prints the path of the promtool binary
#
# `go install .../promtool@version` is refused (Prometheus' go.mod has exclude directives), so
# hack/promtool/ is a wrapper module: it requires github.com/prometheus/prometheus (the Go
# module of Prometheus 3.7.3 is v0.307.3) and lists promtool as a tool; its go.sum is committed.
# The binary is cached under ${XDG_CACHE_HOME:-~/.cache}/tierwise/promtool/<stamp>/, keyed by
# a hash of the wrapper module and this script; a build is renamed into place, under a lock.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
module="$here/promtool"
stamp="$(cat "$module/go.mod" "$module/go.sum" "$0" | sha256sum | cut -c1-12)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tierwise/promtool"
dir="$cache/$stamp"
bin="$dir/promtool"

log() { printf '[promtool] %s\n' "$*" >&2; }

if [[ ! -x "$bin" ]]; then
  command -v go >/dev/null || { log "go is required to build promtool"; exit 1; }
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  if [[ ! -x "$bin" ]]; then
    tmp="$(mktemp -d "$cache/.build.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    log "building promtool (first use; a few minutes)"
    (cd "$module" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" \
      -o "$tmp/promtool" github.com/prometheus/prometheus/cmd/promtool)
    rm -rf "$dir"
    mv "$tmp" "$dir"
    trap - EXIT
  fi
fi
"$bin" --version >/dev/null
echo "$bin"

#!/usr/bin/env bash
# Installs Debian's lua5.1 for the Argo CD health-check tests, if missing. Argo CD runs health
# checks in gopher-lua, a Lua 5.1 implementation; the tests run them under the reference 5.1.
set -euo pipefail
command -v lua5.1 >/dev/null 2>&1 && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-lua: run 'apt-get install -y lua5.1' as root" >&2; exit 1; }
  SUDO="sudo"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { $SUDO apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends lua5.1; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-lua: installing lua5.1 failed" >&2
  exit 1
fi
command -v lua5.1 >/dev/null 2>&1 || { echo "install-lua: lua5.1 still missing" >&2; exit 1; }

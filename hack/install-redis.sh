#!/usr/bin/env bash
# Installs Debian's redis-server for the router's Redis response-cache tests, if missing.
# Idempotent and quiet: does nothing when redis-server is already on PATH.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-redis: redis-server is missing and this user cannot install packages;" >&2
    echo "install-redis: run 'apt-get install -y redis-server' as root" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Output is kept and shown only when something fails.
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends redis-server; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-redis: installing redis-server failed" >&2
  exit 1
fi
# The package starts a system service where an init system runs; the tests start their own
# servers on free ports and need none.
command -v redis-server >/dev/null 2>&1 || { echo "install-redis: redis-server still missing" >&2; exit 1; }

#!/usr/bin/env bash
# Remove the iptables chains podman's network backend (netavark) leaves behind, when no
# container is running. The image tests use --network=none and slirp4netns, which add none;
# this cleans up after manual `podman run` with the default bridge network.
#
#   hack/image/clean-netavark.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
command -v iptables-save >/dev/null || exit 0
CONTAINERS_CONF="${CONTAINERS_CONF:-$("$root/hack/image/install-tools.sh")}"
export CONTAINERS_CONF
if command -v podman >/dev/null && [[ -n "$(podman ps -q 2>/dev/null)" ]]; then
  echo "[netavark] containers are running; leaving their chains alone" >&2
  exit 0
fi
for table in filter nat mangle; do
  chains="$(iptables-save -t "$table" | sed -n 's/^:\(NETAVARK[^ ]*\) .*/\1/p')"
  [[ -n "$chains" ]] || continue
  # Rules elsewhere that jump into a netavark chain, deleted by their own spec.
  iptables-save -t "$table" | grep -E '^-A [^ ]+ .*-j NETAVARK' | grep -vE '^-A NETAVARK' |
    while read -r line; do
      # iptables-save quotes arguments with spaces (comments) the way a shell does.
      eval "iptables -t \"\$table\" -D ${line#-A }" 2>/dev/null || true
    done
  for chain in $chains; do iptables -t "$table" -F "$chain"; done
  for chain in $chains; do iptables -t "$table" -X "$chain"; done
  echo "[netavark] removed $(wc -w <<<"$chains") chain(s) from table $table" >&2
done

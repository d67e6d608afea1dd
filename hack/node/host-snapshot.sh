#!/usr/bin/env bash
# What the node must leave as it found it on the host, as text to compare before and after:
# interfaces, addresses, routes, iptables and nftables rules, sysctls, mounts.
#
#   hack/node/host-snapshot.sh > FILE
set -uo pipefail
section() { printf '\n## %s\n' "$1"; }
section links; ip -o link show | sed -E 's/^[0-9]+: //; s/ qlen [0-9]+//'
section addresses; ip -o addr show | sed -E 's/^[0-9]+: //; s/valid_lft .*//'
section routes; ip route show table all
section "ipv6 routes"; ip -6 route show table all
section rules; ip rule show
for table in filter nat mangle raw security; do
  section "iptables $table"
  # Packet/byte counters and the header comment change by themselves.
  command -v iptables-save >/dev/null && iptables-save -t "$table" 2>/dev/null |
    grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]//'
done
section nftables; command -v nft >/dev/null && nft list ruleset 2>/dev/null | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'
section sysctls
# Counters and random values change on their own; everything else must not.
sysctl -a 2>/dev/null | grep -vE '^(fs\.(aio-nr|dentry-state|file-nr|inode-nr|inode-state|quota\.)|kernel\.(random\.|ns_last_pid|pty\.nr|sched_domain)|net\.netfilter\.nf_conntrack_count|vm\.stat_refresh|kernel\.tainted)'
# Image builds and runs (buildah, podman) mount and unmount their containers' layers and
# network namespaces here on their own; the node's mounts live in its own mount namespace.
section mounts; awk '{print $5, $9, $10}' /proc/self/mountinfo |
  grep -vE '^/(var/lib/containers|run/containers|run/netns)/' | sort

#!/usr/bin/env bash
# Copy the chart's single-source files into the chart as real files (helm reads symlinks but
# logs a line per link on stderr, and a packaged chart must hold the content anyway).
# tests/chart/test_chart_render.py keeps the copies equal to their sources.
set -euo pipefail
cd "$(dirname "$0")/.."
chart=charts/tierwise
copy() { install -m 0644 "$1" "$2"; }
for crd in crds/*.yaml; do
  copy "$crd" "$chart/crds/$(basename "$crd")"
done
copy config/peering/crds.yaml "$chart/crds/kopf.dev_peerings.yaml"
copy config/rbac/operator-clusterrole.yaml "$chart/files/operator-clusterrole.yaml"

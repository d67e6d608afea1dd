#!/usr/bin/env bash
# The local control plane for people: a real kube-apiserver + etcd + kube-controller-manager
# on 127.0.0.1 (binaries built from the Go module proxy on first use, then cached).
#
#   hack/controlplane.sh up [--pod-runner]   start it in the background (state in .tmp/controlplane)
#   eval "$(hack/controlplane.sh env)"       point kubectl/helm at it
#   hack/controlplane.sh status              server, kubeconfig, memory
#   hack/controlplane.sh kubeconfig USER [--group G]...   mint a least-privilege identity
#   hack/controlplane.sh down                stop everything it started
#
# TIERWISE_CONTROLPLANE_DIR overrides the state directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="$root/.venv/bin/python"
if [[ ! -x "$python" ]]; then
  echo "no virtualenv yet: run 'make setup' first" >&2
  exit 1
fi
[[ $# -ge 1 ]] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
PYTHONPATH="$root/tests${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m harness "$@"

#!/usr/bin/env bash
# A real node for end-to-end tests: a kubelet (with containerd, runc, CNI bridge and
# kube-proxy) joined to the local control plane, running the project image.
#
#   hack/node.sh up        control plane + kube-scheduler + the node; Ready when it returns
#   eval "$(hack/node.sh env)"   point kubectl/helm at it
#   hack/node.sh exec CMD  run CMD inside the node's network and mount namespaces
#   hack/node.sh load      rebuild the project image if needed and import it into the node
#   hack/node.sh status    what runs
#   hack/node.sh down      stop everything `up` started and remove what it added to the host
#
# The node lives in network and mount namespaces of its own (unshare): its bridge, node IP,
# pod IPs, iptables rules, bind mounts and the kubelet's fixed paths exist only in there, and
# there is no default route, so nothing leaves it. It reaches the API server through a Unix
# socket; the API server reaches the kubelet and Services through the control plane's egress
# socket, served from inside the node. Never dial a pod or node IP from the host: use the API
# server (port-forward, proxy, logs, exec), a Unix socket, or `hack/node.sh exec`.
#
# TIERWISE_NODE_DIR overrides the state directory (default .tmp/node in the checkout).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
here="$root/hack/node"
python="$root/.venv/bin/python"
state="${TIERWISE_NODE_DIR:-$root/.tmp/node}"
mkdir -p "$state"
state="$(cd "$state" && pwd)"
cp_dir="$state/controlplane"
NODE_NAME="${TIERWISE_NODE_NAME:-tierwise-node}"
# The cgroup the node's processes (and, below it, the kubelet's pods) live in; one per state
# directory so two checkouts can each run a node.
CGROUP_ROOT="tierwise-node-$(printf '%s' "$state" | sha256sum | cut -c1-8)"
# Mount points the node binds its own folders over, inside its mount namespace only (the
# kubelet and containerd 1.6 write to these fixed paths). Created on the host if missing and
# removed again by `down`.
PRIVATE_PATHS=(/var/lib/kubelet /var/lib/cni /run/containerd /var/lib/containerd /var/log/pods
  /var/log/containers)

log() { printf '[node] %s\n' "$*" >&2; }
harness() { PYTHONPATH="$root/tests" "$python" -m harness --workdir "$cp_dir" "$@"; }

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

# -- host packages ------------------------------------------------------------------------------

ensure_packages() {
  local packages=(containerd runc containernetworking-plugins socat iptables conntrack nftables) missing=() p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  local out
  out="$(mktemp)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"; } >"$out" 2>&1; then
    cat "$out" >&2
    rm -f "$out"
    log "installing ${missing[*]} failed"
    exit 1
  fi
  rm -f "$out"
}

# -- cgroups ------------------------------------------------------------------------------------

cgroup_dirs() { # every hierarchy's folder of the node's cgroup that exists
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -d "$h$CGROUP_ROOT" ]] && echo "$h$CGROUP_ROOT"
  done
  return 0
}

cgroup_pids() {
  local d
  while read -r d; do
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done < <(cgroup_dirs) | sort -un
}

# Kill every process of the node (kubelet, containerd, shims, containers) by its cgroup:
# double-forked shims and container processes are not children of anything we hold.
kill_node_processes() {
  local pids i
  pids="$(cgroup_pids)"
  [[ -n "$pids" ]] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for i in $(seq 1 50); do
    pids="$(cgroup_pids)"
    [[ -n "$pids" ]] || return 0
    ((i < 30)) || kill -KILL $pids 2>/dev/null || true
    sleep 0.2
  done
  log "processes left in cgroup $CGROUP_ROOT: $(cgroup_pids | tr '\n' ' ')"
  return 1
}

remove_cgroups() {
  local d
  while read -r d; do
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done < <(cgroup_dirs)
  [[ -z "$(cgroup_dirs)" ]] || { log "cgroups left: $(cgroup_dirs | tr '\n' ' ')"; return 1; }
}

# -- up -----------------------------------------------------------------------------------------

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_controlplane() {
  if harness status >/dev/null 2>&1; then return; fi
  log "starting the control plane"
  harness up --extra-controller node-lifecycle-controller \
    --extra-controller endpointslice-controller 2>"$state/controlplane-up.log" ||
    { cat "$state/controlplane-up.log" >&2; return 1; }
}

server_port() { sed -n 's#.*"server": "https://127.0.0.1:\([0-9]*\)".*#\1#p' "$cp_dir/state.json"; }

# A kubeconfig for USER (groups after it) whose server is the node's end of the API socket.
node_kubeconfig() {
  local user="$1" out="$2" path
  shift 2
  local groups=()
  for g in "$@"; do groups+=(--group "$g"); done
  path="$(harness kubeconfig "$user" "${groups[@]}")"
  sed -E 's#server: https://127\.0\.0\.1:[0-9]+#server: https://127.0.0.1:6443#' "$path" >"$out"
}

start_scheduler() {
  pid_alive "$state/kube-scheduler.pid" && return
  harness kubeconfig system:kube-scheduler >"$state/scheduler.kubeconfig.path"
  setsid "$bins/kube-scheduler" --kubeconfig="$(cat "$state/scheduler.kubeconfig.path")" \
    --leader-elect=false --secure-port=0 --v=1 >"$state/logs/kube-scheduler.log" 2>&1 &
  echo $! >"$state/kube-scheduler.pid"
}

start_api_socket() {
  pid_alive "$state/api-socket.pid" && return
  rm -f "$state/api.sock"
  setsid socat "UNIX-LISTEN:$state/api.sock,fork,mode=600" "TCP:127.0.0.1:$(server_port)" \
    >"$state/logs/api-socket.log" 2>&1 &
  echo $! >"$state/api-socket.pid"
}

make_mount_points() {
  local p
  : >"$state/created-paths.new"
  for p in "${PRIVATE_PATHS[@]}"; do
    [[ -e "$p" ]] && continue
    # Record the highest missing ancestor, so `down` removes exactly what was added.
    local top="$p"
    while [[ ! -e "$(dirname "$top")" ]]; do top="$(dirname "$top")"; done
    mkdir -p "$p"
    echo "$top" >>"$state/created-paths.new"
  done
  cat "$state/created-paths.new" >>"$state/created-paths"
  rm -f "$state/created-paths.new"
}

write_node_env() {
  cat >"$state/node.env" <<ENV
NODE_NAME=$NODE_NAME
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/12
CGROUP_ROOT=$CGROUP_ROOT
BIN_DIR=$bins
STATE=$state
ROOT=$root
PRIVATE_PATHS="${PRIVATE_PATHS[*]}"
ENV
}

start_node() {
  pid_alive "$state/node.pid" && return
  log "starting the node ($NODE_NAME) in its own network and mount namespaces"
  setsid unshare --net --mount --propagation private --fork --kill-child=TERM \
    "$here/inside.sh" "$state" >"$state/logs/node.log" 2>&1 &
  echo $! >"$state/node.pid"
}

wait_for() { # SECONDS DESCRIPTION COMMAND...
  local timeout="$1" what="$2" start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - start > timeout)); then
      log "$what: not after ${timeout}s"
      return 1
    fi
    pid_alive "$state/node.pid" || { log "$what: the node exited"; tail -n 30 "$state/logs/node.log" >&2; return 1; }
    sleep 0.5
  done
}

node_ready() {
  kubectl --kubeconfig "$cp_dir/kubeconfig" get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}

import_images() {
  local archive
  for archive in "$@"; do
    log "importing $(basename "$archive")"
    ctr --address "$state/fs/run/containerd/containerd.sock" -n k8s.io images import \
      --all-platforms "$archive" >&2
  done
}

kubernetes_endpoints() { # the `kubernetes` Service answered by the node's end of the API socket
  kubectl --kubeconfig "$cp_dir/kubeconfig" apply -f - >/dev/null <<'YAML'
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-node
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: tierwise.dev-node
addressType: IPv4
endpoints:
  - addresses: ["10.244.0.1"]
    conditions: {ready: true}
ports:
  - name: https
    port: 6443
    protocol: TCP
YAML
}

cmd_up() {
  local start=$SECONDS
  [[ -x "$python" ]] || { log "no virtualenv yet: run 'make setup' first"; exit 1; }
  [[ "$(id -u)" -eq 0 ]] || { log "the node needs root (namespaces, cgroups, mounts)"; exit 1; }
  ensure_packages
  mkdir -p "$state/logs"
  bins="$("$here/build.sh")"
  mapfile -t archives < <("$here/images.sh")
  # A failed start leaves nothing behind.
  trap 'log "start failed; cleaning up"; cmd_down' ERR
  export PATH="$root/.venv/bin:$PATH"
  start_controlplane
  start_api_socket
  start_scheduler
  node_kubeconfig "system:node:$NODE_NAME" "$state/kubelet.kubeconfig" system:nodes
  node_kubeconfig system:kube-proxy "$state/kube-proxy.kubeconfig"
  make_mount_points
  write_node_env
  start_node
  wait_for 60 "containerd" test -S "$state/fs/run/containerd/containerd.sock"
  import_images "${archives[@]}"
  kubernetes_endpoints
  wait_for 120 "node Ready" node_ready
  trap - ERR
  log "node $NODE_NAME Ready after $((SECONDS - start))s"
  log "  eval \"\$(hack/node.sh env)\" to use it; hack/node.sh down to stop"
}

# -- down ---------------------------------------------------------------------------------------

stop_pidfile() {
  local f="$1" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# socat's children (one per connection) outlive their parent: stop whatever still serves or
# holds the API socket of this state directory.
stop_socket_users() {
  local cmdline pid
  for cmdline in /proc/[0-9]*/cmdline; do
    pid="${cmdline#/proc/}" pid="${pid%/cmdline}"
    tr '\0' ' ' <"$cmdline" 2>/dev/null | grep -qF "UNIX-LISTEN:$state/api.sock," && kill "$pid" 2>/dev/null
  done
  return 0
}

cmd_down() {
  local ok=0 p
  # The node first, while the API server can still see its pods go.
  stop_pidfile "$state/node.pid"
  kill_node_processes || ok=1
  remove_cgroups || ok=1
  stop_pidfile "$state/kube-scheduler.pid"
  stop_pidfile "$state/api-socket.pid"
  stop_socket_users
  rm -f "$state/api.sock"
  [[ -f "$cp_dir/state.json" ]] && { harness down 2>/dev/null || ok=1; }
  if [[ -f "$state/created-paths" ]]; then
    while read -r p; do
      # Only folders the node added, and only if still empty of anything else.
      [[ -n "$p" && -d "$p" ]] && find "$p" -depth -type d -empty -delete 2>/dev/null
    done <"$state/created-paths"
    rm -f "$state/created-paths"
  fi
  # containerd's snapshots and the pods' volumes: the mounts on them vanished with the
  # node's mount namespace, so this is plain files.
  rm -rf "$state/fs" "$state/sysctl"
  ((ok == 0)) && log "node down" || log "node down, with leftovers (see above)"
  return $ok
}

# -- the rest -----------------------------------------------------------------------------------

cmd_env() {
  echo "export KUBECONFIG=$cp_dir/kubeconfig"
  echo "export PATH=$root/.venv/bin:\"\$PATH\""
}

cmd_exec() {
  pid_alive "$state/node.pid" || { log "not running"; exit 1; }
  # The namespaces belong to unshare's child (the node's first process).
  local holder
  holder="$(cat "$state/inside.pid")"
  exec nsenter -t "$holder" -n -m -- "$@"
}

cmd_status() {
  pid_alive "$state/node.pid" || { echo "not running"; return 1; }
  echo "node: $NODE_NAME (state in $state, cgroup $CGROUP_ROOT)"
  echo "kubeconfig: $cp_dir/kubeconfig"
  echo "processes: $(cgroup_pids | wc -l)"
}

# Rebuild the project image if the sources changed and import it into the running node.
cmd_load() {
  pid_alive "$state/node.pid" || { log "not running"; exit 1; }
  mapfile -t archives < <("$here/images.sh")
  import_images "${archives[@]}"
}

case "${1:-}" in
up) cmd_up ;;
load) cmd_load ;;
down) cmd_down ;;
env) cmd_env ;;
exec) shift; cmd_exec "$@" ;;
status) cmd_status ;;
*) usage ;;
esac

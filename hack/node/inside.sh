#!/usr/bin/env bash
# The node's first process, run by hack/node.sh inside fresh network and mount namespaces
# (`unshare --net --mount --propagation private`). Everything below changes only those
# namespaces: bind mounts, the bridge, routes, iptables rules, per-namespace sysctls.
#
#   hack/node/inside.sh STATE_DIR      (STATE_DIR/node.env says what to run)
set -euo pipefail
state="$1"
# shellcheck source=/dev/null
source "$state/node.env"
here="$ROOT/hack/node"
logs="$state/logs"
echo $$ >"$state/inside.pid"

log() { printf '[node-inside] %s\n' "$*" >&2; }

# Every process of the node in one cgroup (per hierarchy), so `down` finds them all, shims
# and containers included; the kubelet puts its pods below it (cgroupRoot).
join_cgroup() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -f "$h/cgroup.procs" ]] || continue
    mkdir -p "$h$CGROUP_ROOT/node"
    if [[ -f "$h/cpuset.cpus" ]]; then # cgroup v1's cpuset takes no task until these are set
      cat "$h/cpuset.cpus" >"$h$CGROUP_ROOT/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h$CGROUP_ROOT/cpuset.mems"
      echo 1 >"$h$CGROUP_ROOT/cgroup.clone_children"
      cat "$h/cpuset.cpus" >"$h$CGROUP_ROOT/node/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h$CGROUP_ROOT/node/cpuset.mems"
    fi
    echo $$ >"$h$CGROUP_ROOT/node/cgroup.procs"
  done
}

# The kubelet's and containerd's fixed paths get folders of this node's own.
private_paths() {
  local p
  for p in $PRIVATE_PATHS; do
    mkdir -p "$state/fs$p"
    mount --bind "$state/fs$p" "$p"
  done
}

# With protectKernelDefaults the kubelet refuses to start unless these hold its values, and
# without it the kubelet writes them to the host. Files with the values are bound over the
# /proc/sys entries in this mount namespace only; the host's settings stay as they are.
kernel_defaults() {
  local kv key value
  mkdir -p "$state/sysctl"
  for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
    kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    key="${kv%=*}" value="${kv#*=}"
    [[ "$(cat "/proc/sys/$key")" == "$value" ]] && continue
    echo "$value" >"$state/sysctl/${key//\//.}"
    mount --bind "$state/sysctl/${key//\//.}" "/proc/sys/$key"
  done
}

# The bridge carries the node IP (also the pods' gateway); Service IPs route to it so that
# kube-proxy's DNAT applies to connections from the node too. No default route: nothing
# leaves the namespace.
network() {
  ip link set lo up
  ip link add cni0 type bridge
  ip addr add "$NODE_IP/24" dev cni0
  ip link set cni0 up
  ip route add "$SERVICE_CIDR" dev cni0
  echo 1 >/proc/sys/net/ipv4/ip_forward
}

config() {
  mkdir -p "$state/cni/net.d" "$state/containerd"
  cat >"$state/cni/net.d/10-tierwise.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "tierwise",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$state/fs/var/lib/cni/networks"
      }
    }
  ]
}
JSON
  cat >"$state/containerd/config.toml" <<TOML
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/tierwise-pause:3.10"
  # This host gives even root no CAP_SYS_RESOURCE: lowering a sandbox's oom_score_adj
  # below containerd's own fails every sandbox unless it is restricted.
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
TOML
  : >"$state/resolv.conf"
  cat >"$state/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 without systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: $NODE_IP
readOnlyPort: 0
healthzPort: 0
# Reachable only from inside the node's namespace (the API server comes through the egress
# socket without a client certificate).
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
protectKernelDefaults: true
makeIPTablesUtilChains: false
# No registry to pull images back from.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%"}
# ConfigMap volume updates in ~10 s rather than ~75 s.
syncFrequency: 10s
resolvConf: $state/resolv.conf
maxPods: 40
serializeImagePulls: false
shutdownGracePeriod: 0s
YAML
  cat >"$state/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $state/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: ""
metricsBindAddress: ""
# Replies from a pod behind a Service on the same bridge must come back through the node
# (there is no bridge netfilter to un-NAT them otherwise).
iptables: {masqueradeAll: true, localhostNodePorts: false}
# Leave the host-wide conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
}

pids=()
run() { # NAME COMMAND...
  local name="$1"
  shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
  echo $! >"$state/$name.pid"
}

stop_all() {
  log "stopping"
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  wait || true
  exit 0
}
trap stop_all TERM INT

join_cgroup
private_paths
kernel_defaults
network
config
run api-socket socat TCP-LISTEN:6443,fork,reuseaddr "UNIX-CONNECT:$state/api.sock"
# containerd restarts when it exits, as a service manager would restart it: the kubelet and
# running containers must ride that out (a failure drill kills it).
run containerd bash -c "while :; do containerd --config '$state/containerd/config.toml'; sleep 1; done"
until [[ -S /run/containerd/containerd.sock ]]; do sleep 0.2; done
run egress-proxy env PYTHONPATH="$ROOT/tests" "$ROOT/.venv/bin/python" "$here/egress_proxy.py" \
  "$state/controlplane/svc.sock" "$NODE_NAME=$NODE_IP" "$NODE_IP/32" "$POD_CIDR" "$SERVICE_CIDR"
run kubelet "$BIN_DIR/kubelet" --config="$state/kubelet.yaml" \
  --kubeconfig="$state/kubelet.kubeconfig" --hostname-override="$NODE_NAME" \
  --node-ip="$NODE_IP" --cert-dir=/var/lib/kubelet/pki --v=1
run kube-proxy "$BIN_DIR/kube-proxy" --config="$state/kube-proxy.yaml" --v=1
log "node started"
# Any component exiting takes the node down (the tests see it NotReady, `down` cleans up).
wait -n || true
log "a component exited; stopping the node"
stop_all

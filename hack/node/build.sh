#!/usr/bin/env bash
# Build the node's binaries (kubelet, kube-scheduler, kube-proxy) from the Go module proxy at
# the control plane's Kubernetes version, and cache them.
#
#   hack/node/build.sh           build if not cached, then print the binary directory
#   hack/node/build.sh --print   print the binary directory without building
#
# The wrapper module (hack/node/module) is separate from hack/controlplane's, so adding the
# node does not change the cached control plane's key; both share the Go module and build
# caches, so the kubelet build reuses what the control plane's build compiled. Binaries land
# in ${XDG_CACHE_HOME:-~/.cache}/tierwise/node/<k8s>/, published atomically like the control
# plane's. Progress goes to stderr; stdout carries only the binary directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../controlplane/versions.env
source "$here/../controlplane/versions.env"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/tierwise/node"
bin_dir="$cache_root/${K8S_VERSION}"
binaries=(kubelet kube-scheduler kube-proxy)

log() { printf '[node-build] %s\n' "$*" >&2; }

module_digest() {
  cat "$here/../controlplane/versions.env" "$here"/module/go.{mod,sum} "$here/build.sh" |
    sha256sum | cut -d' ' -f1
}

is_cached() {
  local b
  [[ -f "$bin_dir/.stamp" && "$(cat "$bin_dir/.stamp")" == "$(module_digest)" ]] || return 1
  for b in "${binaries[@]}"; do [[ -x "$bin_dir/$b" ]] || return 1; done
}

check_pins() {
  grep -qE "^[[:space:]]*k8s\.io/kubernetes ${K8S_VERSION}( |\$)" "$here/module/go.mod" ||
    { log "module/go.mod does not pin ${K8S_VERSION}; update it as its header says"; exit 1; }
}

# The same version stamping as the control plane (the kubelet reports it on its Node object).
kube_ldflags() {
  local major minor build_date flags=() pkg
  major="${K8S_VERSION#v}"; major="${major%%.*}"
  minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
  build_date="$(cd "$here/module" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    flags+=("-X '$pkg.gitVersion=$K8S_VERSION'" "-X '$pkg.gitCommit='" "-X '$pkg.gitMajor=$major'"
      "-X '$pkg.gitMinor=$minor'" "-X '$pkg.gitTreeState=clean'" "-X '$pkg.buildDate=$build_date'")
  done
  echo "-s -w ${flags[*]}"
}

build_all() {
  local out="$1" start ldflags
  export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
  ldflags="$(kube_ldflags)"
  start=$SECONDS
  log "downloading modules (kubernetes ${K8S_VERSION})"
  (cd "$here/module" && go mod download)
  log "building kubelet, kube-scheduler and kube-proxy ${K8S_VERSION}"
  (cd "$here/module" && nice go build -trimpath -ldflags "$ldflags" -o "$out/" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy)
  log "built after $((SECONDS - start))s"
}

main() {
  if [[ "${1:-}" == "--print" ]]; then echo "$bin_dir"; return; fi
  check_pins
  mkdir -p "$cache_root"
  exec 9>"$cache_root/.build.lock"
  flock 9
  if is_cached; then
    log "cached: $bin_dir"
    echo "$bin_dir"
    return
  fi
  command -v go >/dev/null || { log "go is required to build the node"; exit 1; }
  local tmp
  tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  chmod 755 "$tmp"
  build_all "$tmp"
  module_digest >"$tmp/.stamp"
  rm -rf "$bin_dir"
  mv "$tmp" "$bin_dir"
  trap - EXIT
  log "done: $bin_dir ($(du -sh "$bin_dir" | cut -f1))"
  echo "$bin_dir"
}

main "$@"

#!/usr/bin/env bash
# Build the local control plane binaries (kube-apiserver, kube-controller-manager, etcd) from
# the Go module proxy at the versions pinned in versions.env, and cache them.
#
#   hack/controlplane/build.sh           build if not cached, then print the binary directory
#   hack/controlplane/build.sh --print   print the binary directory without building
#
# Binaries land in ${XDG_CACHE_HOME:-~/.cache}/tierwise/controlplane/<k8s>-<etcd>/. A build
# is published atomically (built into a temp dir, then renamed), so an interrupted build never
# leaves half a control plane behind, and a second run is a no-op. Progress goes to stderr;
# stdout carries only the binary directory so callers can capture it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/tierwise/controlplane"
bin_dir="$cache_root/${K8S_VERSION}-${ETCD_VERSION}"
binaries=(kube-apiserver kube-controller-manager etcd)

log() { printf '[controlplane] %s\n' "$*" >&2; }

# The stamp ties the cached binaries to every input of the build: pins, wrapper modules and
# this script's flags.
module_digest() {
  cat "$here/versions.env" "$here"/kubernetes/go.{mod,sum} "$here"/etcd/go.{mod,sum} \
    "$here/etcd/main.go" "$here/build.sh" | sha256sum | cut -d' ' -f1
}

is_cached() {
  local b
  [[ -f "$bin_dir/.stamp" && "$(cat "$bin_dir/.stamp")" == "$(module_digest)" ]] || return 1
  for b in "${binaries[@]}"; do [[ -x "$bin_dir/$b" ]] || return 1; done
}

# The committed go.mod files must match versions.env, otherwise the cache directory name
# would lie about what is inside.
check_pins() {
  grep -qE "(^require|^[[:space:]])[[:space:]]*k8s\.io/kubernetes ${K8S_VERSION}( |\$)" "$here/kubernetes/go.mod" ||
    { log "kubernetes/go.mod does not pin ${K8S_VERSION}; run hack/controlplane/update-modules.sh"; exit 1; }
  grep -qE "(^require|^[[:space:]])[[:space:]]*go\.etcd\.io/etcd/server/v3 ${ETCD_VERSION}( |\$)" "$here/etcd/go.mod" ||
    { log "etcd/go.mod does not pin ${ETCD_VERSION}; run hack/controlplane/update-modules.sh"; exit 1; }
}

# Version stamping as upstream's hack/lib/version.sh does it, so `kubectl version` reports the
# server version and the apiserver's compatibility-version logic sees a real release.
kube_ldflags() {
  local major minor build_date flags=() pkg
  major="${K8S_VERSION#v}"; major="${major%%.*}"
  minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
  # The tag's publication time keeps builds reproducible (no wall-clock build date).
  build_date="$(cd "$here/kubernetes" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
  # The module proxy does not record the tag's commit; an empty gitCommit beats the
  # "$Format:%H$" placeholder of the source tree.
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    flags+=("-X '$pkg.gitVersion=$K8S_VERSION'" "-X '$pkg.gitCommit='" "-X '$pkg.gitMajor=$major'"
      "-X '$pkg.gitMinor=$minor'" "-X '$pkg.gitTreeState=clean'" "-X '$pkg.buildDate=$build_date'")
  done
  echo "-s -w ${flags[*]}"
}

build_all() {
  local out="$1" start ldflags
  # Static binaries with no C toolchain needed, like upstream's release builds; -mod=readonly
  # makes the committed go.sum authoritative; -buildvcs=false keeps the state of this
  # repository's work tree out of the binaries, so two builds are byte-identical.
  export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
  ldflags="$(kube_ldflags)"
  start=$SECONDS
  log "downloading modules (kubernetes ${K8S_VERSION}, etcd ${ETCD_VERSION})"
  (cd "$here/kubernetes" && go mod download)
  (cd "$here/etcd" && go mod download)
  log "modules ready after $((SECONDS - start))s"
  log "building etcd ${ETCD_VERSION}"
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" .)
  log "etcd built after $((SECONDS - start))s"
  log "building kube-apiserver and kube-controller-manager ${K8S_VERSION} (the slow part)"
  (cd "$here/kubernetes" && go build -trimpath -ldflags "$ldflags" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager)
  log "all binaries built after $((SECONDS - start))s"
}

main() {
  if [[ "${1:-}" == "--print" ]]; then echo "$bin_dir"; return; fi
  check_pins
  mkdir -p "$cache_root"
  # One builder at a time: parallel test sessions wait for the first build instead of
  # racing it.
  exec 9>"$cache_root/.build.lock"
  flock 9
  if is_cached; then
    log "cached: $bin_dir"
    echo "$bin_dir"
    return
  fi
  command -v go >/dev/null || { log "go is required to build the control plane"; exit 1; }
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

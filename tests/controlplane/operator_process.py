"""Helpers to run the operator against the local control plane as a real `tierwise operator` process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.kubectl import Kubectl

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_USER = "tierwise-operator"
# A complete price override of the examples' haiku tier (Haiku 5.5). Nothing is derived from
# a changed input price, so the cache prices and the long-prompt band are stated too.
HAIKU_PRICE_CHANGE = {
    "spec": {
        "pricing": {
            "input": 0.09,
            "output": 0.45,
            "cacheWrite5m": 0.1125,
            "cacheWrite1h": 0.18,
            "cacheRead": 0.009,
            "longPrompt": {
                "thresholdTokens": 100000,
                "input": 0.45,
                "output": 2.25,
                "cacheWrite5m": 0.5625,
                "cacheWrite1h": 0.9,
                "cacheRead": 0.045,
            },
        }
    }
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, KeyError, StopIteration, json.JSONDecodeError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class OperatorProcess:
    """`tierwise operator` as a subprocess that tests can kill and restart."""

    def __init__(
        self,
        kubeconfig: Path,
        log: Path,
        extra_args: Sequence[str] = (),
        *,
        standalone: bool = True,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        self.extra_args = list(extra_args)
        self.standalone = standalone
        self.process: subprocess.Popen[bytes] | None = None
        self.health_port = 0
        self.metrics_port = 0

    def start(self) -> None:
        self.health_port = free_port()
        self.metrics_port = free_port()
        argv = [
            str(Path(sys.executable).parent / "tierwise"),
            "operator",
            *(["--standalone"] if self.standalone else []),
            f"--metrics-port={self.metrics_port}",
            f"--health-port={self.health_port}",
            "--resync-seconds=2",
            *(self.extra_args or ["--webhook-port=0"]),
        ]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        eventually(self._healthy, "the operator's liveness endpoint", timeout=60)

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"operator exited with {self.process.returncode}; log {self.log}:\n{self.log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
            ) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as response:
            return response.read().decode()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as when a node dies mid-way."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def bind_operator_identity(
    kubectl: Kubectl, user_kubeconfig, user: str, roles: Sequence[str]
) -> Path:
    """A client certificate for ``user``, bound to the repo's ClusterRoles ``roles`` only."""
    kubectl.apply(ROOT / "config/rbac/operator-clusterrole.yaml")
    for role in roles:
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{user}-{role}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
        kubectl.apply(json.dumps(binding))
    kubeconfig = user_kubeconfig(user)
    # RBAC reads bindings through informers: wait until the new ones count.
    as_operator = kubectl.as_kubeconfig(kubeconfig)
    as_operator.wait_until_allowed(
        "patch", "cascadepolicies", "--subresource=status", "--all-namespaces"
    )
    as_operator.wait_until_allowed("update", "configmaps", "--all-namespaces")
    return kubeconfig


def apply_ungated(kubectl: Any, directory: Path, policy: str, namespace: str) -> None:
    """Apply an example directory, then drop its policy's ``spec.evaluation`` so a change goes
    straight to the ConfigMap (tests/controlplane/test_rollout.py covers the eval gate)."""
    kubectl.apply(directory, namespace=namespace)
    kubectl(
        "patch", "cascadepolicy", policy, "--type=json",
        "-p", '[{"op": "remove", "path": "/spec/evaluation"}]', namespace=namespace,
    )  # fmt: skip
    eventually(
        lambda: (
            (kubectl.get_json("cascadepolicy", policy, namespace=namespace).get("status") or {})
            .get("rollout", {})
            .get("phase")
            == "Ungated"
        ),
        f"the policy {policy} to be ungated",
    )


def injecting_operator_args(router_image: str) -> list[str]:
    """Arguments of an operator that registers and serves the injection webhook locally."""
    return [
        "--webhook-manage",
        "--webhook-address=127.0.0.1",
        "--webhook-host=127.0.0.1",
        f"--webhook-port={free_port()}",
        f"--router-image={router_image}",
    ]

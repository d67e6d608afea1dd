"""Two operator replicas with kopf peering: how long until a change lands after the active
replica is SIGKILLed, and whether anything is written twice.

Two `tierwise operator` processes (priorities 200 and 100, ``--peering-lifetime-seconds``
as given) against a fresh local control plane with the support-triage example, its policy without ``spec.evaluation`` (so a change goes live at
once). Each trial:

1. the priority-200 replica is running and active, the other one paused;
2. SIGKILL the active replica and, at once, change the model of the tier ``haiku``;
3. time until the policy's ConfigMap carries the new config (a watch timestamps it), and
   until the standby logs that it resumed;
4. restart the killed replica; it takes over again (higher priority), the standby pauses.

The API server's own counters give the ConfigMap and status writes per trial (one of each
is the minimum: one change, one policy). Markdown on stdout, JSON with ``--json``.

    .venv/bin/python bench/operator_failover.py --trials 5
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kubernetes
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from operator_scale import (
    HASH_ANNOTATION,
    ROOT,
    ConfigMapWatch,
    diff,
    free_port,
    request_counts,
)

from harness import LocalControlPlane
from harness.kubectl import Kubectl, find_tool, install_crds

NAMESPACE = "failover"
POLICY_CM = "tierwise-email-triage"
MODELS = ["claude-haiku-4-5", "claude-haiku-4-5-20251001"]


class Replica:
    def __init__(self, kubeconfig: Path, log: Path, priority: int, lifetime: int) -> None:
        self.kubeconfig, self.log, self.priority, self.lifetime = (
            kubeconfig,
            log,
            priority,
            lifetime,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            str(Path(sys.executable).parent / "tierwise"),
            "operator",
            "--peering=tierwise",
            f"--priority={self.priority}",
            f"--peering-lifetime-seconds={self.lifetime}",
            "--webhook-port=0",
            "--health-port=0",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={free_port()}",
            "--resync-seconds=30",
        ]
        out = self.log.open("a")
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def wait(check: Any, timeout: float, every: float = 0.05) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(every)
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tierwise-failover-"))
    trials: list[dict[str, Any]] = []
    with LocalControlPlane(workdir / "controlplane").start() as plane:
        kubectl = Kubectl(plane.kubeconfig, find_tool("kubectl"))
        install_crds(kubectl, ROOT / "crds")
        kubectl.apply(ROOT / "config/peering/crds.yaml")
        kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev")
        kubectl.apply(ROOT / "config/peering/tierwise-peering.yaml")
        kubectl("create", "namespace", NAMESPACE)
        for path in sorted((ROOT / "examples/support-triage").glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("apiVersion", "").startswith("tierwise.dev"):
                    # Ungated: a change goes live at once (no eval Job in this benchmark).
                    (doc.get("spec") or {}).pop("evaluation", None)
                    kubectl.apply(json.dumps(doc), namespace=NAMESPACE)
        api = kubernetes.config.new_client_from_config(str(plane.kubeconfig))
        core = kubernetes.client.CoreV1Api(api)
        custom = kubernetes.client.CustomObjectsApi(api)
        high = Replica(plane.kubeconfig, workdir / "high.log", 200, args.lifetime)
        low = Replica(plane.kubeconfig, workdir / "low.log", 100, args.lifetime)
        high.start()
        low.start()
        try:

            def cm_hash() -> str | None:
                try:
                    cm = core.read_namespaced_config_map(POLICY_CM, NAMESPACE)
                except kubernetes.client.ApiException:
                    return None
                return (cm.metadata.annotations or {}).get(HASH_ANNOTATION)

            if wait(lambda: cm_hash() is not None, 60) is None:
                raise RuntimeError("the policy was never rendered")
            time.sleep(args.lifetime)  # both replicas see each other
            for trial in range(args.trials):
                watch = ConfigMapWatch(api, NAMESPACE)
                before_hash = cm_hash()
                counts = request_counts(plane)
                resumed_before = low.text().count("Resuming operations")
                high.kill()
                killed = time.monotonic()
                model = MODELS[(trial + 1) % len(MODELS)]
                custom.patch_namespaced_custom_object(
                    "tierwise.dev",
                    "v1alpha1",
                    NAMESPACE,
                    "modeltiers",
                    "haiku",
                    {"spec": {"model": model}},
                )
                key = f"{NAMESPACE}/{POLICY_CM}"
                landed = wait(
                    lambda w=watch, k=key, t=killed, h=before_hash or "": (
                        w.first_change_after(k, t, h) is not None
                    ),
                    args.lifetime + 60,
                )
                resumed = wait(
                    lambda n=resumed_before: low.text().count("Resuming operations") > n, 5
                )
                time.sleep(2)
                requests = diff(request_counts(plane), counts)
                hashes = [h for _, k, h in watch.changes if k.endswith(POLICY_CM)]
                watch.stop()
                trials.append(
                    {
                        "takeover_seconds": round(landed, 2) if landed is not None else None,
                        "standby_resumed_log": resumed is not None,
                        "configmap_writes": requests.get("PUT configmaps", 0)
                        + requests.get("POST configmaps", 0),
                        "status_writes": requests.get("PATCH cascadepolicies/status", 0),
                        "hashes_seen": len(hashes),
                        "distinct_hashes": len(set(hashes)),
                    }
                )
                print(f"[trial {trial}] {json.dumps(trials[-1])}", file=sys.stderr, flush=True)
                # The killed replica comes back and, with the higher priority, takes over.
                paused_before = low.text().count("Pausing operations")
                high.start()
                wait(lambda n=paused_before: low.text().count("Pausing operations") > n, 60, 0.2)
                time.sleep(2)
        finally:
            high.stop()
            low.stop()
    takeovers = [t["takeover_seconds"] for t in trials if t["takeover_seconds"] is not None]
    return {
        "settings": {"trials": args.trials, "lifetime_seconds": args.lifetime},
        "trials": trials,
        "takeover_median_seconds": round(statistics.median(takeovers), 2) if takeovers else None,
        "takeover_max_seconds": max(takeovers) if takeovers else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--lifetime", type=int, default=10, help="--peering-lifetime-seconds")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    results = run(args)
    print(
        f"lifetime {args.lifetime} s, {args.trials} trials: takeover median "
        f"{results['takeover_median_seconds']} s, max {results['takeover_max_seconds']} s"
    )
    print("\n| trial | takeover (s) | ConfigMap writes | status writes | hashes seen / distinct |")
    print("|---|---|---|---|---|")
    for i, t in enumerate(results["trials"]):
        print(
            f"| {i + 1} | {t['takeover_seconds']} | {t['configmap_writes']} | "
            f"{t['status_writes']} | {t['hashes_seen']} / {t['distinct_hashes']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The operator at platform scale, on the local control plane (kube-apiserver + etcd).

One `tierwise operator` process (standalone, no webhook, admin credentials) against a fresh
local control plane. Objects: ``--policies`` CascadePolicies over ``--namespaces``
namespaces with ``--tiers-per-namespace`` ModelTiers and one CacheProfile each; the first
namespace holds ``--shared`` policies that all use its tier ``shared``, the rest are spread
evenly. Phases:

1. **apply at once**: every object created concurrently (16 client threads); time until
   every policy's ConfigMap exists, every policy is Ready for its generation, and every
   tier's ``usedBy`` is right;
2. **tier change**: the model of ``shared`` changes; a watch on the namespace's ConfigMaps
   timestamps each re-rendered ConfigMap (latency from the patch's return);
3. **policy edits**: ``--edits`` single-policy edits, one after another, each timed until
   its ConfigMap carries the new config;
4. **idle**: ``--idle-minutes`` with nothing changing.

The world has pods too: ``--pods-per-policy`` (2) Pods per policy, matching its
``podSelector``, created directly as Pod objects before the operator starts (no kubelet or
scheduler: they stay Pending, and only the API matters here). Each phase also records the
machine's one-minute load average at its end, since the figures are CPU time on a shared
machine.

For each phase: the operator's CPU seconds (``/proc/<pid>/stat``) and peak RSS, and the API
server's own request counters (``apiserver_request_total`` from its ``/metrics``) by verb
and resource, so "API writes per changed policy" and "writes while idle" come from the
server, not from the operator's view of itself. Results: Markdown on stdout, JSON with
``--json``.

    .venv/bin/python bench/operator_scale.py                      # the full run
    .venv/bin/python bench/operator_scale.py --quick              # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "tests"))  # the development harness

from harness import LocalControlPlane  # noqa: E402
from harness.kubectl import Kubectl, find_tool, install_crds  # noqa: E402

GROUP, VERSION = "tierwise.dev", "v1alpha1"
POLICY_LABEL = "tierwise.dev/policy"
HASH_ANNOTATION = "tierwise.dev/config-hash"
MODELS = ["claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-5"]
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY"}
TICKS = os.sysconf("SC_CLK_TCK")


# -- the operator process ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """CPU seconds and RSS of a process, sampled from /proc; peak RSS by a sampler thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.peak_rss = max(self.peak_rss, self.rss_bytes())
            except OSError:
                return

    def reset_peak(self) -> None:
        self.peak_rss = self.rss_bytes()

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def operator(kubeconfig: Path, log: Path, resync: float) -> Iterator[Process]:
    metrics = free_port()
    argv = [
        str(Path(sys.executable).parent / "tierwise"),
        "operator",
        "--standalone",
        "--webhook-port=0",
        "--health-port=0",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics}",
        f"--resync-seconds={resync}",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "tierwise operator started" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        sampler = Process(proc.pid)
        yield sampler
        sampler.stop()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


# -- the API server's own counters -------------------------------------------------------------

_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")


def request_counts(plane: LocalControlPlane) -> Counter[tuple[str, str]]:
    """apiserver_request_total summed by (verb, resource[/subresource])."""
    status, text = plane.request("GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    counts: Counter[tuple[str, str]] = Counter()
    for line in str(text).splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels")))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[(labels.get("verb", ""), resource)] += int(float(match.group("value")))
    return counts


OURS = {
    "configmaps",
    "cascadepolicies",
    "cascadepolicies/status",
    "modeltiers",
    "modeltiers/status",
    "cacheprofiles",
    "cacheprofiles/status",
    "events",
    "pods",
}


def diff(after: Counter, before: Counter) -> dict[str, int]:
    out = {}
    for (verb, resource), value in (after - before).items():
        if resource in OURS and value:
            out[f"{verb} {resource}"] = value
    return dict(sorted(out.items()))


def writes(counts: dict[str, int], resources: set[str] | None = None) -> int:
    return sum(
        v
        for k, v in counts.items()
        if k.split()[0] in WRITE_VERBS and (resources is None or k.split()[1] in resources)
    )


# -- the objects -------------------------------------------------------------------------------


def layout(args: argparse.Namespace) -> dict[str, int]:
    """Policies per namespace: the first holds the shared tier's users."""
    names = [f"scale-{i:02d}" for i in range(args.namespaces)]
    rest = args.policies - args.shared
    per, extra = divmod(rest, args.namespaces - 1)
    counts = {names[0]: args.shared}
    for i, name in enumerate(names[1:]):
        counts[name] = per + (1 if i < extra else 0)
    return counts


def tier(namespace: str, name: str, model: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelTier",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": model, "apiKeySecretRef": {"name": "anthropic"}},
    }


def profile(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CacheProfile",
        "metadata": {"name": "cache", "namespace": namespace},
        "spec": {"promptCaching": {"breakpoints": ["tools", "system"], "ttl": "5m"}},
    }


def tier_names(args: argparse.Namespace) -> list[str]:
    return ["shared", *[f"tier-{j}" for j in range(1, args.tiers_per_namespace)]]


def policy(namespace: str, index: int, args: argparse.Namespace) -> dict[str, Any]:
    names = tier_names(args)
    cheap = names[0] if namespace.endswith("-00") else names[index % len(names)]
    strong = (
        names[(index + 1) % len(names)] if names[(index + 1) % len(names)] != cheap else names[-1]
    )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CascadePolicy",
        "metadata": {"name": f"p-{index:03d}", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": f"app-{index:03d}"}},
            "cacheProfileRef": {"name": "cache"},
            "routes": [
                {
                    "name": "triage",
                    "steps": [
                        {
                            "tier": cheap,
                            "maxTokens": 256,
                            "escalateWhen": [{"signal": "invalidJSON"}],
                        },
                        {"tier": strong, "maxTokens": 1024},
                    ],
                },
                {"name": "chat", "steps": [{"tier": strong}]},
            ],
            "defaultRoute": "chat",
        },
    }


def expected_used_by(policies: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    used: Counter[tuple[str, str]] = Counter()
    for p in policies:
        ns = p["metadata"]["namespace"]
        tiers = {s["tier"] for r in p["spec"]["routes"] for s in r["steps"]}
        for t in tiers:
            used[(ns, t)] += 1
    return used


# -- waiting and watching ----------------------------------------------------------------------


def until(check: Callable[[], bool], timeout: float, every: float = 0.5) -> float | None:
    """Seconds until ``check()`` held, or None after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(every)
    return None


class ConfigMapWatch:
    """Timestamps every change of a rendered ConfigMap's hash in ``namespace`` (None: all)."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str | None) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.namespace = namespace
        self.changes: list[tuple[float, str, str]] = []  # (monotonic, "ns/name", hash)
        self._watch = kubernetes.watch.Watch()
        listed = self._list(limit=1)
        self._rv = listed.metadata.resource_version
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _list(self, **kwargs: Any) -> Any:
        if self.namespace is None:
            return self.core.list_config_map_for_all_namespaces(
                label_selector=POLICY_LABEL, **kwargs
            )
        return self.core.list_namespaced_config_map(
            self.namespace, label_selector=POLICY_LABEL, **kwargs
        )

    def _run(self) -> None:
        try:
            self._follow()
        except Exception:  # the stream ends when the benchmark stops the watch
            return

    def _follow(self) -> None:
        fn = (
            self.core.list_config_map_for_all_namespaces
            if self.namespace is None
            else self.core.list_namespaced_config_map
        )
        args = () if self.namespace is None else (self.namespace,)
        for event in self._watch.stream(
            fn, *args, label_selector=POLICY_LABEL, resource_version=self._rv, timeout_seconds=3600
        ):
            obj = event["object"]
            key = f"{obj.metadata.namespace}/{obj.metadata.name}"
            value = (obj.metadata.annotations or {}).get(HASH_ANNOTATION, "")
            self.changes.append((time.monotonic(), key, value))

    def first_change_after(self, key: str, since: float, old_hash: str) -> float | None:
        for when, name, value in self.changes:
            if name == key and when >= since and value != old_hash:
                return when
        return None

    def stop(self) -> None:
        self._watch.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- the phases --------------------------------------------------------------------------------


def apply_at_once(
    api: kubernetes.client.ApiClient, objects: list[dict[str, Any]], workers: int = 16
) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    plurals = {
        "ModelTier": "modeltiers",
        "CacheProfile": "cacheprofiles",
        "CascadePolicy": "cascadepolicies",
    }

    def create(obj: dict[str, Any]) -> None:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, obj["metadata"]["namespace"], plurals[obj["kind"]], obj
        )

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, objects))


def pod(namespace: str, index: int, copy: int) -> dict[str, Any]:
    """One of the pods policy ``p-<index>`` selects (never scheduled: the API only)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"app-{index:03d}-{copy}",
            "namespace": namespace,
            "labels": {"app": f"app-{index:03d}"},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
        },
    }


def create_pods(api: kubernetes.client.ApiClient, pods: list[dict[str, Any]]) -> None:
    core = kubernetes.client.CoreV1Api(api)

    def create(body: dict[str, Any]) -> None:
        for attempt in range(30):  # the namespace's default ServiceAccount may lag
            try:
                core.create_namespaced_pod(body["metadata"]["namespace"], body)
                return
            except kubernetes.client.ApiException as exc:
                if exc.status != 403 or attempt == 29:
                    raise
                time.sleep(1)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, pods))


def converged(api: kubernetes.client.ApiClient, expected: int) -> dict[str, bool]:
    core = kubernetes.client.CoreV1Api(api)
    custom = kubernetes.client.CustomObjectsApi(api)
    cms = core.list_config_map_for_all_namespaces(label_selector=POLICY_LABEL).items
    policies = custom.list_cluster_custom_object(GROUP, VERSION, "cascadepolicies")["items"]
    ready = 0
    for p in policies:
        status = p.get("status") or {}
        ok = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
        )
        ready += ok and status.get("observedGeneration") == p["metadata"]["generation"]
    return {"configmaps": len(cms) >= expected, "ready": ready >= expected}


def used_by_right(api: kubernetes.client.ApiClient, expected: dict[tuple[str, str], int]) -> bool:
    custom = kubernetes.client.CustomObjectsApi(api)
    tiers = custom.list_cluster_custom_object(GROUP, VERSION, "modeltiers")["items"]
    got = {
        (t["metadata"]["namespace"], t["metadata"]["name"]): (t.get("status") or {}).get("usedBy")
        for t in tiers
    }
    return all(got.get(k, 0) == v for k, v in expected.items()) and all(
        got.get(k) in (0, None) for k in got if k not in expected
    )


def events_since(core: kubernetes.client.CoreV1Api, since: float) -> dict[str, int]:
    """Events created after ``since`` (epoch seconds), by reason: none are expected idle."""
    found: Counter[str] = Counter()
    for event in core.list_event_for_all_namespaces().items:
        when = event.last_timestamp or event.event_time or event.metadata.creation_timestamp
        if when is not None and when.timestamp() >= since:
            found[f"{event.reason} ({event.involved_object.kind})"] += event.count or 1
    return dict(found)


def phase(
    name: str, plane: LocalControlPlane, op: Process, results: dict[str, Any]
) -> Callable[[dict[str, Any]], None]:
    """Start measuring a phase; call the returned function with its figures to close it."""
    before = request_counts(plane)
    cpu = op.cpu_seconds()
    started = time.monotonic()
    op.reset_peak()

    def close(figures: dict[str, Any]) -> None:
        requests = diff(request_counts(plane), before)
        results[name] = {
            **figures,
            "wall_seconds": round(time.monotonic() - started, 2),
            "operator_cpu_seconds": round(op.cpu_seconds() - cpu, 2),
            "operator_peak_rss_mb": round(op.peak_rss / 2**20, 1),
            "apiserver_requests": requests,
            "apiserver_writes": writes(requests),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        print(f"[{name}] {json.dumps(results[name])}", file=sys.stderr, flush=True)

    return close


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
    }
    workdir = Path(tempfile.mkdtemp(prefix="tierwise-scale-"))
    with LocalControlPlane(workdir / "controlplane").start() as plane:
        install_crds(Kubectl(plane.kubeconfig, find_tool("kubectl")), ROOT / "crds")
        api = kubernetes.config.new_client_from_config(str(plane.kubeconfig))
        core = kubernetes.client.CoreV1Api(api)
        counts = layout(args)
        for ns in counts:
            core.create_namespace({"metadata": {"name": ns}})
        tiers = [
            tier(ns, name, MODELS[j % len(MODELS)])
            for ns in counts
            for j, name in enumerate(tier_names(args))
        ]
        profiles = [profile(ns) for ns in counts]
        policies = [policy(ns, i, args) for ns, n in counts.items() for i in range(n)]
        used = expected_used_by(policies)
        time.sleep(2)  # let the controller-manager finish with the new namespaces
        pods = [
            pod(p["metadata"]["namespace"], int(p["metadata"]["name"][2:]), c)
            for p in policies
            for c in range(args.pods_per_policy)
        ]
        create_pods(api, pods)
        results["pods"] = len(pods)
        with operator(plane.kubeconfig, workdir / "operator.log", args.resync_seconds) as op:
            # 1. everything at once
            close = phase("apply", plane, op, results)
            started = time.monotonic()
            # Policies first: GitOps applies in any order, the worst case is refs arriving last.
            apply_at_once(api, [*policies, *tiers, *profiles])
            applied = time.monotonic() - started
            state: dict[str, float] = {}

            def all_done() -> bool:
                now = time.monotonic() - started
                got = converged(api, len(policies))
                for key, ok in got.items():
                    if ok and key not in state:
                        state[key] = now
                if "usedBy" not in state and used_by_right(api, used):
                    state["usedBy"] = now
                return len(state) == 3

            until(all_done, args.timeout, every=1.0)
            close(
                {
                    "objects": len(policies) + len(tiers) + len(profiles),
                    "apply_seconds": round(applied, 2),
                    "configmaps_seconds": state.get("configmaps"),
                    "ready_seconds": state.get("ready"),
                    "used_by_seconds": state.get("usedBy"),
                    "rss_mb_after": round(op.rss_bytes() / 2**20, 1),
                }
            )
            time.sleep(args.settle)

            # 2. a tier used by --shared policies changes model
            shared_ns = next(iter(counts))
            watch = ConfigMapWatch(api, shared_ns)
            old = {
                f"{shared_ns}/{cm.metadata.name}": cm.metadata.annotations[HASH_ANNOTATION]
                for cm in core.list_namespaced_config_map(
                    shared_ns, label_selector=POLICY_LABEL
                ).items
            }
            close = phase("tier_change", plane, op, results)
            custom = kubernetes.client.CustomObjectsApi(api)
            custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                shared_ns,
                "modeltiers",
                "shared",
                {"spec": {"model": "claude-haiku-4-5-20251001"}},
            )
            patched = time.monotonic()

            def all_changed() -> bool:
                return all(watch.first_change_after(k, patched, h) for k, h in old.items())

            until(all_changed, args.timeout, every=0.2)
            latencies = [
                when - patched
                for k, h in old.items()
                if (when := watch.first_change_after(k, patched, h)) is not None
            ]
            watch.stop()
            time.sleep(args.settle)
            close(
                {
                    "policies": len(old),
                    "rerendered": len(latencies),
                    "p50_seconds": round(percentile(latencies, 50), 3),
                    "p99_seconds": round(percentile(latencies, 99), 3),
                    "max_seconds": round(max(latencies), 3) if latencies else None,
                }
            )
            results["tier_change"]["writes_per_changed_policy"] = round(
                writes(
                    results["tier_change"]["apiserver_requests"],
                    {"configmaps", "cascadepolicies/status"},
                )
                / max(1, len(latencies)),
                2,
            )

            # 3. single policy edits, one after another
            watch = ConfigMapWatch(api, None)
            close = phase("policy_edits", plane, op, results)
            edit_latencies = []
            others = [ns for ns in counts if ns != shared_ns]
            for i in range(args.edits):
                ns = others[i % len(others)]
                name = f"p-{i // len(others):03d}"
                key = f"{ns}/tierwise-{name}"
                before_hash = core.read_namespaced_config_map(
                    f"tierwise-{name}", ns
                ).metadata.annotations[HASH_ANNOTATION]
                body = policy(ns, i // len(others), args)
                body["spec"]["routes"][0]["steps"][0]["maxTokens"] = 300 + i
                edited = time.monotonic()
                custom.patch_namespaced_custom_object(
                    GROUP, VERSION, ns, "cascadepolicies", name, {"spec": body["spec"]}
                )
                took = until(
                    lambda key=key, edited=edited, before_hash=before_hash: (
                        watch.first_change_after(key, edited, before_hash) is not None
                    ),
                    30,
                    every=0.01,
                )
                when = watch.first_change_after(key, edited, before_hash)
                if took is not None and when is not None:
                    edit_latencies.append(when - edited)
            watch.stop()
            time.sleep(args.settle)
            close(
                {
                    "edits": args.edits,
                    "landed": len(edit_latencies),
                    "p50_seconds": round(percentile(edit_latencies, 50), 3),
                    "p99_seconds": round(percentile(edit_latencies, 99), 3),
                    "max_seconds": round(max(edit_latencies), 3) if edit_latencies else None,
                }
            )
            results["policy_edits"]["writes_per_changed_policy"] = round(
                writes(
                    results["policy_edits"]["apiserver_requests"],
                    {"configmaps", "cascadepolicies/status"},
                )
                / max(1, len(edit_latencies)),
                2,
            )

            # 4. idle
            close = phase("idle", plane, op, results)
            idle_started = time.time()
            time.sleep(args.idle_minutes * 60)
            close(
                {
                    "minutes": args.idle_minutes,
                    "rss_mb": round(op.rss_bytes() / 2**20, 1),
                    "events": events_since(core, idle_started),
                }
            )
            idle = results["idle"]
            idle["writes_per_minute"] = round(idle["apiserver_writes"] / args.idle_minutes, 2)
            idle["operator_cpu_seconds_per_minute"] = round(
                idle["operator_cpu_seconds"] / args.idle_minutes, 2
            )
        results["operator_log_errors"] = sum(
            1 for line in (workdir / "operator.log").read_text().splitlines() if " ERROR " in line
        )
    return results


def markdown(results: dict[str, Any]) -> str:
    a, t, e, i = (results[k] for k in ("apply", "tier_change", "policy_edits", "idle"))
    s = results["settings"]
    lines = [
        f"{s['policies']} policies, {a['objects']} objects and {results['pods']} pods in "
        f"{s['namespaces']} namespaces; "
        f"resync every {s['resync_seconds']} s; {results['machine']['cpus']} CPUs (shared)",
        "",
        "| measure | result |",
        "|---|---|",
        f"| apply (client side, 16 threads) | {a['apply_seconds']} s |",
        f"| every ConfigMap exists | {a['configmaps_seconds']} s |",
        f"| every policy Ready | {a['ready_seconds']} s |",
        f"| every usedBy right | {a['used_by_seconds']} s |",
        f"| apply phase: operator CPU / API writes | {a['operator_cpu_seconds']} s / {a['apiserver_writes']} |",
        f"| tier change ({t['policies']} policies): p50 / p99 / max | {t['p50_seconds']} / {t['p99_seconds']} / {t['max_seconds']} s |",
        f"| tier change: re-rendered | {t['rerendered']} of {t['policies']} |",
        f"| tier change: writes per changed policy (ConfigMap + status) | {t['writes_per_changed_policy']} |",
        f"| tier change: operator CPU | {t['operator_cpu_seconds']} s |",
        f"| policy edit → ConfigMap: p50 / p99 / max ({e['landed']} of {e['edits']}) | {e['p50_seconds']} / {e['p99_seconds']} / {e['max_seconds']} s |",
        f"| policy edits: writes per changed policy | {e['writes_per_changed_policy']} |",
        f"| idle: API writes per minute | {i['writes_per_minute']} |",
        f"| idle: operator CPU per minute (load average at the end) | {i['operator_cpu_seconds_per_minute']} s ({i['load_average_1m']}) |",
        f"| operator RSS after apply / peak in apply / after idle | {a['rss_mb_after']} / {a['operator_peak_rss_mb']} / {i['rss_mb']} MB |",
        f"| ERROR lines in the operator log | {results['operator_log_errors']} |",
        "",
        "API server requests by phase (verb resource: count):",
        "",
    ]
    for name in ("apply", "tier_change", "policy_edits", "idle"):
        counts = ", ".join(f"{k}: {v}" for k, v in results[name]["apiserver_requests"].items())
        lines.append(f"- {name}: {counts or 'none'}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--tiers-per-namespace", type=int, default=5)
    parser.add_argument("--shared", type=int, default=100, help="policies using one tier")
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--pods-per-policy", type=int, default=2)
    parser.add_argument("--idle-minutes", type=float, default=10.0)
    parser.add_argument("--resync-seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0, help="pause between phases")
    parser.add_argument("--timeout", type=float, default=600.0, help="per phase")
    parser.add_argument("--quick", action="store_true", help="100 policies, 1 idle minute")
    parser.add_argument("--json", metavar="FILE", help="also write raw results here")
    args = parser.parse_args()
    if args.quick:
        args.policies, args.namespaces, args.shared = 100, 4, 40
        args.edits, args.idle_minutes = 10, 1.0
    results = run(args)
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

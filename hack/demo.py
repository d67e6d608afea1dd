"""`make demo`: Tierwise end to end on a local control plane, with no cluster and no API key.

1. start a local control plane (real kube-apiserver, etcd, controller-manager) and install the CRDs
2. start the model emulator (stands in for Anthropic's API) with the triage dataset
3. run the operator, with its sidecar-injection webhook registered with the API server
4. apply examples/ into an opted-in namespace; the operator renders the router config
5. create an app pod and show the sidecar the API server injected through the webhook
6. run the router with the config the operator rendered, as the sidecar would
7. replay the labelled support emails through it with the anthropic SDK
8. report requests, quality, escalation rate, cost versus all-strong, saving and latency
9. eval-gated rollout: a cost cut that hurts quality (Haiku trusted at any confidence) is
   rejected by its eval Job and the sidecar keeps its config
10. a safe cost cut is promoted by its eval Job and the running router reloads it
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import yaml

# The development harness (local control plane, kubelet stand-in) lives in tests/, outside
# the shipped package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from harness import LocalControlPlane
from harness.kubectl import Kubectl
from harness.podrunner import LOCAL_RUN_LABEL, PodRunner
from tierwise.pricing import Prices, Usage, cost_usd
from tierwise.render import CONFIG_KEY

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXAMPLES = ROOT / "examples" / "support-triage"
NAMESPACE = "support"
POLICY = "email-triage"
DEMO_KEY = "sk-demo-not-a-real-key"
STEPS = 10

# A long, stable system prompt: the part prompt caching is for.
GUIDELINES = "\n".join(
    f"Guideline {i}: when an email mentions {topic}, weigh it towards the label '{label}', "
    "unless the customer clearly asks about something else; never invent order numbers."
    for i, (topic, label) in enumerate(
        [
            ("a charge, invoice, refund, card or price", "billing"),
            ("a crash, an error code or something that stopped working", "bug"),
            ("logging in, passwords, two-factor codes, admins or deleting an account", "account"),
            ("a wish for something the product does not do yet", "feature-request"),
            ("anything else: offices, hiring, thanks, partnerships, opening hours", "other"),
        ]
        * 40,
        start=1,
    )
)
SYSTEM = "You triage the support inbox of a software company.\n" + GUIDELINES


class Progress:
    def __init__(self) -> None:
        self.step = 0
        self.started = time.perf_counter()

    @contextmanager
    def __call__(self, title: str) -> Iterator[Callable[[str], None]]:
        self.step += 1
        began = time.perf_counter()
        print(f"[{self.step}/{STEPS}] {title} ...", flush=True)
        yield lambda line: print(f"      {line}", flush=True)
        print(f"      done in {time.perf_counter() - began:.1f}s", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception:
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise SystemExit(f"demo failed: timed out waiting for {what}")


def start_process(
    stack: ExitStack, name: str, argv: list[str], logs: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    log = (logs / f"{name}.log").open("w")
    process = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env or dict(os.environ),
        start_new_session=True,
    )

    def stop() -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        log.close()

    stack.callback(stop)
    return process


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="requests in flight during the replay (default 8)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=20,
        help="emails sent twice, to show response-cache hits (default 20)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory with logs and kubeconfig"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tierwise-demo-"))
    logs = workdir / "logs"
    logs.mkdir()
    progress = Progress()
    print(f"Tierwise demo (work directory {workdir})\n", flush=True)
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, True)
        stack.callback(
            lambda: print(f"      logs: {logs}" if args.keep else "", end="", flush=True)
        )

        with progress(
            "Starting a local control plane: etcd, kube-apiserver, kube-controller-manager"
        ) as say:
            cluster = LocalControlPlane(workdir / "controlplane").start()
            stack.callback(cluster.stop)
            kubectl = Kubectl.for_kubeconfig(cluster.kubeconfig)
            kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
            version = json.loads(kubectl("version", "-o", "json").stdout)["serverVersion"][
                "gitVersion"
            ]
            say(f"kube-apiserver {version} at {cluster.server}; CRDs installed")
            # No nodes here: the kubelet stand-in runs the eval Jobs' pods as local processes.
            runner = PodRunner(cluster.kubeconfig, workdir=workdir / "pods").start()
            stack.callback(runner.stop)

        with progress("Starting the model emulator with the labelled support emails") as say:
            emulator_port = free_port()
            emulator_url = f"http://127.0.0.1:{emulator_port}"
            start_process(
                stack,
                "emulator",
                [
                    str(BIN / "tierwise"),
                    "emulator",
                    "--port",
                    str(emulator_port),
                    "--dataset",
                    str(EXAMPLES / "dataset.jsonl"),
                    "--api-key",
                    DEMO_KEY,
                ],
                logs,
            )
            wait_for(lambda: http_ok(f"{emulator_url}/_emulator/health"), "the emulator")
            say(f"emulator at {emulator_url} (Haiku 4.5, Sonnet 4.5, Opus 4.5 profiles)")

        with progress("Running the operator with its sidecar-injection webhook") as say:
            health = free_port()
            webhook = free_port()
            operator_env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
            start_process(
                stack,
                "operator",
                [
                    str(BIN / "tierwise"),
                    "operator",
                    "--standalone",
                    "--metrics-port",
                    "0",
                    "--health-port",
                    str(health),
                    "--webhook-manage",
                    "--webhook-address",
                    "127.0.0.1",
                    "--webhook-host",
                    "127.0.0.1",
                    "--webhook-port",
                    str(webhook),
                    "--resync-seconds",
                    "5",
                    # Eval Job pods carry the label the kubelet stand-in runs.
                    f"--eval-pod-label={LOCAL_RUN_LABEL}=true",
                ],
                logs,
                env=operator_env,
            )
            wait_for(
                lambda: http_ok(f"http://127.0.0.1:{health}/healthz"), "the operator", timeout=90
            )
            wait_for(
                lambda: kubectl(
                    "get", "mutatingwebhookconfigurations", "-o", "name", check=False
                ).stdout.strip(),
                "the webhook registration",
            )
            say("operator healthy; MutatingWebhookConfiguration registered with the API server")

        with progress(f"Applying examples/ into namespace {NAMESPACE!r}") as say:
            kubectl("create", "namespace", NAMESPACE)
            kubectl("label", "namespace", NAMESPACE, "tierwise.dev/injection=enabled")
            kubectl(
                "-n",
                NAMESPACE,
                "create",
                "secret",
                "generic",
                "anthropic-api-key",
                f"--from-literal=api-key={DEMO_KEY}",
            )
            # The examples point at api.anthropic.com; here every tier goes to the emulator.
            for path in sorted(EXAMPLES.glob("*.yaml")):
                for doc in yaml.safe_load_all(path.read_text()):
                    if doc and doc["kind"] == "ModelTier":
                        doc["spec"]["endpoint"] = emulator_url
                    if doc:
                        kubectl.apply(json.dumps(doc), namespace=NAMESPACE)
            config_map = f"tierwise-{POLICY}"

            def rendered_with_emulator() -> dict | None:
                data = kubectl.get_json("configmap", config_map, namespace=NAMESPACE)["data"][
                    CONFIG_KEY
                ]
                document = json.loads(data)
                return (
                    document
                    if all(t["endpoint"] == emulator_url for t in document["tiers"].values())
                    else None
                )

            document = wait_for(rendered_with_emulator, "the rendered router config")
            wait_for(
                lambda: (
                    "True"
                    in kubectl(
                        "-n",
                        NAMESPACE,
                        "get",
                        "cascadepolicy",
                        POLICY,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                    ).stdout
                ),
                "policy Ready",
            )
            wait_for(
                lambda: all(
                    any(c["type"] == "Ready" for c in t.get("status", {}).get("conditions", []))
                    for t in kubectl.get_json("modeltiers", namespace=NAMESPACE)["items"]
                ),
                "tier status",
            )
            say(f"ConfigMap {config_map} holds router config {document['hash'][:19]}…")
            for line in (
                kubectl("get", "tierwise", namespace=NAMESPACE).stdout.rstrip().splitlines()
            ):
                say(line)

        with progress("Creating an app pod; the API server calls the webhook") as say:
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "support-inbox", "labels": {"app": "support-inbox"}},
                "spec": {"containers": [{"name": "app", "image": "example.com/support-inbox:1.0"}]},
            }
            kubectl.apply(json.dumps(pod), namespace=NAMESPACE)
            stored = kubectl.get_json("pod", "support-inbox", namespace=NAMESPACE)
            sidecars = [
                c
                for c in stored["spec"].get("initContainers", [])
                if c.get("restartPolicy") == "Always"
            ]
            if not sidecars:
                raise SystemExit("demo failed: the pod was not injected with the router sidecar")
            sidecar = sidecars[0]
            app_env = {
                e["name"]: e.get("value") for e in stored["spec"]["containers"][0].get("env", [])
            }
            say(
                f"native sidecar {sidecar['name']!r} (restartPolicy Always): {' '.join(sidecar.get('args') or sidecar.get('command') or [])}"
            )
            for env in sidecar.get("env", []):
                if "valueFrom" in env:
                    ref = env["valueFrom"]["secretKeyRef"]
                    say(f"  env {env['name']} <- secret {ref['name']}/{ref['key']}")
            mounts = ", ".join(f"{m['mountPath']}" for m in sidecar.get("volumeMounts", []))
            say(
                f"  mounts {mounts}; app container gets ANTHROPIC_BASE_URL={app_env.get('ANTHROPIC_BASE_URL')}"
            )

        with progress("Running the router with the operator's config, as the sidecar does") as say:
            config_file = workdir / CONFIG_KEY
            config_file.write_text(
                kubectl.get_json("configmap", config_map, namespace=NAMESPACE)["data"][CONFIG_KEY]
            )
            router_port, metrics_port = free_port(), free_port()
            # Keys come from the Secret through secretKeyRef in the pod; here, from the same value.
            router_env = {
                **os.environ,
                **{t["apiKeyEnv"]: DEMO_KEY for t in document["tiers"].values() if t["apiKeyEnv"]},
            }
            start_process(
                stack,
                "router",
                [
                    str(BIN / "tierwise"),
                    "router",
                    "--config",
                    str(config_file),
                    "--port",
                    str(router_port),
                    "--metrics-port",
                    str(metrics_port),
                ],
                logs,
                env=router_env,
            )
            wait_for(lambda: http_ok(f"http://127.0.0.1:{metrics_port}/readyz"), "the router")
            say(f"router at http://127.0.0.1:{router_port}, metrics at :{metrics_port}")

        with progress(
            "Replaying the triage dataset through the router with the anthropic SDK"
        ) as say:
            items = [
                json.loads(line)
                for line in (EXAMPLES / "dataset.jsonl").read_text().splitlines()
                if line.strip()
            ]
            batch = items + items[: args.repeats]
            results = asyncio.run(
                replay(f"http://127.0.0.1:{router_port}", batch, args.concurrency, say)
            )

        with progress("Report") as say:
            for line in report(results, document):
                say(line)

        with progress("Eval-gated rollout: a cost cut that hurts quality") as say:
            before = document["hash"]
            say("patch: trust Haiku's answer whatever its confidence (threshold 0.9 -> 0)")
            decision = change_threshold(kubectl, 0, before)
            kept = read_config_hash(kubectl, config_map)
            say(decision_line(decision) + f"; the sidecar keeps config {kept[:19]}")
            if decision["rollout"]["phase"] != "Rejected" or kept != before:
                raise SystemExit("demo failed: the degrading change was not rejected")

        with progress("Eval-gated rollout: a safe cost cut") as say:
            say("patch: escalate below confidence 0.85 instead of 0.9")
            decision = change_threshold(kubectl, 0.85, before)
            promoted = decision["candidateHash"]
            if decision["rollout"]["phase"] != "Promoted":
                raise SystemExit(f"demo failed: the safe change was {decision['rollout']}")
            data = wait_for(
                lambda: (
                    read_config_hash(kubectl, config_map) == promoted
                    and kubectl.get_json("configmap", config_map, namespace=NAMESPACE)["data"][
                        CONFIG_KEY
                    ]
                ),
                "the promoted ConfigMap",
            )
            config_file.write_text(data)  # the kubelet refreshes the sidecar's mounted file
            wait_for(
                lambda: promoted.split(":")[1][:12] in metrics_text(metrics_port),
                "the router's reload",
            )
            say(decision_line(decision) + f"; the router reloaded config {promoted[:19]}")
            for line in kubectl("get", "cascadepolicy", namespace=NAMESPACE).stdout.splitlines():
                say(line)
    total = time.perf_counter() - progress.started
    print(f"\nDemo finished in {total:.0f}s.", flush=True)
    return 0


THRESHOLD_PATH = "/spec/routes/0/steps/0/escalateWhen/2/threshold"


def change_threshold(kubectl: Kubectl, value: float, promoted: str) -> dict[str, Any]:
    """Patch the triage confidence threshold; the policy status once its eval decided."""
    patch = [{"op": "replace", "path": THRESHOLD_PATH, "value": value}]
    before = kubectl.get_json("cascadepolicy", POLICY, namespace=NAMESPACE).get("status", {})
    earlier = {promoted, before.get("candidateHash")}  # not the config this patch replaces
    kubectl(
        "patch", "cascadepolicy", POLICY, "--type=json", "-p", json.dumps(patch),
        namespace=NAMESPACE,
    )  # fmt: skip

    def decided() -> dict[str, Any] | None:
        status = kubectl.get_json("cascadepolicy", POLICY, namespace=NAMESPACE).get("status", {})
        rollout = status.get("rollout") or {}
        candidate = status.get("candidateHash")
        if candidate and candidate not in earlier and rollout.get("decidedHash") == candidate:
            return status
        return None

    return wait_for(decided, "the eval Job's decision", timeout=180)


def decision_line(status: dict[str, Any]) -> str:
    last = status.get("lastEval") or {}
    reasons = "; ".join(last.get("reasons") or [status["rollout"].get("message", "")])
    return (
        f"{status['rollout']['phase'].lower()}: quality {last.get('quality')} vs baseline "
        f"{last.get('baselineQuality')}, cost/item {last.get('costPerItem')} vs "
        f"{last.get('baselineCostPerItem')} (saving {last.get('saving')}), escalation "
        f"{last.get('escalationRate')}, {last.get('graded')} items graded by Job "
        f"{last.get('job')} -- {reasons}"
    )


def read_config_hash(kubectl: Kubectl, config_map: str) -> str:
    cm = kubectl.get_json("configmap", config_map, namespace=NAMESPACE)
    return str(cm["metadata"]["annotations"]["tierwise.dev/config-hash"])


def metrics_text(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError):
        return ""


async def replay(
    base_url: str, items: list[dict[str, str]], concurrency: int, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    client = anthropic.AsyncAnthropic(
        base_url=base_url, api_key="app-key-never-forwarded", max_retries=0
    )
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(item: dict[str, str]) -> dict[str, Any]:
        nonlocal done
        async with gate:
            started = time.perf_counter()
            raw = await client.messages.with_raw_response.create(
                model="tierwise/triage",
                max_tokens=1024,
                # Triage answers may be reused for identical emails: opt in to the response
                # cache per request (it caches only deterministic requests by default).
                extra_headers={"x-tierwise-cache": "allow"},
                system=SYSTEM,
                messages=[{"role": "user", "content": item["input"]}],
            )
            elapsed = time.perf_counter() - started
            message = await raw.parse()
            done += 1
            if done % 50 == 0 or done == len(items):
                say(f"{done}/{len(items)} answered")
            text = "".join(b.text for b in message.content if b.type == "text")
            try:
                label = json.loads(text).get("label")
            except (ValueError, AttributeError):
                label = None
            return {
                "label": item["label"],
                "answer": label,
                "tier": raw.headers.get("x-tierwise-tier"),
                "escalations": int(raw.headers.get("x-tierwise-escalations", "0")),
                "cost": Decimal(raw.headers.get("x-tierwise-cost-usd", "0")),
                "cache": raw.headers.get("x-tierwise-cache"),
                "usage": Usage.from_anthropic(message.usage),
                "seconds": elapsed,
            }

    try:
        return await asyncio.gather(*(one(item) for item in items))
    finally:
        await client.close()


def report(results: list[dict[str, Any]], document: dict[str, Any]) -> list[str]:
    route = next(r for r in document["routes"] if r["name"] == "triage")
    strongest = Prices.from_document(document["tiers"][route["counterfactualTier"]]["pricing"])
    cascade = sum((r["cost"] for r in results), Decimal(0))
    # What the same answers would have cost had every request gone straight to the strongest tier.
    all_strong = sum((cost_usd(r["usage"], strongest) for r in results), Decimal(0))
    served = [r for r in results if r["cache"] != "hit"]
    escalated = sum(1 for r in served if r["escalations"])
    correct = sum(1 for r in results if r["answer"] == r["label"])
    seconds = sorted(r["seconds"] * 1000 for r in results)
    cache = Counter(r["cache"] for r in results)
    tiers = Counter(r["tier"] for r in served)
    saving = all_strong - cascade
    p95 = seconds[max(0, round(0.95 * len(seconds)) - 1)]
    upstream = [r["usage"] for r in served]
    prompt = sum(u.prompt_tokens for u in upstream)
    read = sum(u.cache_read_input_tokens for u in upstream)
    written = sum(u.cache_creation_input_tokens for u in upstream)
    return [
        f"requests            {len(results)} ({cache.get('hit', 0)} served from the response cache)",
        "answered by         " + ", ".join(f"{tier} {n}" for tier, n in tiers.most_common()),
        f"escalation rate     {escalated / len(served):.1%} of upstream requests went on to {route['steps'][-1]['tier']}",
        f"quality             {correct / len(results):.1%} of labels correct",
        f"prompt cache        {read / prompt:.1%} of final-step prompt tokens read from cache ({written:,} written)",
        f"cost (cascade)      ${cascade:.4f}",
        f"cost (all-strong)   ${all_strong:.4f} on {route['counterfactualTier']}",
        f"saving              ${saving:.4f} ({saving / all_strong:.1%} cut)"
        if all_strong
        else "saving              n/a",
        f"latency             p50 {statistics.median(seconds):.0f} ms, p95 {p95:.0f} ms",
    ]


if __name__ == "__main__":
    sys.exit(main())

"""The injected router sidecar on a real kubelet, from the real image.

An app pod in an opted-in namespace (enforcing the restricted Pod Security Standard) gets the
native sidecar from the webhook served by an operator pod; the kubelet starts the app only
once the sidecar's startup probe passed; the app, the official ``anthropic`` SDK in the pod,
calls ``ANTHROPIC_BASE_URL`` and is answered through the triage cascade by the emulator pod
behind its Service. Then the eval gate: a degrading change is Rejected and a safe one Promoted,
each by an eval Job run as a real pod, and the promoted config reaches the running router
through the kubelet's ConfigMap volume update.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from e2e_cluster import (
    CONFIG_MAP,
    EXAMPLES,
    POLICY,
    THRESHOLD_PATH,
    Triage,
    eventually,
    final_decision,
    ready,
    restricted_container_security,
)

from harness.kubectl import Kubectl
from tierwise.controller.names import METRICS_PORT, SIDECAR_NAME
from tierwise.routerconfig import sidecar as sidecar_contract

pytestmark = pytest.mark.e2e

ITEMS = 40

# The app: the official SDK, pointed at the sidecar by the injected ANTHROPIC_BASE_URL only.
# max_retries=0: the very first call, made the moment the app starts, must succeed.
APP = """
import json, os, time, anthropic
client = anthropic.Anthropic(api_key="app-key-never-forwarded", max_retries=0)
started = time.time()
results = []
for text in json.loads(os.environ["ITEMS"]):
    raw = client.messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=256,
        system="You triage the support inbox of a software company.",
        messages=[{"role": "user", "content": text}],
    )
    message = raw.parse()
    answer = json.loads("".join(b.text for b in message.content if b.type == "text"))
    results.append({"label": answer.get("label"), "route": raw.headers.get("x-tierwise-route"),
                    "tier": raw.headers.get("x-tierwise-tier"),
                    "escalations": int(raw.headers.get("x-tierwise-escalations", "0"))})
print(json.dumps({"base_url": os.environ.get("ANTHROPIC_BASE_URL"), "started": started,
                  "results": results}))
"""


def dataset() -> list[dict[str, str]]:
    lines = (EXAMPLES / "dataset.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def app_pod(name: str, image: str, command: list[str], env: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "support-inbox"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "app",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "env": [{"name": k, "value": v} for k, v in env.items()],
                    "securityContext": restricted_container_security(),
                }
            ],
        },
    }


def create(kubectl: Kubectl, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
    kubectl("create", "-f", "-", input=json.dumps(pod), namespace=namespace)
    return kubectl.get_json("pod", pod["metadata"]["name"], namespace=namespace)


def status_of(pod: dict[str, Any], name: str) -> dict[str, Any]:
    statuses = pod["status"].get("initContainerStatuses", []) + pod["status"].get(
        "containerStatuses", []
    )
    return next(s for s in statuses if s["name"] == name)


def started_at(status: dict[str, Any]) -> str:
    state = status["state"]
    return (state.get("running") or state.get("terminated"))["startedAt"]


def phase(kubectl: Kubectl, namespace: str, name: str) -> Callable[[], str | None]:
    def check() -> str | None:
        pod = kubectl.get_json("pod", name, namespace=namespace)
        value = pod["status"].get("phase")
        return value if value in ("Succeeded", "Failed") else None

    return check


def test_app_is_answered_through_the_cascade_by_the_emulator_pod(
    triage: Triage, kubectl: Kubectl
) -> None:
    """Native sidecar injected by the webhook pod, Ready before the app; SDK answered."""
    items = dataset()[:ITEMS]
    pod = app_pod(
        "inbox",
        triage.image,
        ["python3", "-c", APP],
        {"ITEMS": json.dumps([i["input"] for i in items])},
    )
    stored = create(kubectl, triage.namespace, pod)
    sidecars = [
        c for c in stored["spec"].get("initContainers", []) if c.get("restartPolicy") == "Always"
    ]
    assert [c["name"] for c in sidecars] == [SIDECAR_NAME], stored["spec"]

    final = eventually(phase(kubectl, triage.namespace, "inbox"), "the app pod to finish", 180)
    logs = kubectl("logs", "inbox", "-c", "app", namespace=triage.namespace).stdout
    assert final == "Succeeded", logs
    report = json.loads(logs.strip().splitlines()[-1])
    assert report["base_url"] == "http://127.0.0.1:8787"
    results = report["results"]
    assert len(results) == ITEMS
    assert {r["route"] for r in results} == {"triage"}
    # A cascade: most answered by the first tier, the unsure ones escalated to the second.
    tiers = {r["tier"] for r in results}
    assert "haiku" in tiers and "sonnet" in tiers, results
    assert any(r["escalations"] > 0 for r in results)
    correct = sum(r["label"] == i["label"] for r, i in zip(results, items, strict=True))
    assert correct >= ITEMS * 0.8, results

    done = kubectl.get_json("pod", "inbox", namespace=triage.namespace)
    sidecar, app = status_of(done, SIDECAR_NAME), status_of(done, "app")
    # The kubelet started the app only after the sidecar's startup probe passed.
    assert started_at(sidecar) <= started_at(app)
    assert sidecar["restartCount"] == 0
    assert app["state"]["terminated"]["exitCode"] == 0


def router_config_hash(kubectl: Kubectl, namespace: str, pod: str) -> str | None:
    """The config hash the running router reports on /metrics, read from inside its pod."""
    script = (
        "import urllib.request\n"
        f"print(urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/metrics').read().decode())"
    )
    result = kubectl(
        "exec", pod, "-c", SIDECAR_NAME, "--", "python3", "-c", script,
        namespace=namespace, check=False,
    )  # fmt: skip
    for line in result.stdout.splitlines():
        if line.startswith("tierwise_router_config_info{") and line.endswith(" 1.0"):
            return line.split('hash="', 1)[1].split('"', 1)[0]
    return None


def config_map_hash(kubectl: Kubectl, namespace: str) -> str:
    cm = kubectl.get_json("configmap", CONFIG_MAP, namespace=namespace)
    return str(cm["metadata"]["annotations"]["tierwise.dev/config-hash"])


def change_threshold(kubectl: Kubectl, namespace: str, value: float) -> dict[str, Any]:
    """Patch the triage confidence threshold; the policy status once its eval decided."""
    before = kubectl.get_json("cascadepolicy", POLICY, namespace=namespace).get("status", {})
    earlier = {before.get("candidateHash"), (before.get("rollout") or {}).get("decidedHash")}
    patch = [{"op": "replace", "path": THRESHOLD_PATH, "value": value}]
    kubectl(
        "patch", "cascadepolicy", POLICY, "--type=json", "-p", json.dumps(patch),
        namespace=namespace,
    )  # fmt: skip

    def decided() -> dict[str, Any] | None:
        status = kubectl.get_json("cascadepolicy", POLICY, namespace=namespace).get("status", {})
        candidate = status.get("candidateHash")
        if candidate not in earlier and final_decision(status, candidate):
            return status
        return None

    return eventually(decided, "the eval Job's decision", timeout=300, every=2)


def timestamp(text: str) -> dt.datetime:
    """RFC 3339 with up to nanoseconds (the kubelet's log timestamps) -> aware datetime."""
    text = text.rstrip("Z")
    if "." in text:
        whole, fraction = text.split(".", 1)
        text = f"{whole}.{fraction[:6]}"
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def update_time(kubectl: Kubectl, namespace: str) -> dt.datetime:
    """When the ConfigMap was last written (the API server's record, 1 s resolution)."""
    out = kubectl(
        "get", "configmap", CONFIG_MAP, "-o", "json", "--show-managed-fields",
        namespace=namespace,
    ).stdout  # fmt: skip
    fields = json.loads(out)["metadata"]["managedFields"]
    return max(timestamp(f["time"]) for f in fields)


def reload_time(kubectl: Kubectl, namespace: str, config_hash: str) -> dt.datetime:
    """When the running router logged loading ``config_hash`` (the kubelet's log timestamp)."""
    logs = kubectl(
        "logs", "resident", "-c", SIDECAR_NAME, "--timestamps", namespace=namespace
    ).stdout
    line = next(
        li for li in logs.splitlines() if "config reloaded: policy" in li and config_hash in li
    )
    return timestamp(line.split(" ", 1)[0])


def eval_pod_message(kubectl: Kubectl, namespace: str, job: str) -> dict[str, Any]:
    """The eval pod's termination message as the kubelet recorded it, and how it ran."""
    (pod,) = kubectl.get_json("pods", "-l", f"job-name={job}", namespace=namespace)["items"]
    (status,) = pod["status"]["containerStatuses"]
    return {"pod": pod, "terminated": status["state"]["terminated"]}


def test_gated_changes_run_eval_pods_and_the_promoted_config_reaches_the_running_router(
    triage: Triage, kubectl: Kubectl
) -> None:
    """Rejected, then Promoted, each decided from a real eval pod's termination message
    (restricted pod security enforced in the namespace); the promoted ConfigMap reaches the
    running sidecar through the kubelet's volume update (timed)."""
    namespace = triage.namespace
    create(
        kubectl,
        namespace,
        app_pod("resident", triage.image, ["python3", "-c", "import time; time.sleep(3600)"], {}),
    )
    eventually(
        lambda: ready(kubectl.get_json("pod", "resident", namespace=namespace)),
        "the resident app pod Ready",
        timeout=120,
    )
    promoted = config_map_hash(kubectl, namespace)
    assert router_config_hash(kubectl, namespace, "resident") == promoted

    rejected = change_threshold(kubectl, namespace, 0)
    assert rejected["rollout"]["phase"] == "Rejected", rejected
    job = rejected["lastEval"]["job"]
    ran = eval_pod_message(kubectl, namespace, job)
    assert ran["terminated"]["exitCode"] == 0 and ran["terminated"]["message"], ran
    security = ran["pod"]["spec"]["containers"][0]["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    # The operator's verdict is the one the pod wrote where the kubelet reads it.
    written_summary = json.loads(ran["terminated"]["message"])
    assert written_summary["decision"] == "Rejected"
    assert written_summary["candidateHash"] == rejected["candidateHash"]
    assert config_map_hash(kubectl, namespace) == promoted
    assert router_config_hash(kubectl, namespace, "resident") == promoted

    accepted = change_threshold(kubectl, namespace, 0.85)
    assert accepted["rollout"]["phase"] == "Promoted", accepted
    summary = json.loads(
        eval_pod_message(kubectl, namespace, accepted["lastEval"]["job"])["terminated"]["message"]
    )
    assert summary["decision"] == "Promoted"
    candidate = accepted["candidateHash"]
    eventually(lambda: config_map_hash(kubectl, namespace) == candidate, "the promoted ConfigMap")
    eventually(
        lambda: router_config_hash(kubectl, namespace, "resident") == candidate,
        "the running router on the promoted config",
        timeout=150,
        every=1,
    )
    seconds = (
        reload_time(kubectl, namespace, candidate) - update_time(kubectl, namespace)
    ).total_seconds()
    print(f"\nConfigMap update reached the running router in {seconds:.1f}s")
    # syncFrequency is 10 s on this node; the kubelet's default (1 min) plus its cache TTL
    # would take up to ~75 s.
    assert seconds < 60


# A request body of exactly the router's limit (one long user message), sent from the app
# container to the sidecar; prints the HTTP status.
MAXIMAL_BODY = """
import json, urllib.error, urllib.request
limit = int(LIMIT)
head = {"model": "tierwise/triage", "max_tokens": 16,
        "messages": [{"role": "user", "content": ""}]}
empty = len(json.dumps(head).encode())
head["messages"][0]["content"] = "Email #001: " + "x" * (limit - empty - len("Email #001: "))
body = json.dumps(head).encode()
assert len(body) == limit, len(body)
request = urllib.request.Request("http://127.0.0.1:8787/v1/messages", data=body, method="POST",
    headers={"content-type": "application/json", "x-api-key": "app-key",
             "anthropic-version": "2023-06-01"})
try:
    with urllib.request.urlopen(request, timeout=120) as response:
        print(response.status)
except urllib.error.HTTPError as err:
    print(err.code)
"""

PEAK_RSS = "print(next(l for l in open('/proc/1/status') if l.startswith('VmHWM')).split()[1])"


def test_router_peak_memory_for_a_maximal_body_stays_under_the_sidecar_limit(
    triage: Triage, kubectl: Kubectl
) -> None:
    namespace = triage.namespace
    if kubectl("get", "pod", "resident", namespace=namespace, check=False).returncode != 0:
        create(kubectl, namespace, app_pod("resident", triage.image, ["sleep", "3600"], {}))
    eventually(
        lambda: ready(kubectl.get_json("pod", "resident", namespace=namespace)),
        "the resident app pod Ready",
        timeout=120,
    )
    pod = kubectl.get_json("pod", "resident", namespace=namespace)
    (sidecar,) = [c for c in pod["spec"]["initContainers"] if c["name"] == SIDECAR_NAME]
    limit = parse_quantity(sidecar["resources"]["limits"]["memory"])
    script = MAXIMAL_BODY.replace("LIMIT", str(sidecar_contract.MAX_BODY_BYTES))
    status = kubectl(
        "exec", "resident", "-c", "app", "--", "python3", "-c", script,
        namespace=namespace, timeout=300,
    ).stdout.strip()  # fmt: skip
    assert status and int(status) < 500, status
    peak_kib = int(
        kubectl(
            "exec",
            "resident",
            "-c",
            SIDECAR_NAME,
            "--",
            "python3",
            "-c",
            PEAK_RSS,
            namespace=namespace,
        ).stdout
    )
    peak = peak_kib * 1024
    print(
        f"\nrouter peak RSS {peak / 2**20:.0f} MiB for a {sidecar_contract.MAX_BODY_BYTES} B body, limit {limit / 2**20:.0f} MiB"
    )
    assert peak < limit
    after = status_of(kubectl.get_json("pod", "resident", namespace=namespace), SIDECAR_NAME)
    assert (after["restartCount"] == 0 and "lastState" not in after) or not after["lastState"], (
        after
    )


def parse_quantity(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)

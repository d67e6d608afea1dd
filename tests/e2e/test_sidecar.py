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

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from e2e_cluster import (
    API_KEY,
    EXAMPLES,
    Emulator,
    Release,
    eventually,
    new_namespace,
    restricted_container_security,
)

from harness.kubectl import Kubectl
from tierwise.controller.names import SIDECAR_NAME
from tierwise.routerconfig.defaults import CONFIG_KEY

pytestmark = pytest.mark.e2e

POLICY = "email-triage"
CONFIG_MAP = f"tierwise-{POLICY}"
THRESHOLD_PATH = "/spec/routes/0/steps/0/escalateWhen/2/threshold"
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


@dataclass(frozen=True)
class Triage:
    namespace: str
    image: str


@pytest.fixture(scope="module")
def triage(tierwise: Release, emulator: Emulator, kubectl: Kubectl) -> Triage:
    """An opted-in namespace under restricted pod security with the example policy, whose
    tiers all point at the emulator's Service."""
    namespace = new_namespace(
        kubectl,
        "triage",
        {
            "tierwise.dev/injection": "enabled",
            "pod-security.kubernetes.io/enforce": "restricted",
        },
    )
    kubectl(
        "create", "secret", "generic", "anthropic-api-key", f"--from-literal=api-key={API_KEY}",
        namespace=namespace,
    )  # fmt: skip
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "ModelTier":
                doc["spec"]["endpoint"] = emulator.url
            if doc:
                kubectl.apply(json.dumps(doc), namespace=namespace)

    def rendered() -> bool:
        cm = kubectl("get", "configmap", CONFIG_MAP, "-o", "json", namespace=namespace, check=False)
        if cm.returncode != 0:
            return False
        document = json.loads(json.loads(cm.stdout)["data"][CONFIG_KEY])
        return all(t["endpoint"] == emulator.url for t in document["tiers"].values())

    eventually(rendered, "the policy's router config, pointing at the emulator", timeout=120)
    return Triage(namespace, tierwise.image)


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

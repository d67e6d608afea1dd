"""The chart installed with ``helm install`` and the real image, on a real kubelet.

What the pod runner cannot show: the probes the kubelet runs pass, the restricted security
context holds in a real container (non-root UID, read-only root filesystem), and the two
replicas find each other through kopf peering under their pod names, and exactly one acts.
"""

from __future__ import annotations

import time

import pytest
from e2e_cluster import Release, eventually, pods, ready

from harness.kubectl import Kubectl

pytestmark = pytest.mark.e2e


def operator_pods(kubectl: Kubectl, release: Release) -> list[dict]:
    return pods(kubectl, release.namespace, release.selector)


def test_both_operator_replicas_are_ready_through_their_probes(
    tierwise: Release, kubectl: Kubectl
) -> None:
    replicas = operator_pods(kubectl, tierwise)
    assert len(replicas) == 2 and all(ready(p) for p in replicas)
    for pod in replicas:
        container = pod["spec"]["containers"][0]
        # Ready comes from the kubelet running these probes, not from a stand-in's say-so.
        assert {"readinessProbe", "livenessProbe"} <= container.keys()
        status = pod["status"]["containerStatuses"][0]
        assert status["ready"] and status["restartCount"] == 0, status
        assert status["imageID"], status  # a real image from the node's runtime
    # The kubelet's probes keep passing: no restart and still Ready a few periods later.
    time.sleep(12)
    again = operator_pods(kubectl, tierwise)
    assert all(ready(p) for p in again)
    assert [p["status"]["containerStatuses"][0]["restartCount"] for p in again] == [0, 0]


def test_operator_runs_non_root_on_a_read_only_root_filesystem(
    tierwise: Release, kubectl: Kubectl
) -> None:
    pod = operator_pods(kubectl, tierwise)[0]["metadata"]["name"]
    probe = (
        "import os, pathlib\n"
        "print(os.getuid(), os.getgid())\n"
        "try:\n"
        "    pathlib.Path('/opt/tierwise/written').write_text('x')\n"
        "    print('root writable')\n"
        "except OSError as err:\n"
        "    print('root', err.strerror)\n"
        "pathlib.Path('/tmp/written').write_text('x')\n"
        "print('tmp writable')\n"
    )
    out = kubectl("exec", pod, "--", "python3", "-c", probe, namespace=tierwise.namespace).stdout
    assert out.splitlines() == ["65532 65532", "root Read-only file system", "tmp writable"]


def acting(log: str) -> bool:
    """Whether a replica acts, from its log: kopf starts a peered replica paused, then logs
    "Resuming operations" when no live peer has a higher priority, "Pausing operations" when
    one appears."""
    state = False
    for line in log.splitlines():
        if "Resuming operations" in line:
            state = True
        elif "Pausing operations" in line:
            state = False
    return state


def test_replicas_peer_under_their_pod_names_and_exactly_one_acts(
    tierwise: Release, kubectl: Kubectl
) -> None:
    names = sorted(p["metadata"]["name"] for p in operator_pods(kubectl, tierwise))
    status = kubectl.get_json("clusterkopfpeering", "tierwise").get("status", {})
    assert sorted(status) == names
    highest = max(names, key=lambda name: status[name]["priority"])

    def actors() -> list[str] | None:
        logs = {n: kubectl("logs", n, namespace=tierwise.namespace).stdout for n in names}
        found = [n for n, log in logs.items() if acting(log)]
        return found if len(found) == 1 else None

    assert eventually(actors, "exactly one replica acting", timeout=60) == [highest]

"""The node leaves the host as it found it, even when it crashed.

Runs last (the conftest orders it so): it kills the kubelet and containerd as a crash would,
stops the node with ``hack/node.sh down``, and compares the host's interfaces, addresses,
routes, iptables and nftables rules, sysctls and mounts with the snapshot taken before
``hack/node.sh up``. The node's namespaces held its bridge, pod IPs, iptables rules and bind
mounts; none of them may have reached the host.
"""

from __future__ import annotations

import difflib
import os
import signal
from pathlib import Path

import pytest
from e2e_cluster import Node

pytestmark = pytest.mark.e2e


def pids_in(node: Node) -> list[int]:
    env = (node.state / "node.env").read_text()
    cgroup = next(
        line.split("=", 1)[1] for line in env.splitlines() if line.startswith("CGROUP_ROOT=")
    )
    found: set[int] = set()
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        root = hierarchy / cgroup
        for procs in root.rglob("cgroup.procs") if root.is_dir() else ():
            found |= {int(p) for p in procs.read_text().split()}
    return sorted(found)


def test_node_down_after_a_crash_leaves_the_host_unchanged(node: Node) -> None:
    assert node.host_before, "no snapshot of the host before the node started"
    env = (node.state / "node.env").read_text()
    cgroup = next(
        line.split("=", 1)[1] for line in env.splitlines() if line.startswith("CGROUP_ROOT=")
    )
    assert pids_in(node), "the node runs no process: nothing to crash"
    # A crash: the kubelet and containerd die without cleaning up after themselves.
    for name in ("kubelet", "containerd"):
        os.kill(int((node.state / f"{name}.pid").read_text()), signal.SIGKILL)

    node.sh("down")

    after = node.snapshot()
    diff = "".join(
        difflib.unified_diff(
            node.host_before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            "before up",
            "after down",
        )
    )
    assert diff == "", diff
    assert not [h for h in Path("/sys/fs/cgroup").iterdir() if (h / cgroup).exists()]
    assert pids_in(node) == []

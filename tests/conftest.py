"""Shared fixtures: a real local control plane (etcd + kube-apiserver + controller-manager).

Nothing here costs a unit test anything: the control plane starts only when a test requests
``controlplane`` (directly or through another fixture), once per session. Such tests are
marked ``controlplane`` automatically, so ``pytest -m "not controlplane"`` skips them all.

Fixtures (see each docstring):

- ``controlplane`` -> :class:`harness.LocalControlPlane`, CRDs from ``crds/``
  installed and Established
- ``kubectl`` -> :class:`Kubectl`: ``kubectl("get", "ns")``, ``kubectl.apply(yaml_or_path)``,
  ``kubectl.get_json(...)``, ``kubectl.as_kubeconfig(path)``
- ``apply`` -> ``kubectl.apply``
- ``namespace`` -> a fresh namespace name, deleted after the test
- ``api_client`` -> admin ``kubernetes.client.ApiClient``
- ``user_kubeconfig(user, groups=(), namespace=None) -> Path`` -> a minted client certificate
- ``user_api_client(user, groups=()) -> ApiClient`` -> a client acting as that identity
- ``service_account_kubeconfig(namespace, name) -> Path`` -> a bound ServiceAccount token
- ``pod_runner`` -> :class:`harness.podrunner.PodRunner` (kubelet stand-in)
- ``helm`` -> ``helm(*args) -> CompletedProcess`` against the control plane
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness.kubectl import Kubectl, find_tool, install_crds

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from harness import LocalControlPlane
    from harness.podrunner import PodRunner

REPO_ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = REPO_ROOT / "crds"
CONTROLPLANE_FIXTURE = "controlplane"


# -- collection: mark and pre-build -------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--image",
        action="store_true",
        help="also run the container image tests (tests/image: buildah build, podman run)",
    )
    parser.addoption(
        "--e2e",
        action="store_true",
        help="run the end-to-end tests on a real node (tests/e2e; make e2e)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs the control plane, whatever its folder.

    Image tests are deselected (not skipped) unless ``--image`` is given: they build the
    container image, which takes minutes on a fresh machine; ``make test-image`` runs them.
    End-to-end tests (a real node) likewise need ``--e2e``; ``make e2e`` runs them.
    """
    for item in items:
        if CONTROLPLANE_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.controlplane)
    for marker, option in (("image", "--image"), ("e2e", "--e2e")):
        if config.getoption(option):
            continue
        deselected = [i for i in items if i.get_closest_marker(marker)]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [i for i in items if not i.get_closest_marker(marker)]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries before any test runs, outside every test's timeout.

    A cold build takes minutes; ``make test`` has already done it (``make controlplane``),
    but a bare ``pytest`` on a fresh machine must not blow the first test's timeout.
    """
    if session.config.option.collectonly:
        return
    if not any(CONTROLPLANE_FIXTURE in getattr(i, "fixturenames", ()) for i in session.items):
        return
    from harness import BinariesUnavailable, ensure_binaries

    try:
        ensure_binaries(REPO_ROOT)
    except BinariesUnavailable as err:
        # Let the other tests run; the `controlplane` fixture raises the same error, so every
        # control-plane test errors (never skips) with this reason.
        print(f"\ncontrol plane unavailable: {err}", file=sys.stderr)


# -- the control plane ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalControlPlane]:
    """A real kube-apiserver + etcd + kube-controller-manager, with ``crds/*.yaml`` installed.

    Admin kubeconfig: ``controlplane.kubeconfig``; URL: ``controlplane.server``.
    """
    from harness import LocalControlPlane

    plane = LocalControlPlane(tmp_path_factory.mktemp("controlplane")).start()
    try:
        install_crds(Kubectl(plane.kubeconfig, find_tool("kubectl")), CRD_DIR)
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kubectl(controlplane: LocalControlPlane) -> Kubectl:
    """Admin kubectl: ``kubectl("get", "pods", namespace=ns)`` -> CompletedProcess."""
    return Kubectl(controlplane.kubeconfig, find_tool("kubectl"))


@pytest.fixture(scope="session")
def apply(kubectl: Kubectl) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``apply(yaml_text_or_path, namespace=None, check=True)`` as the admin."""
    return kubectl.apply


@pytest.fixture(scope="session")
def helm(controlplane: LocalControlPlane) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``helm(*args, check=True)`` against the control plane as the admin."""
    executable = find_tool("helm")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [executable, "--kubeconfig", str(controlplane.kubeconfig), *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
        return result

    return run


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{stem}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace (its `default` ServiceAccount exists, so pods can be created)."""
    name = _namespace_name(request.node.name)
    kubectl("create", "namespace", name)
    deadline = time.monotonic() + 30
    while kubectl("get", "serviceaccount", "default", namespace=name, check=False).returncode:
        assert time.monotonic() < deadline, f"no default ServiceAccount in {name}"
        time.sleep(0.1)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


# -- API clients and identities ------------------------------------------------------------------


def _api_client(kubeconfig: Path) -> ApiClient:
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture(scope="session")
def api_client(controlplane: LocalControlPlane) -> Iterator[ApiClient]:
    """A ``kubernetes`` ApiClient with admin rights (group system:masters)."""
    client = _api_client(controlplane.kubeconfig)
    yield client
    client.close()


@pytest.fixture(scope="session")
def user_kubeconfig(controlplane: LocalControlPlane) -> Callable[..., Path]:
    """``user_kubeconfig(user, groups=(), namespace=None) -> Path``: a client-cert identity.

    It can do nothing until RBAC grants it something.
    """

    def mint(user: str, groups: Sequence[str] = (), namespace: str | None = None) -> Path:
        return controlplane.mint_kubeconfig(user, groups, namespace=namespace)

    return mint


@pytest.fixture(scope="session")
def user_api_client(user_kubeconfig: Callable[..., Path]) -> Iterator[Callable[..., ApiClient]]:
    """``user_api_client(user, groups=()) -> ApiClient`` acting as that identity."""
    clients: list[ApiClient] = []

    def make(user: str, groups: Sequence[str] = ()) -> ApiClient:
        client = _api_client(user_kubeconfig(user, groups))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def service_account_kubeconfig(controlplane: LocalControlPlane) -> Callable[[str, str], Path]:
    """``service_account_kubeconfig(namespace, name) -> Path`` with a bound token."""
    return controlplane.service_account_kubeconfig


@pytest.fixture(scope="session")
def pod_runner(
    controlplane: LocalControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PodRunner]:
    """The kubelet stand-in: runs pods labelled ``tierwise.dev/local-run: "true"`` locally."""
    from harness.podrunner import PodRunner

    runner = PodRunner(
        controlplane.kubeconfig,
        workdir=tmp_path_factory.mktemp("pods"),
        service_proxy_socket=controlplane.service_proxy_socket,
    ).start()
    yield runner
    runner.stop()

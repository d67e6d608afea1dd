"""A real, local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager.

This is the envtest idea with the controllers that matter to Tierwise turned on: the real
API server (RBAC, admission webhooks, CRD validation with CEL, service-account tokens) and the
real Job and garbage-collector controllers, all bound to 127.0.0.1 on random free ports. There
is no kubelet and no scheduler; :mod:`harness.podrunner` stands in for the
kubelet for pods that opt in.

    cp = LocalControlPlane().start()      # builds the binaries on first use
    subprocess.run(["kubectl", "--kubeconfig", cp.kubeconfig, "get", "ns"])
    readonly = cp.mint_kubeconfig("alice", groups=["team-a"])
    cp.stop()
"""

from __future__ import annotations

import atexit
import contextlib
import json
import re
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.binaries import Binaries, ensure_binaries
from harness.kubeconfig import write_kubeconfig
from harness.pki import CertificateAuthority, KeyPair, write_signing_key
from harness.processes import Component, free_port, spawn

ADMIN_USER = "tierwise-admin"
# The controllers a Tierwise test or demo needs. Everything else (nodes, volumes, services)
# has nothing to act on without a kubelet, so it stays off and costs nothing. Deployments and
# ReplicaSets create pods the pod runner can run (the Helm chart's operator).
DEFAULT_CONTROLLERS: tuple[str, ...] = (
    "job-controller",
    "deployment-controller",
    "replicaset-controller",
    "disruption-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
)
# Admission as a real cluster has it (these are upstream defaults, listed to make the intent
# explicit): the webhooks are what the Tierwise operator plugs into.
ADMISSION_PLUGINS: tuple[str, ...] = (
    "NamespaceLifecycle",
    "LimitRanger",
    "ServiceAccount",
    "PodSecurity",
    "ResourceQuota",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionWebhook",
)
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/12"
# The first address of the service range is the `kubernetes` Service; it goes into the SANs.
KUBERNETES_SERVICE_IP = "10.96.0.1"
STATE_FILE = "state.json"
_PORT_IN_USE = re.compile(r"address already in use", re.IGNORECASE)
_START_ATTEMPTS = 3


class ControlPlaneError(RuntimeError):
    """A component failed to start or become ready."""


class LocalControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1, in one work directory."""

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        binaries: Binaries | None = None,
        controllers: Sequence[str] = DEFAULT_CONTROLLERS,
        verbosity: int = 1,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tierwise-controlplane-"))
        self.workdir = self.workdir.resolve()
        self._binaries = binaries
        self._controllers = tuple(controllers)
        self._verbosity = verbosity
        self.components: list[Component] = []
        self.server: str = ""
        self.startup_seconds: float | None = None
        self._detached = False

    # -- paths -----------------------------------------------------------------------------

    @property
    def pki_dir(self) -> Path:
        return self.workdir / "pki"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user in group system:masters)."""
        return self.workdir / "kubeconfig"

    @property
    def ca_cert(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def state_file(self) -> Path:
        return self.workdir / STATE_FILE

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, *, timeout: float = 120.0, detach: bool = False) -> LocalControlPlane:
        """Start everything and wait until the API serves and the controllers run.

        ``detach=True`` lets the processes outlive this Python process (for
        ``hack/controlplane.sh up``); stop them later with :meth:`attach` + :meth:`stop`.
        """
        if self.components:
            raise ControlPlaneError("already started")
        self._detached = detach
        binaries = self._binaries or ensure_binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not detach:
            atexit.register(self.stop)
        try:
            self._start(binaries, timeout)
        except BaseException:
            self.stop()
            raise
        self.save_state()
        return self

    def _start(self, binaries: Binaries, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        began = time.monotonic()
        ca, serving, admin, kcm, signing = self._write_pki()
        etcd_url = self._start_with_retries(lambda: self._launch_etcd(binaries), deadline)
        self.server = self._start_with_retries(
            lambda: self._launch_apiserver(binaries, etcd_url, serving, signing), deadline
        )
        self.startup_seconds = time.monotonic() - began
        write_kubeconfig(
            self.kubeconfig,
            server=self.server,
            ca_cert=ca.paths.cert,
            user=ADMIN_USER,
            client_cert=admin.cert,
            client_key=admin.key,
        )
        kcm_config = write_kubeconfig(
            self.pki_dir / "kube-controller-manager.kubeconfig",
            server=self.server,
            ca_cert=ca.paths.cert,
            user="system:kube-controller-manager",
            client_cert=kcm.cert,
            client_key=kcm.key,
        )
        self._launch_controller_manager(binaries, kcm_config, signing)
        self._wait_for_controllers(deadline)

    def stop(self, *, remove_workdir: bool | None = None) -> None:
        """Stop every component (newest first); idempotent.

        The work directory (logs, certificates) is kept unless ``remove_workdir`` says
        otherwise; by default a temporary directory this object created is removed.
        """
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        for component in reversed(self.components):
            component.stop()
        self.components = []
        self.state_file.unlink(missing_ok=True)
        if remove_workdir if remove_workdir is not None else self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalControlPlane:
        return self if self.components else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def is_running(self) -> bool:
        return bool(self.components) and all(c.alive() for c in self.components)

    @classmethod
    def attach(cls, workdir: Path | str) -> LocalControlPlane:
        """Reconnect to a control plane started with ``detach=True`` in ``workdir``."""
        plane = cls(workdir)
        state = json.loads(plane.state_file.read_text())
        plane.server = state["server"]
        plane.components = [
            Component(name=c["name"], pid=c["pid"], log=Path(c["log"]), executable=c["executable"])
            for c in state["components"]
        ]
        plane.startup_seconds = state.get("startup_seconds")
        plane._detached = True
        return plane

    # -- identities ------------------------------------------------------------------------

    def mint_kubeconfig(
        self, user: str, groups: Sequence[str] = (), *, namespace: str | None = None
    ) -> Path:
        """A kubeconfig authenticating as ``user`` in ``groups`` with a fresh client cert.

        The identity has no permissions until RBAC grants some: that is the point.
        """
        stem = _safe_name(user)
        ca = CertificateAuthority.load(self.pki_dir)
        pair = ca.issue(self.pki_dir / "users", stem, user, groups)
        return write_kubeconfig(
            self.workdir / "kubeconfigs" / f"{stem}.kubeconfig",
            server=self.server,
            ca_cert=self.ca_cert,
            user=user,
            client_cert=pair.cert,
            client_key=pair.key,
            namespace=namespace,
        )

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, expiration_seconds: int = 3600
    ) -> Path:
        """A kubeconfig with a bound token of ServiceAccount ``namespace/name`` (TokenRequest).

        This is the identity a pod of that service account would have in a cluster.
        """
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        }
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
        status, body = self.request("POST", path, request)
        if status != 201:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name} failed: {status} {body}")
        return write_kubeconfig(
            self.workdir
            / "kubeconfigs"
            / f"sa-{_safe_name(namespace)}-{_safe_name(name)}.kubeconfig",
            server=self.server,
            ca_cert=self.ca_cert,
            user=f"system:serviceaccount:{namespace}:{name}",
            token=body["status"]["token"],
            namespace=namespace,
        )

    # -- observation -----------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A small admin HTTP client (JSON in, JSON out) that needs no kubernetes library."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self._admin_tls(), timeout=10) as resp:
                return resp.status, _json_or_text(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, _json_or_text(err.read())

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the API server's /readyz says ok (start() already does this once)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ssl.SSLError):
                if self._readyz(self.server):
                    return
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"{self.server}/readyz not ok after {timeout:.0f}s")
            time.sleep(0.1)

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory per component, e.g. for the numbers in docs/development.md."""
        return {c.name: c.rss_bytes() for c in self.components}

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    # -- internals -------------------------------------------------------------------------

    def _write_pki(self) -> tuple[CertificateAuthority, KeyPair, KeyPair, KeyPair, KeyPair]:
        ca = CertificateAuthority.create(self.pki_dir)
        hosts = (
            "127.0.0.1",
            "localhost",
            KUBERNETES_SERVICE_IP,
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
        serving = ca.issue(
            self.pki_dir, "apiserver", "kube-apiserver", server_hosts=hosts, client=False
        )
        admin = ca.issue(self.pki_dir, "admin", ADMIN_USER, ["system:masters"])
        kcm = ca.issue(self.pki_dir, "kube-controller-manager", "system:kube-controller-manager")
        signing = write_signing_key(self.pki_dir, "service-account")
        return ca, serving, admin, kcm, signing

    def _start_with_retries(self, launch: Any, deadline: float) -> str:
        """Run ``launch`` again when a random port was taken between probing and binding."""
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                return str(launch())
            except ControlPlaneError as err:
                if attempt == _START_ATTEMPTS or not _PORT_IN_USE.search(str(err)):
                    raise
                if time.monotonic() > deadline:
                    raise
        raise AssertionError("unreachable")

    def _spawn(self, name: str, argv: list[str]) -> Component:
        component = spawn(name, argv, self.logs_dir / f"{name}.log", owned=not self._detached)
        self.components.append(component)
        return component

    def _discard(self, component: Component) -> None:
        component.stop()
        self.components.remove(component)

    def _launch_etcd(self, binaries: Binaries) -> str:
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        data_dir = self.workdir / "etcd"
        shutil.rmtree(data_dir, ignore_errors=True)
        argv = [
            str(binaries.etcd),
            "--name=tierwise",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=tierwise={peer_url}",
            # Throw-away data: durability buys nothing and fsync dominates apiserver writes.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]
        component = self._spawn("etcd", argv)
        self._wait_until(component, lambda: _etcd_healthy(client_url), 30.0)
        return client_url

    def _launch_apiserver(
        self, binaries: Binaries, etcd_url: str, serving: KeyPair, signing: KeyPair
    ) -> str:
        port = free_port()
        argv = [
            str(binaries.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.pki_dir / 'apiserver-generated'}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={self.ca_cert}",
            "--authorization-mode=Node,RBAC",
            f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={signing.cert}",
            f"--service-account-signing-key-file={signing.key}",
            # Endpoints may not point at loopback, and nothing routes to them anyway.
            "--endpoint-reconciler-type=none",
            # Traffic to Services (webhooks registered with a service reference) goes through
            # an HTTP CONNECT proxy on a Unix socket, which the pod runner serves: there is no
            # kube-proxy to route ClusterIPs, and EndpointSlices may not hold loopback pod IPs.
            f"--egress-selector-config-file={self._write_egress_config()}",
            "--allow-privileged=true",
            "--profiling=false",
            f"--v={self._verbosity}",
        ]
        component = self._spawn("kube-apiserver", argv)
        server = f"https://127.0.0.1:{port}"
        self._wait_until(component, lambda: self._readyz(server), 90.0)
        return server

    @property
    def service_proxy_socket(self) -> Path:
        """Where the API server sends Service traffic (HTTP CONNECT); the pod runner serves it."""
        return self.workdir / "svc.sock"

    def _write_egress_config(self) -> Path:
        path = self.workdir / "egress-selector.yaml"
        config = {
            "apiVersion": "apiserver.k8s.io/v1beta1",
            "kind": "EgressSelectorConfiguration",
            "egressSelections": [
                {
                    "name": "cluster",
                    "connection": {
                        "proxyProtocol": "HTTPConnect",
                        "transport": {"uds": {"udsName": str(self.service_proxy_socket)}},
                    },
                }
            ],
        }
        path.write_text(json.dumps(config))
        return path

    def _launch_controller_manager(
        self, binaries: Binaries, kubeconfig: Path, signing: KeyPair
    ) -> None:
        argv = [
            str(binaries.kube_controller_manager),
            f"--kubeconfig={kubeconfig}",
            # No serving port: nothing scrapes it, and a fixed default port would collide
            # between parallel control planes.
            "--secure-port=0",
            "--leader-elect=false",
            f"--controllers={','.join(self._controllers)}",
            # Each controller acts as its own service account, under the bootstrap RBAC
            # roles of a real cluster (system:controller:job-controller, ...).
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={signing.key}",
            f"--root-ca-file={self.ca_cert}",
            f"--v={self._verbosity}",
        ]
        self._spawn("kube-controller-manager", argv)

    def _wait_for_controllers(self, deadline: float) -> None:
        """The `default` ServiceAccount appears once the controller manager runs."""
        component = self.components[-1]

        def ready() -> bool:
            status, _ = self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return status == 200

        self._wait_until(component, ready, max(deadline - time.monotonic(), 1.0))

    def _wait_until(self, component: Component, ready: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not component.alive():
                raise ControlPlaneError(
                    f"{component.name} exited during start-up; log {component.log}:\n"
                    f"{component.log_tail()}"
                )
            with contextlib.suppress(OSError, ssl.SSLError):
                if ready():
                    return
            time.sleep(0.1)
        tail = component.log_tail()
        self._discard(component)
        raise ControlPlaneError(
            f"{component.name} not ready after {timeout:.0f}s; log {component.log}:\n{tail}"
        )

    def _readyz(self, server: str) -> bool:
        # /readyz is readable anonymously (system:public-info-viewer) and says when every
        # post-start hook (RBAC bootstrap roles, priority levels, CRD informers) is done.
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        with urllib.request.urlopen(f"{server}/readyz", context=context, timeout=2) as resp:
            return resp.status == 200

    def _admin_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        context.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        return context

    def save_state(self) -> None:
        """Record server and processes so ``attach`` (and ``hack/controlplane.sh down``) work."""
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "startup_seconds": self.startup_seconds,
            "components": [{**asdict(c), "log": str(c.log)} for c in self.components],
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")


def _etcd_healthy(client_url: str) -> bool:
    with urllib.request.urlopen(f"{client_url}/health", timeout=2) as resp:
        return bool(json.loads(resp.read()).get("health") == "true")


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)

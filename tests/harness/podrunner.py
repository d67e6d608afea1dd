"""A kubelet stand-in for tests and demos: runs opted-in pods as local processes.

**This is not a kubelet.** The local control plane has no nodes, so a pod created by the real
Job controller would stay Pending forever. ``PodRunner`` watches pods labelled
``tierwise.dev/local-run: "true"`` and plays the node for them:

- runs each container's ``command`` + ``args`` as a local subprocess (no image, no isolation:
  the command must exist on the host; the runner's own Python environment comes first on
  ``PATH``, and images listed in ``image_entrypoints`` get that entrypoint when the container
  sets no ``command``);
- gives it the container's environment: ``value`` (with ``$(VAR)`` expansion), ``fieldRef``,
  ``configMapKeyRef``, ``secretKeyRef`` and ``envFrom``, plus ``KUBERNETES_SERVICE_HOST`` /
  ``_PORT`` pointing at the API server;
- materialises configMap, secret, projected (service-account token, CA, namespace),
  downwardAPI and emptyDir volumes in a per-pod directory, and rewrites mount paths found in
  command, args, env values and ``workingDir`` to that directory (paths compiled into a program
  are not rewritten);
- runs init containers in order, native sidecars (init containers with ``restartPolicy:
  Always``) alongside the main containers until those finish, restarts containers as the pod's
  ``restartPolicy`` says, honours ``activeDeadlineSeconds``, and kills the process group when
  the pod is deleted;
- reports what happened through the pod's ``status`` subresource, as a kubelet would: phase
  Pending → Running → Succeeded/Failed, ``containerStatuses`` with ``running`` and
  ``terminated`` (exit code, reason, termination message from ``terminationMessagePath`` or,
  with ``FallbackToLogsOnError``, the log tail).

The Job controller needs nothing more: no Node object and no binding (``spec.nodeName`` stays
empty); a terminal pod phase in the status is what it counts. Logs are kept on disk (see
:meth:`PodRunner.logs`); ``kubectl logs`` and ``exec`` need a kubelet and do not work. Probes,
resources, security contexts and image pulls are ignored.

What it does not model is proved on a real kubelet by the end-to-end suite (``tests/e2e``,
``make e2e``, a node started by ``hack/node.sh``): probes, the restricted security context and
read-only root filesystem, images, the ConfigMap volume's ``..data`` swap reaching a running
process, termination messages written where the kubelet reads them, memory limits, Service
link environment variables, and pods that dial each other through Services.

For Deployments (operator pods, webhooks) it also plays the pod network, minimally:

- each pod gets a loopback address of its own (``127.X.Y.Z``, in ``status.podIP`` and the
  ``status.podIP`` downward API), so replicas that bind their pod IP do not collide; processes
  still share the host's network namespace, so two that bind ``0.0.0.0`` on one port do;
- a container that mounts the service-account token gets ``KUBECONFIG`` pointing at it (the
  in-cluster token path is compiled into client libraries, so it cannot be rewritten);
- with ``service_proxy_socket`` (the control plane's
  :attr:`~harness.LocalControlPlane.service_proxy_socket`) it serves the API
  server's Service traffic, a kube-proxy stand-in: the API server's egress selector sends
  ``CONNECT <clusterIP>:<port>`` there for webhooks registered with a Service, and the runner
  connects it to a ready pod it runs that the Service selects (a pod counts as ready once its
  containers run). Nothing else is ever dialled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from harness import podenv
from harness.podenv import ConfigError, PathMap, VolumeSources
from harness.serviceproxy import ServiceProxy

LOCAL_RUN_LABEL = "tierwise.dev/local-run"
LOCAL_RUN_SELECTOR = f"{LOCAL_RUN_LABEL}=true"
# Image repository name (last path segment, no tag) -> entrypoint, for containers that rely on
# the image's ENTRYPOINT instead of setting `command`.
DEFAULT_IMAGE_ENTRYPOINTS: Mapping[str, Sequence[str]] = {"tierwise": ("tierwise",)}
_MESSAGE_LIMIT = 4096
_FALLBACK_LOG_LINES = 80
_FALLBACK_LOG_BYTES = 2048
_WATCH_SECONDS = 2
SERVICE_ACCOUNT_KUBECONFIG_ENV = "KUBECONFIG"
log = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class PodOutcome:
    """How a pod run by the runner ended."""

    namespace: str
    name: str
    uid: str
    phase: str
    exit_codes: Mapping[str, int]
    directory: Path
    reason: str = ""


@dataclass
class _ContainerState:
    """One container's ``containerStatuses`` entry, kept up to date while it runs."""

    name: str
    image: str
    restart_count: int = 0
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return "running" in self.state

    def exit_code(self) -> int | None:
        terminated = self.state.get("terminated")
        return None if terminated is None else int(terminated["exitCode"])

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "containerID": f"local://{self.name}",
            "restartCount": self.restart_count,
            "ready": self.running,
            "started": self.running,
            "state": self.state,
            "lastState": self.last_state,
        }

    def terminate(self, exit_code: int, started_at: str, reason: str, message: str) -> None:
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": started_at,
            "finishedAt": _now(),
        }
        if message:
            terminated["message"] = message
        self.state = {"terminated": terminated}


class _Cancelled(Exception):
    """The pod was deleted or ran past its deadline."""


class _PodExecution:
    """Runs one pod from Pending to a terminal phase (or until it is deleted)."""

    def __init__(self, runner: PodRunner, pod: dict[str, Any]) -> None:
        self.runner = runner
        self.pod = pod
        meta, spec = pod["metadata"], pod["spec"]
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.directory = runner.workdir / "pods" / self.namespace / f"{self.name}-{self.uid[:8]}"
        self.restart_policy = spec.get("restartPolicy", "Always")
        init = spec.get("initContainers", [])
        self.sidecars = {c["name"] for c in init if c.get("restartPolicy") == "Always"}
        self.init_states = {c["name"]: _ContainerState(c["name"], c.get("image", "")) for c in init}
        self.states = {
            c["name"]: _ContainerState(c["name"], c.get("image", "")) for c in spec["containers"]
        }
        self.phase = "Pending"
        self.reason = ""
        self.message = ""
        self.start_time = _now()
        self.pod_ip = runner.allocate_pod_ip()
        pod.setdefault("status", {})["podIP"] = self.pod_ip
        self.cancelled = threading.Event()
        # Set when the main containers are done: sidecars stop and are not restarted.
        self.finishing = threading.Event()
        self.deleted = False
        self.active_deadline = spec.get("activeDeadlineSeconds")
        self.grace = min(
            float(spec.get("terminationGracePeriodSeconds", 30)), runner.max_grace_seconds
        )
        self._status_lock = threading.Lock()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._volumes: dict[str, Path] = {}
        self._transitions: dict[str, tuple[str, str]] = {}

    # -- control ---------------------------------------------------------------------------

    def cancel(self, *, deleted: bool) -> None:
        self.deleted = self.deleted or deleted
        self.cancelled.set()
        for process in list(self._processes.values()):
            _signal_group(process.pid, signal.SIGTERM)

    def run(self) -> None:
        timer = self._deadline_timer()
        try:
            self._run()
        except _Cancelled:
            pass
        except ConfigError as err:
            # A kubelet would wait forever; a test wants an answer.
            self._finish("Failed", "CreateContainerConfigError", str(err))
        except Exception as err:
            log.exception("pod %s/%s: the runner failed", self.namespace, self.name)
            self._kill_all()
            self._finish("Failed", "LocalRunnerError", str(err))
        finally:
            if timer is not None:
                timer.cancel()
            self._kill_all()
            if self.reason == "DeadlineExceeded" and self.phase not in ("Succeeded", "Failed"):
                self._finish(
                    "Failed",
                    "DeadlineExceeded",
                    f"Pod was active longer than {self.active_deadline}s (activeDeadlineSeconds)",
                )
            self.runner._record(self._outcome())

    def _deadline_timer(self) -> threading.Timer | None:
        if self.active_deadline is None:
            return None
        timer = threading.Timer(float(self.active_deadline), self._deadline_exceeded)
        timer.daemon = True
        timer.start()
        return timer

    def _deadline_exceeded(self) -> None:
        self.reason = "DeadlineExceeded"
        self.cancel(deleted=False)

    def _run(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._publish()
        self._volumes = self._with_config_retries(self._materialise_volumes)
        for container in self.pod["spec"].get("initContainers", []):
            if container["name"] in self.sidecars:
                self._start_sidecar(container)
            elif self._run_container(container, self.init_states[container["name"]]) != 0:
                self._finish("Failed", "InitContainerFailed", f"{container['name']} failed")
                return
        self.phase = "Running"
        self._check_cancelled()
        threads = [
            self._container_thread(c, self.states[c["name"]])
            for c in self.pod["spec"]["containers"]
        ]
        for thread in threads:
            thread.join()
        self._check_cancelled()
        failed = any(state.exit_code() != 0 for state in self.states.values())
        self._finish("Failed" if failed else "Succeeded", "", "")

    def _finish(self, phase: str, reason: str, message: str) -> None:
        self.finishing.set()
        self._stop_sidecars()
        self.phase, self.reason, self.message = phase, reason, message
        self._publish()

    def _container_thread(
        self, container: Mapping[str, Any], state: _ContainerState
    ) -> threading.Thread:
        def target() -> None:
            with contextlib.suppress(_Cancelled):
                self._run_container(container, state)

        thread = threading.Thread(
            target=target, name=f"{self.name}/{container['name']}", daemon=True
        )
        thread.start()
        return thread

    def _check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise _Cancelled

    # -- containers ------------------------------------------------------------------------

    def _run_container(self, container: Mapping[str, Any], state: _ContainerState) -> int:
        """Run with restarts as the restart policy says; the last exit code."""
        backoff = 0.5
        while True:
            exit_code = self._run_once(container, state)
            done = self.cancelled.is_set() or self.finishing.is_set()
            if done or not self._should_restart(container, exit_code):
                return exit_code
            state.last_state, state.restart_count = state.state, state.restart_count + 1
            state.state = {"waiting": {"reason": "CrashLoopBackOff"}}
            self._publish()
            # Far shorter than the kubelet's 10 s..5 min back-off: tests should not wait.
            if self.cancelled.wait(backoff):
                return exit_code
            backoff = min(backoff * 2, 10.0)

    def _should_restart(self, container: Mapping[str, Any], exit_code: int) -> bool:
        if container["name"] in self.sidecars:
            return True
        if self.restart_policy == "Always" and container["name"] in self.states:
            return True
        return self.restart_policy in ("Always", "OnFailure") and exit_code != 0

    def _run_once(self, container: Mapping[str, Any], state: _ContainerState) -> int:
        name = container["name"]
        self._check_cancelled()
        scratch = self.directory / "containers" / name
        scratch.mkdir(parents=True, exist_ok=True)
        paths = podenv.mount_paths(container, self._volumes, scratch)
        message_file = scratch / "termination-message"
        message_file.unlink(missing_ok=True)
        env = self._environment_when_ready(container, paths, state)
        try:
            argv = self._argv(container, env, paths)
        except ConfigError as err:
            state.terminate(128, _now(), "StartError", str(err))
            self._publish()
            return 128
        log_path = self.directory / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started_at = _now()
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._working_dir(container, paths, scratch),
                start_new_session=True,
            )
        self._processes[name] = process
        state.state = {"running": {"startedAt": started_at}}
        self._publish()
        exit_code = self._wait(process)
        del self._processes[name]
        reason = "Completed" if exit_code == 0 else "Error"
        state.terminate(
            exit_code,
            started_at,
            reason,
            self._message(container, message_file, log_path, exit_code),
        )
        self._publish()
        return exit_code

    def _wait(self, process: subprocess.Popen[bytes]) -> int:
        while process.poll() is None:
            if self.cancelled.wait(0.05):
                _stop_group(process, self.grace)
        # Like the kubelet: a signal-killed container exits 128 + signal number.
        code = process.returncode
        return 128 - code if code < 0 else code

    def _argv(
        self, container: Mapping[str, Any], env: Mapping[str, str], paths: PathMap
    ) -> list[str]:
        command = list(
            container.get("command") or self.runner.entrypoint(container.get("image", ""))
        )
        if not command:
            raise ConfigError(
                f"container {container['name']!r} sets no command and image "
                f"{container.get('image')!r} has no known entrypoint"
            )
        argv = [
            paths.rewrite(podenv.expand(a, env)) for a in [*command, *container.get("args", [])]
        ]
        executable = shutil.which(argv[0], path=env.get("PATH"))
        if executable is None:
            raise ConfigError(f"executable {argv[0]!r} not found on the host")
        return [executable, *argv[1:]]

    def _environment_when_ready(
        self, container: Mapping[str, Any], paths: PathMap, state: _ContainerState
    ) -> dict[str, str]:
        """As the kubelet does: a container whose env names a missing Secret, ConfigMap or
        key is not created; it waits (reason CreateContainerConfigError, the kubelet's own
        message) and is retried until the object appears or the pod is deleted or past
        its deadline. The pod stays Pending meanwhile."""
        waiting = ""
        while True:
            try:
                env = self._environment(container, paths)
                if self.phase == "Pending":
                    self.phase = "Running"
                return env
            except ConfigError as err:
                if str(err) != waiting:
                    waiting = str(err)
                    if not any(s.running for s in self.states.values()):
                        self.phase = "Pending"  # no container started yet
                    state.state = {
                        "waiting": {"reason": "CreateContainerConfigError", "message": waiting}
                    }
                    self._publish()
                    log.info("pod %s/%s waits: %s", self.namespace, self.name, err)
                if self.cancelled.wait(0.5):
                    raise _Cancelled from err

    def _environment(self, container: Mapping[str, Any], paths: PathMap) -> dict[str, str]:
        own = podenv.container_env(self.pod, container, self.runner.lookup)
        env = self.runner.base_environment(self.name, self.directory)
        env.update({k: paths.rewrite(v) for k, v in own.items()})
        token_dir = paths.host_path(podenv.SERVICE_ACCOUNT_DIR)
        if token_dir is not None and SERVICE_ACCOUNT_KUBECONFIG_ENV not in own:
            env[SERVICE_ACCOUNT_KUBECONFIG_ENV] = str(self._service_account_kubeconfig(token_dir))
        return env

    def _service_account_kubeconfig(self, token_dir: Path) -> Path:
        """In-cluster credentials as a kubeconfig: the mounted token file and CA."""
        path = self.directory / "service-account.kubeconfig"
        server = self.runner.server.geturl()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "in-cluster",
                    "cluster": {
                        "server": server,
                        "certificate-authority": str(token_dir / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": "service-account", "user": {"tokenFile": str(token_dir / "token")}}],
            "contexts": [
                {
                    "name": "in-cluster",
                    "context": {
                        "cluster": "in-cluster",
                        "user": "service-account",
                        "namespace": self.namespace,
                    },
                }
            ],
            "current-context": "in-cluster",
        }
        path.write_text(json.dumps(config))
        return path

    def _working_dir(self, container: Mapping[str, Any], paths: PathMap, scratch: Path) -> Path:
        working = container.get("workingDir")
        if working:
            mapped = paths.host_path(working)
            if mapped is not None:
                return mapped
            if Path(working).is_dir():
                return Path(working)
        return scratch

    def _message(
        self, container: Mapping[str, Any], message_file: Path, log_path: Path, exit_code: int
    ) -> str:
        with contextlib.suppress(OSError):
            text = message_file.read_bytes()[:_MESSAGE_LIMIT].decode(errors="replace")
            if text:
                return text
        if exit_code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = (
                log_path.read_bytes().decode(errors="replace").splitlines()[-_FALLBACK_LOG_LINES:]
            )
            return "\n".join(lines)[-_FALLBACK_LOG_BYTES:]
        return ""

    def _start_sidecar(self, container: Mapping[str, Any]) -> None:
        state = self.init_states[container["name"]]
        thread = self._container_thread(container, state)
        # Native sidecars must be started before the next container runs.
        while not state.running and thread.is_alive():
            time.sleep(0.02)
            self._check_cancelled()

    def _stop_sidecars(self) -> None:
        for name in self.sidecars:
            process = self._processes.get(name)
            if process is not None:
                _stop_group(process, self.grace)

    def has_processes(self) -> bool:
        return any(p.poll() is None for p in list(self._processes.values()))

    def _kill_all(self) -> None:
        self.cancelled.set()
        for process in list(self._processes.values()):
            _stop_group(process, 0.0)

    # -- API -------------------------------------------------------------------------------

    def _materialise_volumes(self) -> dict[str, Path]:
        sources = VolumeSources(self.runner.lookup, self._issue_token, self.runner.ca_bundle)
        return podenv.materialise_volumes(self.pod, self.directory / "volumes", sources)

    def _issue_token(self, namespace: str, account: str, audience: str | None, seconds: int) -> str:
        return self.runner.issue_token(namespace, account, audience, seconds, self.name, self.uid)

    def _with_config_retries(self, produce: Any) -> Any:
        """Like the kubelet, wait for a missing ConfigMap/Secret to appear (for a while)."""
        deadline = time.monotonic() + self.runner.config_wait_seconds
        while True:
            try:
                return produce()
            except ConfigError as err:
                if time.monotonic() > deadline:
                    raise
                log.info("pod %s/%s waits: %s", self.namespace, self.name, err)
                if self.cancelled.wait(0.5):
                    raise _Cancelled from err

    def _publish(self) -> None:
        """Write the pod status (a merge patch replacing the status lists wholesale)."""
        if self.deleted:
            return
        with self._status_lock:
            if not self.runner.patch_status(self.namespace, self.name, self._status()):
                self.cancel(deleted=True)

    @property
    def ready(self) -> bool:
        return self.phase == "Running" and all(s.running for s in self.states.values())

    def _status(self) -> dict[str, Any]:
        terminal = self.phase in ("Succeeded", "Failed")
        initialized = self.phase != "Pending"
        ready = self.ready
        status: dict[str, Any] = {
            "phase": self.phase,
            "startTime": self.start_time,
            "hostIP": "127.0.0.1",
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "conditions": [
                self._condition("PodReadyToStartContainers", not terminal),
                self._condition("Initialized", initialized or terminal),
                self._condition("ContainersReady", ready, "" if ready else "ContainersNotReady"),
                self._condition(
                    "Ready",
                    ready,
                    "PodCompleted" if terminal else ("" if ready else "ContainersNotReady"),
                ),
            ],
            "containerStatuses": [s.status() for s in self.states.values()],
            "initContainerStatuses": [s.status() for s in self.init_states.values()],
        }
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        return status

    def _condition(self, kind: str, value: bool, reason: str = "") -> dict[str, Any]:
        status = "True" if value else "False"
        # lastTransitionTime moves only when the status does, as API conventions require.
        previous = self._transitions.get(kind)
        if previous is None or previous[0] != status:
            self._transitions[kind] = (status, _now())
        condition = {
            "type": kind,
            "status": status,
            "lastTransitionTime": self._transitions[kind][1],
        }
        if reason:
            condition["reason"] = reason
        return condition

    def _outcome(self) -> PodOutcome:
        codes = {n: c for n, s in self.states.items() if (c := s.exit_code()) is not None}
        return PodOutcome(
            self.namespace,
            self.name,
            self.uid,
            "Deleted" if self.deleted else self.phase,
            codes,
            self.directory,
            self.reason,
        )


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the container's process group, SIGKILL after the grace period."""
    _signal_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    _signal_group(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _items(response: Any) -> list[dict[str, Any]]:
    return list(json.loads(response.data).get("items") or [])


def _container_port(pod: Mapping[str, Any], target: int | str) -> int | None:
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in pod["spec"].get("containers", []):
        for port in container.get("ports", []):
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def image_entrypoint(image: str, table: Mapping[str, Sequence[str]]) -> Sequence[str]:
    """The entrypoint for ``image`` by repository name (registry, tag and digest ignored)."""
    repository = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    return table.get(repository, ())


class PodRunner:
    """Watches opted-in pods and runs them locally (see the module docstring)."""

    def __init__(
        self,
        kubeconfig: Path | str,
        *,
        workdir: Path | str | None = None,
        label_selector: str = LOCAL_RUN_SELECTOR,
        image_entrypoints: Mapping[str, Sequence[str]] = DEFAULT_IMAGE_ENTRYPOINTS,
        extra_env: Mapping[str, str] | None = None,
        max_grace_seconds: float = 5.0,
        config_wait_seconds: float = 30.0,
        service_proxy_socket: Path | str | None = None,
    ) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        # One connection per running pod thread plus the watch.
        configuration.connection_pool_maxsize = 32
        self._api_client = client.ApiClient(configuration)
        self._core = client.CoreV1Api(self._api_client)
        self.server = urlparse(configuration.host)
        self.ca_bundle = (
            Path(configuration.ssl_ca_cert).read_text() if configuration.ssl_ca_cert else ""
        )
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tierwise-podrunner-"))
        self.label_selector = label_selector
        self.image_entrypoints = dict(image_entrypoints)
        self.extra_env = dict(extra_env or {})
        self.max_grace_seconds = max_grace_seconds
        self.config_wait_seconds = config_wait_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Condition()
        self._executions: dict[str, _PodExecution] = {}
        self._outcomes: dict[tuple[str, str], PodOutcome] = {}
        # Pod IPs: a random /24 of 127.64.0.0/10 per runner, so runners of concurrent test
        # sessions on one host rarely share addresses.
        self._ip_base = int(ipaddress.IPv4Address("127.64.0.0")) + random.randrange(1 << 14) * 256
        self._ip_next = 1
        self._proxy: ServiceProxy | None = None
        if service_proxy_socket is not None:
            self._proxy = ServiceProxy(Path(service_proxy_socket), self.service_backend)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> PodRunner:
        """Run in a background thread (tests); :meth:`run` blocks instead (CLI)."""
        self._thread = threading.Thread(target=self.run, name="tierwise-podrunner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._proxy is not None:
            self._proxy.stop()
        with self._lock:
            executions = list(self._executions.values())
        for execution in executions:
            execution.cancel(deleted=True)
        # Containers get their grace period to stop after SIGTERM; what is still running then
        # is killed, so no process outlives the runner (a kopf operator, say, that is slow to
        # shut down).
        deadline = time.monotonic() + self.max_grace_seconds
        for execution in executions:
            while execution.has_processes() and time.monotonic() < deadline:
                time.sleep(0.05)
            execution._kill_all()
        if self._thread is not None:
            self._thread.join(timeout=_WATCH_SECONDS + 10)
        self._api_client.close()

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def run(self) -> None:
        """List, then watch, opted-in pods until :meth:`stop`; re-list when the watch expires."""
        from kubernetes.client.exceptions import ApiException

        if self._proxy is not None:
            self._proxy.start()
        while not self._stopping.is_set():
            try:
                self._watch(self._relist())
            except ApiException as err:
                if err.status != 410:
                    log.warning("pod watch failed: %s", err)
                    self._stopping.wait(1.0)
            except Exception as err:  # connection trouble: keep the runner alive
                log.warning("pod watch interrupted: %s", err)
                self._stopping.wait(1.0)

    # -- results ---------------------------------------------------------------------------

    def wait_for(self, namespace: str, name: str, timeout: float = 60.0) -> PodOutcome:
        """Block until the runner has finished pod ``namespace/name``."""
        with self._lock:
            if not self._lock.wait_for(lambda: (namespace, name) in self._outcomes, timeout):
                raise TimeoutError(f"pod {namespace}/{name} not finished after {timeout}s")
            return self._outcomes[(namespace, name)]

    def outcomes(self) -> list[PodOutcome]:
        with self._lock:
            return list(self._outcomes.values())

    def logs(self, namespace: str, name: str, container: str | None = None) -> str:
        """What ``kubectl logs`` would print (stdout and stderr, all restarts)."""
        matches = sorted((self.workdir / "pods" / namespace).glob(f"{name}-*/logs/*.log"))
        if container is not None:
            matches = [m for m in matches if m.stem == container]
        if not matches:
            raise FileNotFoundError(f"no logs for pod {namespace}/{name}")
        return matches[-1].read_text(errors="replace")

    # -- used by executions ----------------------------------------------------------------

    def allocate_pod_ip(self) -> str:
        with self._lock:
            offset = self._ip_next
            self._ip_next = self._ip_next % 254 + 1
        return str(ipaddress.IPv4Address(self._ip_base + offset))

    def entrypoint(self, image: str) -> Sequence[str]:
        return image_entrypoint(image, self.image_entrypoints)

    def base_environment(self, pod_name: str, directory: Path) -> dict[str, str]:
        """What the image and the kubelet would provide, before the container's own env."""
        home = directory / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {
            # The runner's Python environment first, so `python` and `tierwise` resolve there.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "HOME": str(home),
            "HOSTNAME": pod_name,
            "LANG": "C.UTF-8",
            "KUBERNETES_SERVICE_HOST": self.server.hostname or "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.server.port or 443),
        }
        env.update(self.extra_env)
        return env

    def lookup(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            if kind == "ConfigMap":
                return dict(self._core.read_namespaced_config_map(name, namespace).data or {})
            secret = self._core.read_namespaced_secret(name, namespace)
            return podenv.secret_text(secret.data or {})
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def issue_token(
        self, namespace: str, account: str, audience: str | None, seconds: int, pod: str, uid: str
    ) -> str:
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            # Bound to the pod, like a kubelet-issued token: it dies with the pod.
            "spec": {
                "expirationSeconds": max(seconds, 600),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid},
            },
        }
        if audience:
            body["spec"]["audiences"] = [audience]
        response = self._core.create_namespaced_service_account_token(account, namespace, body)
        return str(response.status.token)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """False when the pod is gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._core.patch_namespaced_pod_status(
                name, namespace, {"status": status}, _content_type="application/merge-patch+json"
            )
        except ApiException as err:
            if err.status == 404:
                return False
            log.warning("pod %s/%s: status update failed: %s", namespace, name, err.reason)
        return True

    def _record(self, outcome: PodOutcome) -> None:
        with self._lock:
            self._outcomes[(outcome.namespace, outcome.name)] = outcome
            self._executions.pop(outcome.uid, None)
            self._lock.notify_all()

    # -- services --------------------------------------------------------------------------

    def service_backend(self, cluster_ip: str, port: int) -> tuple[str, int] | None:
        """The (pod IP, container port) for ``clusterIP:port``: a ready pod run here."""
        services = _items(self._core.list_service_for_all_namespaces(_preload_content=False))
        for service in services:
            spec = service.get("spec") or {}
            if spec.get("clusterIP") != cluster_ip or not spec.get("selector"):
                continue
            for service_port in spec.get("ports") or []:
                if int(service_port["port"]) != port:
                    continue
                target = service_port.get("targetPort", service_port["port"])
                for pod in self._ready_pods(service["metadata"]["namespace"], spec["selector"]):
                    container_port = _container_port(pod.pod, target)
                    if container_port is not None:
                        return pod.pod_ip, container_port
        return None

    def _ready_pods(self, namespace: str, selector: Mapping[str, str]) -> list[_PodExecution]:
        with self._lock:
            executions = list(self._executions.values())
        ready = [
            e
            for e in executions
            if e.namespace == namespace
            and e.ready
            and all(
                (e.pod["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items()
            )
        ]
        random.shuffle(ready)
        return ready

    # -- watching --------------------------------------------------------------------------

    def _relist(self) -> str:
        response = self._core.list_pod_for_all_namespaces(
            label_selector=self.label_selector, _preload_content=False
        )
        listing = json.loads(response.data)
        for pod in listing["items"]:
            self._observe("ADDED", pod)
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, resource_version: str) -> None:
        from kubernetes import watch

        while not self._stopping.is_set():
            watcher = watch.Watch()
            # Short watch windows keep stop() prompt without closing sockets from outside.
            for event in watcher.stream(
                self._core.list_pod_for_all_namespaces,
                label_selector=self.label_selector,
                resource_version=resource_version,
                timeout_seconds=_WATCH_SECONDS,
                allow_watch_bookmarks=True,
            ):
                pod = event["raw_object"]
                resource_version = pod["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    self._observe(event["type"], pod)
                if self._stopping.is_set():
                    watcher.stop()

    def _observe(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with self._lock:
            execution = self._executions.get(meta["uid"])
            if kind == "DELETED" or meta.get("deletionTimestamp"):
                if execution is not None:
                    execution.cancel(deleted=True)
                return
            if execution is not None or not self._runnable(pod) or self._stopping.is_set():
                return
            execution = _PodExecution(self, pod)
            self._executions[meta["uid"]] = execution
        log.info("running pod %s/%s locally", meta["namespace"], meta["name"])
        threading.Thread(target=execution.run, name=f"pod-{meta['name']}", daemon=True).start()

    def _runnable(self, pod: Mapping[str, Any]) -> bool:
        """Pending, not gated, and not already handled (uids are never reused)."""
        if pod.get("status", {}).get("phase", "Pending") != "Pending":
            return False
        if pod.get("spec", {}).get("schedulingGates"):
            return False
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        done = self._outcomes.get(key)  # the caller holds the lock
        return done is None or done.uid != pod["metadata"]["uid"]

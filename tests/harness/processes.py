"""Child process handling: own process groups, clean shutdown, no strays.

Every component runs in its own session (so its process group id is its pid) and is stopped
by signalling the whole group: SIGTERM, then SIGKILL after a grace period. When the launcher
owns the processes (tests), they also get ``PR_SET_PDEATHSIG`` so that even a launcher killed
with SIGKILL does not leave an apiserver behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1
# Proxies would capture the apiserver's calls to etcd, webhooks on 127.0.0.1 and so on.
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARIABLES}
    env.update(extra or {})
    return env


def free_port() -> int:
    """A port that was free a moment ago (callers retry on the rare collision)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Component:
    """One running binary of the control plane."""

    name: str
    pid: int
    log: Path
    executable: str

    def alive(self) -> bool:
        """True while the pid still runs *our* executable (pids get reused)."""
        # /proc/PID/exe is set at exec and unreadable for zombies; /proc/PID/cmdline can
        # still be empty just after exec, so it is no use here.
        try:
            running = os.readlink(f"/proc/{self.pid}/exe")
        except OSError:
            return False
        return running == os.path.realpath(self.executable)

    def rss_bytes(self) -> int:
        """Resident memory of the process (0 when it is gone)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop the whole process group, politely first."""
        if not self.alive():
            _reap(self.pid)
            return
        _signal_group(self.pid, signal.SIGTERM)
        if not _wait_gone(self, grace_seconds):
            _signal_group(self.pid, signal.SIGKILL)
            _wait_gone(self, 5.0)
        # Also catch stragglers the component itself started in its group.
        _signal_group(self.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _reap(pid: int) -> None:
    # Our own children must be waited for, or they linger as zombies.
    process = _SPAWNED.get(pid)
    if process is not None and process.poll() is not None:
        del _SPAWNED[pid]


def _wait_gone(component: Component, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(component.pid)
        if not component.alive():
            return True
        time.sleep(0.05)
    return False


def spawn(
    name: str,
    argv: Sequence[str],
    log: Path,
    *,
    owned: bool,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Component:
    """Start ``argv`` in a new session with stdout+stderr going to ``log``.

    ``owned`` components die with this Python process; detached ones (``hack/controlplane.sh
    up``) outlive it and are stopped later from the state file.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    preexec: Callable[[], None] | None = _die_with_parent if owned else None
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_environment(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=preexec,
        )
    # Keep the Popen object: it reaps the child when it exits (see _reap).
    _SPAWNED[process.pid] = process
    return Component(name=name, pid=process.pid, log=log, executable=str(argv[0]))


_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}

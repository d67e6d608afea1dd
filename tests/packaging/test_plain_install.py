"""A plain install (no dev extras) in a clean virtual environment runs every command.

The product must never depend on what only the test harness installs: this installs the
package as a user would (pip, runtime dependencies only), checks that no development tool
came with it, and runs `tierwise operator`, `router`, `emulator`, `render` and `estimate`
far enough to prove that everything they import is there (the operator as far as its
startup handler: options, metrics server, its self-minted webhook certificate).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import venv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "support-triage"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory) -> Path:
    """``bin/`` of a fresh venv after ``pip install <repo>`` (no extras, not editable)."""
    env_dir = tmp_path_factory.mktemp("plain-venv")
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    result = subprocess.run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=clean_env(),
    )
    if result.returncode != 0:
        pytest.fail(f"pip install failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return bin_dir


def tierwise(bin_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    # Run outside the repository: nothing may come from the source tree.
    return subprocess.run(
        [str(bin_dir / "tierwise"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=bin_dir.parent,
        env=clean_env(),
    )


@contextlib.contextmanager
def serving(
    argv: Sequence[str],
    log: Path,
    ready: Callable[[], bool],
    env: dict[str, str],
    timeout: float = 60,
) -> Iterator[None]:
    with log.open("w") as out:
        process = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=log.parent,
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                pytest.fail(
                    f"{argv[1]} exited with {process.returncode}:\n{log.read_text()[-4000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{argv[1]} not ready after {timeout}s:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        yield
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    return check


def test_the_install_has_runtime_dependencies_only(plain_install: Path):
    code = (
        "import importlib.util as u, json;"
        "print(json.dumps({m: bool(u.find_spec(m)) for m in "
        "['cryptography', 'kopf', 'orjson', 'uvloop', 'pytest', 'jsonschema', 'hypothesis']}))"
    )
    found = json.loads(
        subprocess.check_output([str(plain_install / "python"), "-c", code], cwd=plain_install)
    )
    assert found == {
        "cryptography": True,
        "kopf": True,
        "orjson": True,  # the router's fast path is a default dependency
        "uvloop": True,
        "pytest": False,
        "jsonschema": False,
        "hypothesis": False,
    }


def test_render_and_estimate_run(plain_install: Path):
    rendered = tierwise(plain_install, "render", "-f", str(EXAMPLES))
    assert rendered.returncode == 0, rendered.stderr
    assert json.loads(rendered.stdout)["schemaVersion"] == "tierwise.dev/router-config/v1"
    estimate = tierwise(plain_install, "estimate", "--cheap-cost=1", "--strong-cost=10")
    assert estimate.returncode == 0, estimate.stderr
    assert "break-even" in estimate.stdout


def test_the_emulator_and_the_router_serve(plain_install: Path, tmp_path: Path):
    emulator_port, metrics_port = free_port(), free_port()
    rendered = tierwise(plain_install, "render", "-f", str(EXAMPLES))
    assert rendered.returncode == 0, rendered.stderr
    document = json.loads(rendered.stdout)
    config = tmp_path / "router-config.json"
    config.write_text(json.dumps(document))
    emulator = [str(plain_install / "tierwise"), "emulator", f"--port={emulator_port}"]
    router = [
        str(plain_install / "tierwise"),
        "router",
        f"--config={config}",
        f"--port={free_port()}",
        "--metrics-host=127.0.0.1",
        f"--metrics-port={metrics_port}",
    ]
    env = clean_env()
    with (
        serving(
            emulator,
            tmp_path / "emulator.log",
            http_ok(f"http://127.0.0.1:{emulator_port}/_emulator/health"),
            env,
        ),
        serving(
            router, tmp_path / "router.log", http_ok(f"http://127.0.0.1:{metrics_port}/readyz"), env
        ),
    ):
        pass


def test_the_operator_starts_and_mints_its_webhook_certificate(plain_install: Path, tmp_path: Path):
    # No cluster: kopf keeps retrying the API, but the startup handler (options, metrics
    # server, the self-signed webhook certificate and server) has run by then.
    kubeconfig = tmp_path / "kubeconfig"
    server = f"https://127.0.0.1:{free_port()}"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    log = tmp_path / "operator.log"
    metrics_port = free_port()
    argv = [
        str(plain_install / "tierwise"),
        "operator",
        "--standalone",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics_port}",
        "--health-port=0",
        "--webhook-address=127.0.0.1",
        f"--webhook-port={free_port()}",
    ]

    def started() -> bool:
        return (
            "tierwise operator started" in log.read_text()
            and http_ok(f"http://127.0.0.1:{metrics_port}/metrics")()
        )

    with serving(argv, log, started, clean_env(KUBECONFIG=str(kubeconfig))):
        text = log.read_text()
    assert "generated a webhook certificate" in text
    assert "Traceback" not in text.split("tierwise operator started")[0]

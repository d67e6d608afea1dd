"""The real Dockerfile, built with buildah, run with podman: every command and one request."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from tierwise import __version__
from tierwise.cli import COMMANDS
from tierwise.routerconfig.digest import content_hash

pytestmark = [pytest.mark.image, pytest.mark.timeout(1500)]

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples" / "support-triage"
EMULATOR_PORT = 8090
ROUTER_PORT = 8080
METRICS_PORT = 9090


def podman(env: dict[str, str], *args: str, check: bool = True, timeout: float = 120):
    return subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, check=check, timeout=timeout
    )


def available_commands() -> list[str]:
    """The CLI's subcommands whose modules exist in this source tree."""
    return [name for name, (module, _help) in COMMANDS.items() if importlib.util.find_spec(module)]


def iptables_chains() -> set[str]:
    """Every chain in every table, so a leaked netavark/CNI chain shows up."""
    if shutil.which("iptables-save") is None:
        return set()
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(":")}


@pytest.fixture(scope="module", autouse=True)
def no_iptables_chains_left() -> Iterator[None]:
    """Nothing here may leave podman's network chains behind (--network=none, slirp4netns)."""
    before = iptables_chains()
    yield
    assert iptables_chains() <= before, sorted(iptables_chains() - before)


def test_version_and_every_command_imports(image: str, image_env: dict[str, str]) -> None:
    out = podman(
        image_env, "run", "--rm", "--init", "--read-only", "--network=none", image, "--version"
    )
    assert out.stdout.strip() == f"tierwise {__version__}"
    # Each subcommand's module imports (the Dockerfile strips unused parts of dependencies).
    for command in available_commands():
        help_out = podman(
            image_env, "run", "--rm", "--read-only", "--network=none", image, command, "--help"
        )
        assert help_out.stdout.startswith(f"usage: tierwise {command}"), help_out.stderr
    probe = podman(
        image_env,
        "run",
        "--rm",
        "--read-only",
        "--network=none",
        "--entrypoint",
        "python",
        image,
        "-c",
        "import tierwise.controller.operator_app, tierwise.controller.webhook, "
        "tierwise.router.server, orjson, uvloop; import os; print(os.getuid(), os.getgid())",
    )
    assert probe.stdout.split() == ["65532", "65532"], probe.stderr


def test_image_metadata(image: str, image_env: dict[str, str]) -> None:
    info = json.loads(podman(image_env, "image", "inspect", image).stdout)[0]
    config = info["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["tierwise"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.title"] == "tierwise"
    assert labels["org.opencontainers.image.revision"]
    # Small: no build tools, pip or package caches. Guard against accidental growth.
    assert info["Size"] < 320_000_000, f"image grew to {info['Size'] / 1e6:.0f} MB"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def router_container(
    image: str, image_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, int, int]]:
    """Router + emulator in one read-only container; the router's ports published locally."""
    rendered = subprocess.run(
        [str(REPO_ROOT / ".venv/bin/tierwise"), "render", "-f", str(EXAMPLES)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    doc = json.loads(rendered)
    for tier in doc["tiers"].values():
        tier["endpoint"] = f"http://127.0.0.1:{EMULATOR_PORT}"
    doc["hash"] = content_hash(doc)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "router.json").write_text(json.dumps(doc))
    config_dir.chmod(0o755)
    (config_dir / "router.json").chmod(0o644)
    api_port, metrics_port = _free_port(), _free_port()
    name = f"tierwise-test-{uuid.uuid4().hex[:8]}"
    env_args = [f"--env={t['apiKeyEnv']}=tier-key" for t in doc["tiers"].values()]
    chains_before = iptables_chains()
    podman(
        image_env,
        "run",
        "--detach",
        "--init",
        "--read-only",
        f"--name={name}",
        # slirp4netns publishes ports without adding iptables rules to the host.
        "--network=slirp4netns",
        f"--publish=127.0.0.1:{api_port}:{ROUTER_PORT}",
        f"--publish=127.0.0.1:{metrics_port}:{METRICS_PORT}",
        f"--volume={config_dir}:/etc/tierwise:ro",
        *env_args,
        "--entrypoint=sh",
        image,
        "-c",
        f"tierwise emulator --host 127.0.0.1 --port {EMULATOR_PORT} --zero-latency & "
        f"exec tierwise router --config /etc/tierwise/router.json --host 0.0.0.0 "
        f"--port {ROUTER_PORT} --metrics-port {METRICS_PORT}",
    )
    try:
        yield name, api_port, metrics_port
    finally:
        logs = podman(image_env, "logs", name, check=False).stderr
        podman(image_env, "rm", "--force", "--time=5", name, check=False)
        assert iptables_chains() <= chains_before, "podman left iptables chains behind"
        print(logs[-3000:])


def _wait_ready(port: int, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("router in the container never became ready")
        time.sleep(0.3)


def test_router_serves_a_request_from_the_image(router_container: tuple[str, int, int]) -> None:
    _name, api_port, metrics_port = router_container
    _wait_ready(metrics_port)
    client = anthropic.Anthropic(
        base_url=f"http://127.0.0.1:{api_port}", api_key="client-key", max_retries=0
    )
    raw = client.messages.with_raw_response.create(
        model="tierwise/chat",
        max_tokens=64,
        messages=[{"role": "user", "content": "Say hello in five words."}],
    )
    message = raw.parse()
    assert message.type == "message"
    assert message.content and message.content[0].type == "text"
    assert raw.headers["x-tierwise-route"] == "chat"
    assert raw.headers["x-tierwise-tier"] in {"haiku", "sonnet", "opus"}
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert 'route="chat"' in metrics

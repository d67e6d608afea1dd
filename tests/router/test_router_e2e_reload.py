"""Hot reload of the config file (ConfigMap-style symlink swaps) and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from router_builder import HAIKU_MODEL, OPUS_MODEL, config, route, step, tier_env
from router_helpers import free_port, metric, metrics, raw_request, sdk, user, wait_for

pytestmark = pytest.mark.timeout(60)

RELOADS = "tierwise_router_config_reloads_total"


class ConfigMapDir:
    """A directory laid out like a mounted ConfigMap: the key is a symlink through
    ``..data``, and an update swaps ``..data`` to a new timestamped directory."""

    def __init__(self, root: Path, key: str = "router-config.json") -> None:
        self.root = root
        self.key = key
        self.generation = 0

    @property
    def path(self) -> Path:
        return self.root / self.key

    def write(self, content: str) -> None:
        self.generation += 1
        version = self.root / f"..2026_11_25_{self.generation:04d}"
        version.mkdir()
        (version / self.key).write_text(content)
        tmp_link = self.root / "..data_tmp"
        tmp_link.symlink_to(version.name)
        os.replace(tmp_link, self.root / "..data")  # atomic, as kubelet does
        if not self.path.is_symlink():
            self.path.symlink_to(f"..data/{self.key}")


def single(endpoint: str, tier: str) -> dict[str, Any]:
    return config(endpoint, routes=[route("triage", [step(tier, 100)])])


def test_good_and_bad_reloads(emu: Any, make_router: Any, tmp_path: Path) -> None:
    mount = ConfigMapDir(tmp_path)
    first = single(emu.base_url, "haiku")
    mount.write(json.dumps(first))
    router = make_router(mount.path, reload_interval=0.05)
    client = sdk(router)

    def tier() -> str:
        return client.messages.with_raw_response.create(
            model="tierwise/triage", max_tokens=5, messages=user("x")
        ).headers["x-tierwise-tier"]

    assert tier() == "haiku"
    second = single(emu.base_url, "opus")
    mount.write(json.dumps(second))
    wait_for(lambda: metric(metrics(router.metrics_url), RELOADS, result="success") == 2)
    assert tier() == "opus"
    assert emu.recorded_requests()[-1].model == OPUS_MODEL
    s = metrics(router.metrics_url)
    assert metric(s, "tierwise_router_config_info", hash=second["hash"]) == 1
    assert metric(s, "tierwise_router_config_info", hash=first["hash"]) == 0

    # A bad file: the last good config keeps serving, and the failure is visible.
    mount.write('{"schemaVersion": "tierwise.dev/router-config/v1", "routes": []}')
    wait_for(lambda: metric(metrics(router.metrics_url), RELOADS, result="failure") == 1)
    s = metrics(router.metrics_url)
    assert metric(s, "tierwise_router_config_last_reload_successful") == 0
    assert metric(s, "tierwise_router_config_info", hash=second["hash"]) == 1
    assert tier() == "opus"
    mount.write("{ not json")
    wait_for(lambda: metric(metrics(router.metrics_url), RELOADS, result="failure") == 2)
    assert tier() == "opus"

    # Fixing the file recovers.
    mount.write(json.dumps(single(emu.base_url, "haiku")))
    wait_for(
        lambda: (
            metric(metrics(router.metrics_url), "tierwise_router_config_last_reload_successful")
            == 1
        )
    )
    assert tier() == "haiku"
    assert emu.recorded_requests()[-1].model == HAIKU_MODEL


def test_an_unchanged_file_is_not_reloaded(emu: Any, make_router: Any, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(single(emu.base_url, "haiku")))
    router = make_router(path, reload_interval=0.02)
    time.sleep(0.3)
    os.utime(path)  # touched, same content
    time.sleep(0.2)
    assert metric(metrics(router.metrics_url), RELOADS) == 1  # only the initial load


# --- the command -------------------------------------------------------------------------


def tierwise(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tierwise.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        **kwargs,
    )


def test_help_explains_every_flag() -> None:
    result = tierwise("router", "--help")
    assert result.returncode == 0
    for flag in (
        "--config",
        "--host",
        "--port",
        "--metrics-host",
        "--metrics-port",
        "--max-body-bytes",
        "--reload-interval",
        "--log-level",
    ):
        assert flag in result.stdout


def test_startup_with_an_invalid_file_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "schemaVersion": "tierwise.dev/router-config/v1",
                "routes": [{"name": "r", "steps": [{"tier": "ghost"}]}],
                "tiers": {},
            }
        )
    )
    result = tierwise("router", "--config", str(bad))
    assert result.returncode == 2
    assert "invalid router config" in result.stderr and "ghost" in result.stderr
    missing = tierwise("router", "--config", str(tmp_path / "missing.json"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_the_command_serves_until_terminated(emu: Any, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(single(emu.base_url, "haiku")))
    port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tierwise.cli",
            "router",
            "--config",
            str(path),
            "--port",
            str(port),
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(metrics_port),
        ],
        env={**os.environ, **tier_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return (
                    raw_request(f"http://127.0.0.1:{metrics_port}", "/readyz", method="GET")[0]
                    == 200
                )
            except OSError:
                return False

        wait_for(up, timeout=20, interval=0.1)
        body = {"model": "tierwise/triage", "max_tokens": 5, "messages": user("x")}
        status, headers, _ = raw_request(url, "/v1/messages", body)
        assert status == 200 and headers["x-tierwise-tier"] == "haiku"
        assert (
            emu.recorded_requests()[-1].headers["x-api-key"]
            == tier_env()["TIERWISE_TIER_HAIKU_API_KEY"]
        )
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "tier-key" not in stderr  # no key in logs

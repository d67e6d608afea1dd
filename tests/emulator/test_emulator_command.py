"""``tierwise emulator``: help text and a real process serving the SDK."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import pytest
from emulator_helpers import HAIKU, user

from tierwise.cli import main

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]


def test_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["emulator", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--host",
        "--port",
        "--profiles",
        "--dataset",
        "--seed",
        "--zero-latency",
        "--api-key",
    ):
        assert flag in out
    assert "8090" in out and "127.0.0.1" in out
    assert "repeatable" in out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_serves_until_terminated(tmp_path: Path) -> None:
    dataset = tmp_path / "items.jsonl"
    dataset.write_text(json.dumps({"input": "card was charged twice", "label": "billing"}) + "\n")
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tierwise.cli",
            "emulator",
            "--port",
            str(port),
            "--zero-latency",
            "--dataset",
            str(dataset),
            "--api-key",
            "k1",
            "--api-key",
            "k2",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = anthropic.Anthropic(
            base_url=f"http://127.0.0.1:{port}", api_key="k2", max_retries=0
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                message = client.messages.create(
                    model=HAIKU, max_tokens=50, messages=user("card was charged twice")
                )
                break
            except anthropic.APIConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert json.loads(message.content[0].text)["label"] == "billing"
        wrong_key = anthropic.Anthropic(
            base_url=f"http://127.0.0.1:{port}", api_key="k3", max_retries=0
        )
        with pytest.raises(anthropic.AuthenticationError):
            wrong_key.messages.create(model=HAIKU, max_tokens=5, messages=user("q"))
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "emulator serving on http://127.0.0.1" in err


def test_cli_reports_a_bad_profile_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("models:\n  x:\n    nonsense: 1\n")
    assert main(["emulator", "--profiles", str(bad)]) == 2
    assert "unknown fields" in capsys.readouterr().err

"""The wheel holds the product and nothing else: no test harness, no tests, no hack scripts.

Built with ``pip wheel`` exactly as a release would be; the file list is read from the
archive itself.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = out.glob("tierwise-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_only_the_tierwise_package(wheel_files):
    top = {name.split("/")[0] for name in wheel_files}
    assert top == {"tierwise", next(t for t in top if t.endswith(".dist-info"))}


def test_the_wheel_carries_no_harness(wheel_files):
    harness = [
        name
        for name in wheel_files
        if "localcluster" in name or "harness" in name or "podrunner" in name
    ]
    assert harness == []


def test_the_wheel_carries_every_command(wheel_files):
    from tierwise.cli import COMMANDS

    for module, _help in COMMANDS.values():
        assert module.replace(".", "/") + ".py" in wheel_files, module
    assert "tierwise/py.typed" in wheel_files

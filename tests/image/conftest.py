"""The container image tests: build the real Dockerfile with buildah, run it with podman.

They are slow on a cold machine (tools, the Debian base, the build), so a plain ``pytest`` run
deselects them; ``make test-image`` (run by CI) selects them with ``--image``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def podman_env() -> dict[str, str]:
    conf = subprocess.run(
        [str(REPO_ROOT / "hack/image/install-tools.sh")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {**os.environ, "CONTAINERS_CONF": conf}


@pytest.fixture(scope="session")
def image_env() -> dict[str, str]:
    return podman_env()


@pytest.fixture(scope="session")
def image(image_env: dict[str, str]) -> Iterator[str]:
    """The image ``make image`` builds (built here when missing; layers are cached)."""
    name = os.environ.get("TIERWISE_IMAGE")
    if not name:
        name = subprocess.run(
            [str(REPO_ROOT / "hack/image/build.sh")],
            check=True,
            capture_output=True,
            text=True,
            env=image_env,
            timeout=1200,
        ).stdout.strip()
    yield name

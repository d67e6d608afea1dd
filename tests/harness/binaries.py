"""Where the control plane binaries come from: a prebuilt directory, or hack/controlplane/build.sh.

The binaries are built from the Go module proxy by the repository's build script and cached
per version under ``${XDG_CACHE_HOME:-~/.cache}/tierwise/controlplane/``. Set
``TIERWISE_CONTROLPLANE_BIN_DIR`` to use binaries from elsewhere (for example a directory a CI
cache restored).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

BIN_DIR_ENV = "TIERWISE_CONTROLPLANE_BIN_DIR"
BUILD_SCRIPT = Path("hack") / "controlplane" / "build.sh"


class BinariesUnavailable(RuntimeError):
    """The control plane binaries could neither be found nor built."""


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path

    @classmethod
    def in_directory(cls, directory: Path) -> Binaries:
        binaries = cls(
            etcd=directory / "etcd",
            kube_apiserver=directory / "kube-apiserver",
            kube_controller_manager=directory / "kube-controller-manager",
        )
        missing = [str(p) for p in binaries.all() if not os.access(p, os.X_OK)]
        if missing:
            raise BinariesUnavailable(f"missing control plane binaries: {', '.join(missing)}")
        return binaries

    def all(self) -> tuple[Path, Path, Path]:
        return (self.etcd, self.kube_apiserver, self.kube_controller_manager)


def find_repo_root(start: Path | None = None) -> Path | None:
    """The checkout holding hack/controlplane/build.sh, searched upwards from this file."""
    here = (start or Path(__file__)).resolve()
    for candidate in (here, *here.parents):
        if (candidate / BUILD_SCRIPT).is_file():
            return candidate
    return None


def ensure_binaries(repo_root: Path | None = None) -> Binaries:
    """Return the binaries, building them first (minutes, once per version) if needed."""
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        return Binaries.in_directory(Path(override))
    root = repo_root or find_repo_root()
    if root is None:
        raise BinariesUnavailable(
            f"{BUILD_SCRIPT} not found; run from a Tierwise checkout or set {BIN_DIR_ENV}"
        )
    # build.sh prints progress on stderr (inherited, so a first build is visibly busy) and
    # the binary directory on stdout.
    result = subprocess.run(
        ["bash", str(root / BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        raise BinariesUnavailable(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    return Binaries.in_directory(Path(result.stdout.strip().splitlines()[-1]))

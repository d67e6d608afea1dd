"""A local Kubernetes control plane for tests and demos, and a kubelet stand-in for Jobs.

- :class:`LocalControlPlane` runs real etcd, kube-apiserver and kube-controller-manager
  binaries (built from the Go module proxy by ``hack/controlplane/build.sh``) on 127.0.0.1.
- :class:`~harness.podrunner.PodRunner` plays the node for pods labelled
  ``tierwise.dev/local-run: "true"``: it runs their commands as local processes and reports
  the outcome through the pod status API. It is a test stand-in, not a kubelet.

``python -m harness up|down|env`` (or ``hack/controlplane.sh``) drives it from
a shell.
"""

from harness.binaries import Binaries, BinariesUnavailable, ensure_binaries
from harness.controlplane import ControlPlaneError, LocalControlPlane

__all__ = [
    "Binaries",
    "BinariesUnavailable",
    "ControlPlaneError",
    "LocalControlPlane",
    "ensure_binaries",
]

"""A local Kubernetes control plane for tests and demos, and a kubelet stand-in for Jobs.

- :class:`LocalControlPlane` runs real etcd, kube-apiserver and kube-controller-manager
  binaries (built from the Go module proxy by ``hack/controlplane/build.sh``) on 127.0.0.1.
- :class:`~tierwise.localcluster.podrunner.PodRunner` plays the node for pods labelled
  ``tierwise.dev/local-run: "true"``: it runs their commands as local processes and reports
  the outcome through the pod status API. It is a test stand-in, not a kubelet.

``python -m tierwise.localcluster up|down|env`` (or ``hack/controlplane.sh``) drives it from
a shell.
"""

from tierwise.localcluster.binaries import Binaries, BinariesUnavailable, ensure_binaries
from tierwise.localcluster.controlplane import ControlPlaneError, LocalControlPlane

__all__ = [
    "Binaries",
    "BinariesUnavailable",
    "ControlPlaneError",
    "LocalControlPlane",
    "ensure_binaries",
]

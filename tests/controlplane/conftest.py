"""Fixtures running the operator against the local control plane."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_process import OPERATOR_USER, OperatorProcess, bind_operator_identity

from harness.kubectl import Kubectl


@pytest.fixture(scope="module")
def operator_kubeconfig(controlplane, kubectl: Kubectl, user_kubeconfig) -> Path:
    return bind_operator_identity(kubectl, user_kubeconfig, OPERATOR_USER, ["tierwise-operator"])


@pytest.fixture(scope="module")
def operator(operator_kubeconfig: Path, tmp_path_factory) -> Iterator[OperatorProcess]:
    """The operator without injection, under the identity of its ClusterRole only."""
    process = OperatorProcess(
        operator_kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log"
    )
    process.start()
    yield process
    process.stop()

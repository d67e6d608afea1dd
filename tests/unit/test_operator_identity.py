"""The operator's kopf peering identity does not depend on the password database."""

from __future__ import annotations

import getpass
import os

import pytest

from tierwise.controller.command import peering_identity


def test_peering_identity_is_the_pod_name_without_a_password_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In the image the operator runs as UID 65532, which has no /etc/passwd entry: kopf's own
    # identity (getpass.getuser()) raises there, so the operator must not fall back to it.
    def no_entry() -> str:
        raise KeyError(f"getpwuid(): uid not found: {os.getuid()}")

    monkeypatch.setattr(getpass, "getuser", no_entry)
    monkeypatch.setenv("POD_NAME", "tierwise-558bcf97-42zf7")
    assert peering_identity() == "tierwise-558bcf97-42zf7"


def test_peering_identity_is_left_to_kopf_outside_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    assert peering_identity() is None

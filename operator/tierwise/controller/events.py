"""Kubernetes Events about our objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tierwise.controller import kube


def emit(involved: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
    """Post one Event (``involved``: ``Observed.reference()``). Callers post on transitions
    only, so an Event is never repeated for the same change."""
    kube.post_event(involved, event_type, reason, message)

"""Kubernetes Events about our objects, posted through kopf's event machinery."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf


def emit(body: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
    post = kopf.info if event_type == "Normal" else kopf.warn
    post(dict(body), reason=reason, message=message[:1024])

"""Canonical JSON, the content hash and the printed form of a router config document."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(document: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the document without its ``hash`` field."""
    body = {k: v for k, v in document.items() if k != "hash"}
    return "sha256:" + hashlib.sha256(canonical_json(body).encode()).hexdigest()


def dump_document(document: Mapping[str, Any]) -> str:
    """The document as written to the ConfigMap and printed by ``tierwise render``."""
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"

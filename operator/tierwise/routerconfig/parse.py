"""Reading a router config document: from a file, bytes, or an already-decoded value."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tierwise.routerconfig.model import RouterConfig
from tierwise.routerconfig.reader import ConfigError, Reader


def parse(doc: Any, source: str = "config") -> RouterConfig:
    """Validate a decoded document; raises ``ConfigError`` listing every problem at once."""
    reader = Reader()
    config = RouterConfig.read(reader, doc)
    if reader.problems or config is None:
        raise ConfigError(reader.problems or ["empty document"], source)
    return config


def parse_bytes(data: bytes | str, source: str = "config") -> RouterConfig:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ConfigError([f"not valid JSON: {exc}"], source) from exc
    return parse(doc, source)


def load(source: str | os.PathLike[str] | Mapping[str, Any]) -> RouterConfig:
    """A validated config from a file path or an already-decoded document."""
    if isinstance(source, Mapping):
        return parse(source)
    path = Path(source)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror or exc}"], str(path)) from exc
    return parse_bytes(data, str(path))

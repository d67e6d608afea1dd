"""Conformance fixtures: raw HTTP against a zero-latency emulator, reset per test."""

from __future__ import annotations

import sys
from pathlib import Path

# The shared helpers live one directory up (test directories are not packages).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

"""Giving freed memory back to the system (glibc keeps freed heap pages otherwise).

CPython frees large objects at once, but glibc's allocator keeps most of the freed heap for
reuse, so a process that briefly held a lot (a resync over many objects, a request body
near the limit) keeps that RSS until ``malloc_trim`` returns it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable


def _libc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl, macOS): nothing to trim
        return None


_MALLOC_TRIM = _libc_trim()


def release_memory() -> None:
    """Collect cycles, then return the allocator's free pages to the system."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)

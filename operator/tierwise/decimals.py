"""Exact decimals from the numbers people write in YAML: the core's lowest floor.

Prices (``pricing``), thresholds and spec values (``api``) are parsed by this one function,
so a figure written as ``3``, ``"3.00"`` or ``0.1`` means the same exact ``Decimal``
everywhere. It imports nothing but the standard library.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def to_decimal(value: Any) -> Decimal:
    """Exact decimal of a price given as str, int or YAML float (via its shortest repr)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"not a number: {value!r}")
    return Decimal(str(value))

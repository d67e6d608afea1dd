"""Typed accessors that record problems instead of raising, so one parse reports them all."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any


class ConfigError(ValueError):
    """The document is not a valid router config; ``problems`` lists every reason."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"invalid router config ({source}): " + "; ".join(problems))


class Reader:
    """Each accessor returns a usable default after recording a problem with its JSON path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def obj(self, value: Any, path: str) -> Mapping[str, Any]:
        if isinstance(value, Mapping):
            return value
        self.bad(path, f"must be an object, got {kind_of(value)}")
        return {}

    def opt_obj(self, value: Any, path: str) -> Mapping[str, Any] | None:
        return None if value is None else self.obj(value, path)

    def string(self, value: Any, path: str) -> str:
        if isinstance(value, str) and value:
            return value
        self.bad(
            path,
            "must be a non-empty string"
            if isinstance(value, str)
            else f"must be a string, got {kind_of(value)}",
        )
        return ""

    def opt_string(self, value: Any, path: str) -> str | None:
        return None if value is None else self.string(value, path)

    def integer(
        self, value: Any, path: str, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value >= minimum
            and (maximum is None or value <= maximum)
        ):
            return value
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        self.bad(path, f"must be an integer {bound}, got {value!r}")
        return minimum

    def opt_integer(self, value: Any, path: str, *, minimum: int = 0) -> int | None:
        return None if value is None else self.integer(value, path, minimum=minimum)

    def number(self, value: Any, path: str, *, positive: bool = True) -> Decimal:
        """A finite decimal from a decimal string or a JSON number."""
        try:
            if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
                raise InvalidOperation
            number = Decimal(str(value))
            if not number.is_finite() or (positive and number <= 0) or number < 0:
                raise InvalidOperation
            return number
        except InvalidOperation:
            self.bad(
                path,
                f"must be a {'positive' if positive else 'non-negative'} number, got {value!r}",
            )
            return Decimal(1)

    def boolean(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        self.bad(path, f"must be true or false, got {value!r}")
        return default

    def strings(self, value: Any, path: str) -> tuple[str, ...]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        self.bad(path, "must be a list of strings")
        return ()

    def subset(self, value: Any, path: str, allowed: Collection[str], what: str) -> tuple[str, ...]:
        """A list of strings, each one of ``allowed``, duplicates dropped (first wins)."""
        items = self.strings(value, path)
        for item in items:
            if item not in allowed:
                self.bad(path, f"unknown {what} {item!r} (one of {sorted(allowed)})")
        return tuple(dict.fromkeys(i for i in items if i in allowed))

    def choice(self, value: Any, path: str, allowed: Collection[str], default: str) -> str:
        if value is None:
            return default
        if value in allowed:
            return str(value)
        self.bad(path, f"must be one of {sorted(allowed)}, got {value!r}")
        return default


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )

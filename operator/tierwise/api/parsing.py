"""Parse plain dicts (from YAML or the API server) into frozen dataclasses.

Each dataclass field maps to the camelCase JSON name of its snake_case Python name (or to
``metadata={"json": ...}``). Fields without a default are required; the defaults mirror the
CRDs' (a test keeps them in agreement), so an object parsed from a manifest equals the
same object read back from the API server after defaulting.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from decimal import Decimal
from typing import Any, Literal, TypeVar

from tierwise.decimals import to_decimal

T = TypeVar("T")


class SpecError(ValueError):
    """A resource does not fit its schema; ``path`` names the offending field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def json_name(field: dataclasses.Field[Any]) -> str:
    explicit = field.metadata.get("json")
    if explicit:
        return explicit
    head, *rest = field.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parse(cls: type[T], data: Any, path: str) -> T:
    """Build ``cls`` from ``data``; raise SpecError naming the path of the first problem."""
    if not isinstance(data, dict):
        raise SpecError(path, f"must be an object, got {_describe(data)}")
    fields = {json_name(f): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(
            f"{path}.{unknown[0]}", f"unknown field (known: {', '.join(sorted(fields))})"
        )
    hints = type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        if name in data and data[name] is not None:
            kwargs[field.name] = parse_value(hints[field.name], data[name], f"{path}.{name}")
        elif _is_required(field):
            raise SpecError(f"{path}.{name}", "required field is missing")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def parse_value(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return parse_value(inner, value, path)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = ", ".join(str(a) for a in allowed)
            raise SpecError(path, f"unsupported value {value!r}; supported values: {choices}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise SpecError(path, f"must be a list, got {_describe(value)}")
        item_hint = typing.get_args(hint)[0]
        return tuple(parse_value(item_hint, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise SpecError(path, "must be a map of strings")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, path)  # type: ignore[arg-type]
    return _parse_scalar(hint, value, path)


def _parse_scalar(hint: Any, value: Any, path: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise SpecError(path, f"must be true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(path, f"must be an integer, got {_describe(value)}")
        return value
    if hint is Decimal:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(path, f"must be a number, got {_describe(value)}")
        return to_decimal(value)
    if hint is str:
        if not isinstance(value, str):
            raise SpecError(path, f"must be a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported field type {hint!r} at {path}")


def _is_required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"

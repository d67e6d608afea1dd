"""The shadow document: a candidate config the sidecar runs beside the live one.

While a CascadePolicy's candidate is in the shadow stage, the operator writes this document
into the policy's ConfigMap under ``SHADOW_KEY``, beside the live ``router-config.json``;
the router finds it next to its config file. It holds the whole candidate router config
(the same format, ``routerconfig.parse``) and how to shadow it: which routes (the changed
ones, less those that opted out), how to compare answers, the sample rate, the concurrency,
the per-call deadline and the hourly spend limit. Without the key nothing is shadowed.

Pure: no I/O beyond decoding bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from tierwise.routerconfig.model import RouterConfig
from tierwise.routerconfig.parse import parse
from tierwise.routerconfig.reader import ConfigError

SHADOW_KEY = "shadow-config.json"  # the ConfigMap key and the file beside the router's config
SHADOW_SCHEMA_VERSION = "tierwise.dev/shadow/v1alpha1"
COMPARISONS = ("graderField", "exactText", "judge")
# The judge config's route for a judge tier (as the eval's judge routes are named).
JUDGE_ROUTE_PREFIX = "judge-"
# The request header with which a client keeps one request out of the shadow stage.
NO_SHADOW_HEADER = "x-tierwise-no-shadow"


@dataclass(frozen=True)
class ShadowRoute:
    """One shadowed route and how its answers are compared."""

    name: str
    comparison: str = "graderField"  # or exactText, or judge
    field: tuple[str, ...] = ("label",)  # the dot path compared (graderField)
    judge_tier: str | None = None  # judge: the tier that judges (a route of judge_config)
    criteria: str | None = None  # judge: what a good answer does

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "comparison": self.comparison,
            "field": ".".join(self.field),
        }
        if self.comparison == "judge":
            doc.update(judgeTier=self.judge_tier, criteria=self.criteria)
        return doc


@dataclass(frozen=True)
class ShadowSettings:
    candidate: RouterConfig
    routes: Mapping[str, ShadowRoute]
    sample_rate: float
    max_concurrency: int
    timeout_seconds: float
    spend_limit_per_hour_usd: Decimal
    # The judge tiers' router config (one route ``judge-<tier>`` each), when a route is
    # compared by a judge: its calls go through the same request path, deadline and cap.
    judge_config: RouterConfig | None = None

    @property
    def candidate_hash(self) -> str:
        return self.candidate.hash

    def to_document(self) -> dict[str, Any]:
        return {
            "schemaVersion": SHADOW_SCHEMA_VERSION,
            "sampleRate": self.sample_rate,
            "maxConcurrency": self.max_concurrency,
            "timeoutSeconds": self.timeout_seconds,
            "spendLimitPerHourUSD": str(self.spend_limit_per_hour_usd),
            "routes": [r.to_document() for r in self.routes.values()],
            "config": self.candidate.to_document(),
            **(
                {"judgeConfig": self.judge_config.to_document()}
                if self.judge_config is not None
                else {}
            ),
        }


def parse_shadow(doc: Any, source: str = "shadow config") -> ShadowSettings:
    """Validate a decoded shadow document; ``ConfigError`` lists every problem at once."""
    if not isinstance(doc, Mapping):
        raise ConfigError(["the shadow document must be a JSON object"], source)
    problems: list[str] = []
    if doc.get("schemaVersion") != SHADOW_SCHEMA_VERSION:
        problems.append(f"schemaVersion must be {SHADOW_SCHEMA_VERSION!r}")
    rate = _number(doc.get("sampleRate"), "sampleRate", problems)
    if rate is not None and not 0 < rate <= 1:
        problems.append("sampleRate must be above 0 and at most 1")
    concurrency = doc.get("maxConcurrency")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        problems.append("maxConcurrency must be an integer of at least 1")
    timeout = _number(doc.get("timeoutSeconds"), "timeoutSeconds", problems)
    if timeout is not None and timeout <= 0:
        problems.append("timeoutSeconds must be more than zero")
    limit = _number(doc.get("spendLimitPerHourUSD"), "spendLimitPerHourUSD", problems)
    if limit is not None and limit < 0:
        problems.append("spendLimitPerHourUSD must be zero or more")
    try:
        candidate = parse(doc.get("config"), f"{source}: config")
    except ConfigError as exc:
        problems.extend(f"config: {p}" for p in exc.problems)
        candidate = None
    judge = None
    if doc.get("judgeConfig") is not None:
        try:
            judge = parse(doc["judgeConfig"], f"{source}: judgeConfig")
        except ConfigError as exc:
            problems.extend(f"judgeConfig: {p}" for p in exc.problems)
    routes = _routes(doc.get("routes"), candidate, problems)
    for route in routes.values():
        wanted = f"{JUDGE_ROUTE_PREFIX}{route.judge_tier}"
        if route.comparison == "judge" and (judge is None or wanted not in judge.routes_by_name):
            problems.append(f"route {route.name!r}: judgeConfig has no route {wanted!r}")
    if problems or candidate is None:
        raise ConfigError(problems, source)
    assert rate is not None and timeout is not None and limit is not None
    return ShadowSettings(
        candidate=candidate,
        routes=routes,
        sample_rate=float(rate),
        max_concurrency=int(concurrency),  # type: ignore[arg-type]
        timeout_seconds=float(timeout),
        spend_limit_per_hour_usd=limit,
        judge_config=judge,
    )


def parse_shadow_bytes(data: bytes | str, source: str = "shadow config") -> ShadowSettings:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ConfigError([f"not valid JSON: {exc}"], source) from exc
    return parse_shadow(doc, source)


def _number(value: Any, name: str, problems: list[str]) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        problems.append(f"{name} must be a number")
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        problems.append(f"{name} must be a number, got {value!r}")
        return None
    if not number.is_finite():
        problems.append(f"{name} must be a finite number")
        return None
    return number


def _routes(
    value: Any, candidate: RouterConfig | None, problems: list[str]
) -> dict[str, ShadowRoute]:
    if not isinstance(value, list) or not value:
        problems.append("routes must be a non-empty list of the shadowed routes")
        return {}
    known = {r.name for r in candidate.routes} if candidate is not None else None
    routes: dict[str, ShadowRoute] = {}
    for i, item in enumerate(value):
        where = f"routes[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            problems.append(f"{where} must be an object with a name")
            continue
        name = item["name"]
        if known is not None and name not in known:
            problems.append(f"{where}: route {name!r} is not in the candidate config")
        if name in routes:
            problems.append(f"{where}: route {name!r} is listed twice")
        comparison = item.get("comparison", "graderField")
        if comparison not in COMPARISONS:
            problems.append(f"{where}.comparison must be one of {', '.join(COMPARISONS)}")
        field = item.get("field") or "label"
        if not isinstance(field, str) or not all(field.split(".")):
            problems.append(f"{where}.field must be a dot path such as label or result.label")
            field = "label"
        tier, criteria = item.get("judgeTier"), item.get("criteria")
        if comparison == "judge" and not isinstance(tier, str):
            problems.append(f"{where}.judgeTier must name the tier that judges")
        if criteria is not None and not isinstance(criteria, str):
            problems.append(f"{where}.criteria must be text")
            criteria = None
        routes[name] = ShadowRoute(
            name,
            comparison,
            tuple(field.split(".")),
            tier if comparison == "judge" and isinstance(tier, str) else None,
            criteria if comparison == "judge" else None,
        )
    return routes

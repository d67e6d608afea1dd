"""What the operator wants the world to look like, as plain data.

Pure functions from resource bodies (plain dicts, as the API server returns them) and render
results to the desired ConfigMap and status. The kopf handlers in ``policies.py`` and
``references.py`` only read indexes, call these, and write the difference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from tierwise import __version__
from tierwise.api import SpecError, parse_resource
from tierwise.controller.names import CONFIG_HASH_ANNOTATION, SIDECAR_NAME, config_map_name
from tierwise.pricing import (
    BUILTIN,
    PriceCatalog,
    Prices,
    PricingProblem,
    resolve_prices,
    retirement_notice,
)
from tierwise.render import CONFIG_KEY, RenderResult, dump_document

READY = "Ready"
RESOLVED_REFS = "ResolvedRefs"
# True while a tier's model retires within 30 days or has retired: a Warning, not an error.
MODEL_RETIRING = "ModelRetiring"
POLICY_LABEL = "tierwise.dev/policy"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str

    def to_dict(self, generation: int | None, transition_time: str) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": generation,
            "lastTransitionTime": transition_time,
        }


def merge_conditions(
    previous: Sequence[Mapping[str, Any]] | None,
    new: Iterable[Condition],
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """New conditions, keeping lastTransitionTime when a condition's status did not change."""
    before = {c.get("type"): c for c in previous or ()}
    merged = []
    for condition in new:
        old = before.get(condition.type)
        status = "True" if condition.status else "False"
        unchanged = (
            old is not None and old.get("status") == status and old.get("lastTransitionTime")
        )
        merged.append(
            condition.to_dict(generation, old["lastTransitionTime"] if unchanged else now)
        )
    return merged


def transitions(
    previous: Sequence[Mapping[str, Any]] | None, current: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Conditions whose status or reason changed: each deserves a Kubernetes Event."""
    before = {c.get("type"): c for c in previous or ()}
    return [
        c
        for c in current
        if (old := before.get(c["type"])) is None
        or (old.get("status"), old.get("reason")) != (c["status"], c["reason"])
    ]


# --- CascadePolicy -----------------------------------------------------------------------


def policy_conditions(result: RenderResult | None, spec_error: SpecError | None) -> list[Condition]:
    if spec_error is not None:
        message = str(spec_error)
        return [
            Condition(RESOLVED_REFS, False, "InvalidSpec", message),
            Condition(READY, False, "InvalidSpec", message),
        ]
    assert result is not None
    if result.problems:
        reason = result.problems[0].reason
        message = "; ".join(p.message for p in result.problems)
        return [
            Condition(RESOLVED_REFS, False, reason, message),
            Condition(READY, False, reason, f"keeping the last rendered config: {message}"),
        ]
    return [
        Condition(RESOLVED_REFS, True, "AllResolved", "every tier and the cache profile resolve"),
        Condition(
            READY, True, "Rendered", f"router config {result.document['hash']} is in its ConfigMap"
        ),  # type: ignore[index]
    ]


def desired_config_map(policy: Mapping[str, Any], document: Mapping[str, Any]) -> dict[str, Any]:
    """The ConfigMap holding a policy's router config, owned by the policy.

    No blockOwnerDeletion: it would need update rights on cascadepolicies/finalizers, and
    the garbage collector deletes the ConfigMap with the policy either way.
    """
    meta = policy["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {
                "app.kubernetes.io/managed-by": "tierwise",
                "app.kubernetes.io/version": __version__,
                POLICY_LABEL: meta["name"],
            },
            "annotations": {CONFIG_HASH_ANNOTATION: document["hash"]},
            "ownerReferences": [
                {
                    "apiVersion": policy["apiVersion"],
                    "kind": policy["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "data": {CONFIG_KEY: dump_document(document)},
    }


def config_map_up_to_date(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    if current is None:
        return False
    annotations = (current.get("metadata") or {}).get("annotations") or {}
    return (
        annotations.get(CONFIG_HASH_ANNOTATION)
        == desired["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
        and (current.get("data") or {}) == desired["data"]
    )


@dataclass(frozen=True)
class PodCounts:
    matching: int
    injected: int

    def to_dict(self) -> dict[str, int]:
        return {
            "matching": self.matching,
            "injected": self.injected,
            "withoutSidecar": self.matching - self.injected,
        }


def count_pods(pods: Iterable[Mapping[str, Any]]) -> PodCounts:
    matching = injected = 0
    for pod in pods:
        matching += 1
        init = (pod.get("spec") or {}).get("initContainers") or []
        injected += any(c.get("name") == SIDECAR_NAME for c in init)
    return PodCounts(matching, injected)


def policy_status(
    policy: Mapping[str, Any],
    result: RenderResult | None,
    spec_error: SpecError | None,
    pods: PodCounts | None,
    now: str,
) -> dict[str, Any]:
    """The whole desired status; fields it does not know (e.g. eval figures) are kept."""
    previous = dict(policy.get("status") or {})
    generation = policy["metadata"].get("generation")
    conditions = merge_conditions(
        previous.get("conditions"), policy_conditions(result, spec_error), generation, now
    )
    status = {**previous, "observedGeneration": generation, "conditions": conditions}
    status["configMap"] = config_map_name(policy["metadata"]["name"])
    if result is not None and result.document is not None:
        document = result.document
        status["configHash"] = document["hash"]
        status["routeCount"] = len(document["routes"])
        status["tierCount"] = len(document["tiers"])
    if pods is not None:
        status["pods"] = pods.to_dict()
    return status


def render_inputs(
    policy: Mapping[str, Any],
    tiers: Iterable[Mapping[str, Any]],
    profiles: Iterable[Mapping[str, Any]],
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Parsed policy and the parsed tiers/profiles of its namespace, keyed by name.

    A tier or profile that fails to parse is left out, so the policy reports it as not
    found rather than failing as a whole; its own status says why.
    """
    parsed_policy = parse_resource(dict(policy))
    return parsed_policy, _parse_named(tiers), _parse_named(profiles)


def _parse_named(bodies: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    parsed = {}
    for body in bodies:
        try:
            resource = parse_resource(dict(body))
        except SpecError:
            continue
        parsed[resource.name] = resource
    return parsed


def label_selector_string(selector: Mapping[str, Any] | None) -> str | None:
    """A LabelSelector as the query string the API accepts; None selects no pods."""
    if selector is None:
        return None
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], ",".join(expr.get("values") or [])
        parts.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[op]
        )
    return ",".join(parts)


# --- ModelTier and CacheProfile ----------------------------------------------------------


def tier_status(
    tier: Mapping[str, Any],
    used_by: int,
    now: str,
    catalog: PriceCatalog = BUILTIN,
    today: date | None = None,
) -> dict[str, Any]:
    previous = dict(tier.get("status") or {})
    generation = tier["metadata"].get("generation")
    status: dict[str, Any] = {**previous, "observedGeneration": generation, "usedBy": used_by}
    conditions: list[Condition] = []
    try:
        spec = parse_resource(dict(tier)).spec
    except SpecError as exc:
        conditions.append(Condition(READY, False, "InvalidSpec", str(exc)))
    else:
        overrides = spec.pricing.as_overrides() if spec.pricing else None
        prices = resolve_prices(spec.model, overrides, catalog)
        if isinstance(prices, PricingProblem):
            conditions.append(Condition(READY, False, prices.reason, prices.message))
            status.pop("pricing", None)
        else:
            conditions.append(Condition(READY, True, "Priced", _priced_message(spec.model, prices)))
            rates = prices.rates.to_document()
            status["pricing"] = {**rates, "source": prices.source}
        conditions.append(_retirement_condition(spec.model, catalog, today))
    status["conditions"] = merge_conditions(previous.get("conditions"), conditions, generation, now)
    return status


def _retirement_condition(model: str, catalog: PriceCatalog, today: date | None) -> Condition:
    notice = retirement_notice(model, today or datetime.now(UTC).date(), catalog)
    if notice is not None:
        return Condition(MODEL_RETIRING, True, notice.reason, notice.message)
    entry = catalog.entry(model)
    if entry is not None and entry.retires is not None:
        message = f"model {model!r} retires on {entry.retires.isoformat()}"
        return Condition(MODEL_RETIRING, False, "RetiresLater", message)
    return Condition(
        MODEL_RETIRING, False, "NoRetirementScheduled", f"model {model!r} has no retirement date"
    )


def _priced_message(model: str, prices: Prices) -> str:
    return f"{model} at ${prices.rates.input}/${prices.rates.output} per million input/output tokens ({prices.source})"


def cache_profile_status(profile: Mapping[str, Any], used_by: int, now: str) -> dict[str, Any]:
    previous = dict(profile.get("status") or {})
    generation = profile["metadata"].get("generation")
    status: dict[str, Any] = {**previous, "observedGeneration": generation, "usedBy": used_by}
    try:
        spec = parse_resource(dict(profile)).spec
    except SpecError as exc:
        condition = Condition(READY, False, "InvalidSpec", str(exc))
    else:
        cache = spec.response_cache
        status["responseCache"] = cache.backend if cache and cache.enabled else "off"
        condition = Condition(READY, True, "Valid", "prompt and response cache settings are valid")
    status["conditions"] = merge_conditions(
        previous.get("conditions"), [condition], generation, now
    )
    return status


def policies_using(
    policies: Iterable[Mapping[str, Any]], *, tier: str | None = None, profile: str | None = None
) -> list[Mapping[str, Any]]:
    """Policies (bodies) whose steps or fallback use ``tier``, or that use ``profile``."""
    found = []
    for policy in policies:
        spec = policy.get("spec") or {}
        if (tier is not None and tier in tier_names(spec)) or (
            profile is not None and (spec.get("cacheProfileRef") or {}).get("name") == profile
        ):
            found.append(policy)
    return found


def tier_names(spec: Mapping[str, Any]) -> set[str]:
    """Tiers a policy spec (plain dict) uses: every step's, and the fallback's."""
    names = {
        step.get("tier") for route in spec.get("routes") or [] for step in route.get("steps") or []
    }
    if spec.get("fallback"):
        names.add(spec["fallback"].get("tier"))
    return names

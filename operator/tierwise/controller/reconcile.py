"""What the operator wants the world to look like, as plain data.

Pure functions from observed objects (``objects.Observed``: parsed once at the kopf
boundary) and render results to the desired ConfigMap and status. The kopf handlers in
``policies.py`` and ``references.py`` only read indexes, call these, and write the difference.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from tierwise import __version__
from tierwise.api import SpecError
from tierwise.api.models import LabelSelector
from tierwise.controller.conditions import Condition, merge_conditions
from tierwise.controller.names import CONFIG_HASH_ANNOTATION, config_map_name
from tierwise.controller.objects import Observed, cache_profile_spec, tier_spec
from tierwise.pricing import (
    BUILTIN,
    PriceCatalog,
    Prices,
    PricingProblem,
    resolve_prices,
    retirement_notice,
)
from tierwise.render import CONFIG_KEY, RenderResult, content_hash, dump_document
from tierwise.routerconfig.shadow import SHADOW_KEY

if TYPE_CHECKING:  # pods.py builds on this module's Condition
    from tierwise.controller.pods import PodCounts

READY = "Ready"
# Positive polarity like every condition here: False while a tier's model retires within 30
# days or has retired (a Warning: the tier still works until the date).
MODEL_SUPPORTED = "ModelSupported"
RESOLVED_REFS = "ResolvedRefs"
POLICY_LABEL = "tierwise.dev/policy"


# --- CascadePolicy -----------------------------------------------------------------------


def policy_conditions(
    result: RenderResult | None,
    spec_error: SpecError | None,
    has_config: bool = False,
    write_error: str | None = None,
    no_live: str | None = None,
    write_reason: str | None = None,
) -> list[Condition]:
    """``has_config``: a ConfigMap from an earlier render exists (and is kept);
    ``write_error``: why the rendered config could not be written to it (``write_reason``,
    ConfigMapWriteFailed by default); ``no_live``: why no config is live although one
    rendered (a gated policy whose config did not pass)."""
    keeping = "keeping the last rendered config" if has_config else "no router config yet"
    if write_error is not None and spec_error is None and result is not None:
        return [
            Condition(
                RESOLVED_REFS, True, "AllResolved", "every tier and the cache profile resolve"
            ),
            Condition(
                READY, False, write_reason or "ConfigMapWriteFailed", f"{keeping}: {write_error}"
            ),
        ]
    if spec_error is not None:
        message = str(spec_error)
        return [
            Condition(RESOLVED_REFS, False, "InvalidSpec", message),
            Condition(READY, False, "InvalidSpec", f"{keeping}: {message}"),
        ]
    assert result is not None
    if result.problems:
        reason = result.problems[0].reason
        message = "; ".join(p.message for p in result.problems)
        return [
            Condition(RESOLVED_REFS, False, reason, message),
            Condition(READY, False, reason, f"{keeping}: {message}"),
        ]
    resolved = Condition(
        RESOLVED_REFS, True, "AllResolved", "every tier and the cache profile resolve"
    )
    if no_live is not None:
        return [resolved, Condition(READY, False, "NoLiveConfig", no_live)]
    return [
        resolved,
        Condition(
            READY, True, "Rendered", f"router config {result.document['hash']} is in its ConfigMap"
        ),  # type: ignore[index]
    ]


def models_condition(document: Mapping[str, Any], catalog: PriceCatalog, today: date) -> Condition:
    """``ModelSupported`` of a policy: False when a route (or the fallback) sends requests to
    a tier whose model retired, or retires within 30 days. The tier says so as well, but it
    is the policy's routes that fail."""
    users: dict[str, list[str]] = {}  # tier -> who sends to it
    for route in document.get("routes") or []:
        for step in route.get("steps") or []:
            users.setdefault(step["tier"], []).append(f"route {route['name']}")
    fallback = (document.get("fallback") or {}).get("tier")
    if fallback:
        users.setdefault(fallback, []).append("the fallback")
    notices = []
    for tier, who in users.items():
        model = ((document.get("tiers") or {}).get(tier) or {}).get("model")
        notice = retirement_notice(model, today, catalog) if model else None
        if notice is not None:
            notices.append(
                (notice, f"{', '.join(dict.fromkeys(who))} (tier {tier}): {notice.message}")
            )
    if not notices:
        return Condition(
            MODEL_SUPPORTED,
            True,
            "AllModelsSupported",
            "no route uses a model that retired or retires within 30 days",
        )
    notices.sort(key=lambda n: not n[0].retired)  # retired first
    return Condition(MODEL_SUPPORTED, False, notices[0][0].reason, "; ".join(m for _, m in notices))


def desired_config_map(
    policy: Observed,
    document: Mapping[str, Any],
    name: str | None = None,
    shadow: str | None = None,
) -> dict[str, Any]:
    """The ConfigMap holding a policy's router config, owned by the policy (``name``: the
    live one by default; the operator's copy of the promoted config is another), and while
    a candidate is shadowed, the shadow document beside it (``shadow``, under SHADOW_KEY).

    No blockOwnerDeletion: it would need update rights on cascadepolicies/finalizers, and
    the garbage collector deletes the ConfigMap with the policy either way.
    """
    owner = policy.reference()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name or config_map_name(policy.name),
            "namespace": policy.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "tierwise",
                "app.kubernetes.io/version": __version__,
                POLICY_LABEL: policy.name,
            },
            "annotations": {CONFIG_HASH_ANNOTATION: document["hash"]},
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": policy.name,
                    "uid": policy.uid,
                    "controller": True,
                }
            ],
        },
        "data": {CONFIG_KEY: dump_document(document)}
        | ({} if shadow is None else {SHADOW_KEY: shadow}),
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


def holds_config(current: Mapping[str, Any] | None, config_hash: str) -> dict[str, Any] | None:
    """The document in ``current`` (a ConfigMap as ``desired_config_map`` writes it) when it
    is exactly config ``config_hash``: its content hashes to it, its annotation names it,
    and its data is what the operator writes, byte for byte. None otherwise (absent,
    edited, invalid)."""
    if current is None:
        return None
    annotations = (current.get("metadata") or {}).get("annotations") or {}
    data = current.get("data") or {}
    # The shadow document beside the config is the rollout's to check (``shadow_text``).
    keys = set(data) - {SHADOW_KEY}
    if annotations.get(CONFIG_HASH_ANNOTATION) != config_hash or keys != {CONFIG_KEY}:
        return None
    try:
        document = json.loads(data[CONFIG_KEY])
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or document.get("hash") != config_hash:
        return None
    if content_hash(document) != config_hash or dump_document(document) != data[CONFIG_KEY]:
        return None
    return document


def policy_status(
    policy: Observed,
    result: RenderResult | None,
    pods: PodCounts | None,
    now: str,
    *,
    previous: Mapping[str, Any] | None = None,
    has_config: bool = False,
    write_error: str | None = None,
    no_live: str | None = None,
    extra_conditions: Iterable[Condition] = (),
    write_reason: str | None = None,
) -> dict[str, Any]:
    """The whole desired status; fields it does not know (e.g. eval figures) are kept.
    ``extra_conditions``: other concerns' conditions (the rollout's Promoted, Progressing).

    ``previous``: the status last written, when newer than the observed one. ``has_config``:
    the policy's ConfigMap exists (written now or by an earlier render).
    """
    previous = dict(policy.status if previous is None else previous)
    conditions = merge_conditions(
        previous.get("conditions"),
        [
            *policy_conditions(
                result, policy.error, has_config, write_error, no_live, write_reason
            ),
            *extra_conditions,
        ],
        policy.generation,
        now,
    )
    status = {**previous, "observedGeneration": policy.generation, "conditions": conditions}
    if has_config:
        status["configMap"] = config_map_name(policy.name)
    else:
        status.pop("configMap", None)  # never name a ConfigMap that does not exist
    if result is not None and result.document is not None and write_error is None:
        document = result.document
        status["configHash"] = document["hash"]
        status["routeCount"] = len(document["routes"])
        status["tierCount"] = len(document["tiers"])
    if pods is not None:
        status["pods"] = pods.to_dict()
    return status


def label_selector_string(selector: LabelSelector | None) -> str | None:
    """A LabelSelector as the query string the API accepts; None selects no pods."""
    if selector is None:
        return None
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for expr in selector.match_expressions or ():
        key, op, values = expr.key, expr.operator, ",".join(expr.values or ())
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
    tier: Observed,
    used_by: int,
    now: str,
    previous: Mapping[str, Any] | None = None,
    catalog: PriceCatalog = BUILTIN,
    today: date | None = None,
) -> dict[str, Any]:
    previous = dict(tier.status if previous is None else previous)
    generation = tier.generation
    status: dict[str, Any] = {**previous, "observedGeneration": generation, "usedBy": used_by}
    conditions: list[Condition] = []
    spec = tier_spec(tier)
    if spec is None:
        conditions.append(Condition(READY, False, "InvalidSpec", str(tier.error)))
    else:
        overrides = spec.price_overrides()
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
        return Condition(MODEL_SUPPORTED, False, notice.reason, notice.message)
    entry = catalog.entry(model)
    if entry is not None and entry.retires is not None:
        message = f"model {model!r} retires on {entry.retires.isoformat()}"
        return Condition(MODEL_SUPPORTED, True, "RetiresLater", message)
    return Condition(
        MODEL_SUPPORTED, True, "NoRetirementScheduled", f"model {model!r} has no retirement date"
    )


def _priced_message(model: str, prices: Prices) -> str:
    return f"{model} at ${prices.rates.input}/${prices.rates.output} per million input/output tokens ({prices.source})"


def cache_profile_status(
    profile: Observed, used_by: int, now: str, previous: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    previous = dict(profile.status if previous is None else previous)
    generation = profile.generation
    status: dict[str, Any] = {**previous, "observedGeneration": generation, "usedBy": used_by}
    spec = cache_profile_spec(profile)
    if spec is None:
        condition = Condition(READY, False, "InvalidSpec", str(profile.error))
    else:
        cache = spec.response_cache
        status["responseCache"] = cache.backend if cache and cache.enabled else "off"
        condition = Condition(READY, True, "Valid", "prompt and response cache settings are valid")
    status["conditions"] = merge_conditions(
        previous.get("conditions"), [condition], generation, now
    )
    return status

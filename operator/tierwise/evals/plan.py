"""The eval plan: everything an eval needs besides the two configs, as plain data.

Built from a CascadePolicy's ``spec.evaluation`` (and the judge tiers it names) by the
operator, which mounts it into the eval Job, and by ``tierwise eval`` from local manifests;
both then run the same ``runner`` on it. Pure: no Kubernetes, no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tierwise.api import Resource
from tierwise.api.models import CascadePolicySpec, ConfigMapKeyRef, Evaluation, Grader
from tierwise.evals.gate import INCONCLUSIVE, PROMOTED, Decision, GateSpec
from tierwise.evals.graders import GraderSpec
from tierwise.render import Problem, SecretKeyEnv, api_key_env, content_hash, render_tier

PLAN_SCHEMA = "tierwise.dev/eval-plan/v1"
JUDGE_ROUTE = "judge"
CHANGED_EVALUATED = "changed, evaluated"
CHANGED_NOT_EVALUATED = "changed, not evaluated"
UNCHANGED = "unchanged"


@dataclass(frozen=True)
class RoutePlan:
    name: str
    dataset: str  # a file path (the mounted ConfigMap key, or a local file)
    grader: GraderSpec
    sample_size: int | None = None
    template: str | None = None

    def to_document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "grader": self.grader.to_document(),
            "sampleSize": self.sample_size,
            "template": self.template,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> RoutePlan:
        return cls(
            name=doc["name"],
            dataset=doc["dataset"],
            grader=GraderSpec.from_document(doc.get("grader") or {}),
            sample_size=doc.get("sampleSize"),
            template=doc.get("template"),
        )


@dataclass(frozen=True)
class EvalPlan:
    policy: str
    routes: tuple[RoutePlan, ...]
    gate: GateSpec
    judge_tiers: Mapping[str, Mapping[str, Any]]
    concurrency: int = 8
    timeout_seconds: int = 1800
    use_batch_api: bool = False
    unevaluated_routes: str = "Inconclusive"  # or "Promote" (spec.evaluation.unevaluatedRoutes)
    # With spec.evaluation.shadow: the routes that opt out of it (excludeRoutes). A changed
    # route without a dataset that is shadowed is left to the shadow stage. None: no stage.
    shadow_excluded: tuple[str, ...] | None = None

    def shadows(self, route: str) -> bool:
        """Whether the shadow stage gates ``route`` on live traffic after this eval."""
        return self.shadow_excluded is not None and route not in self.shadow_excluded

    def to_document(self) -> dict[str, Any]:
        return {
            "schemaVersion": PLAN_SCHEMA,
            "policy": self.policy,
            "routes": [r.to_document() for r in self.routes],
            "gate": self.gate.to_document(),
            "judgeTiers": {k: dict(v) for k, v in self.judge_tiers.items()},
            "concurrency": self.concurrency,
            "timeoutSeconds": self.timeout_seconds,
            "useBatchAPI": self.use_batch_api,
            "unevaluatedRoutes": self.unevaluated_routes,
            "shadowExcludedRoutes": None
            if self.shadow_excluded is None
            else list(self.shadow_excluded),
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> EvalPlan:
        if doc.get("schemaVersion") != PLAN_SCHEMA:
            raise ValueError(
                f"unknown eval plan schema {doc.get('schemaVersion')!r} (expected {PLAN_SCHEMA})"
            )
        return cls(
            policy=doc["policy"],
            routes=tuple(RoutePlan.from_document(r) for r in doc["routes"]),
            gate=GateSpec.from_document(doc["gate"]),
            judge_tiers=dict(doc.get("judgeTiers") or {}),
            concurrency=int(doc.get("concurrency", 8)),
            timeout_seconds=int(doc.get("timeoutSeconds", 1800)),
            use_batch_api=bool(doc.get("useBatchAPI", False)),
            unevaluated_routes=str(doc.get("unevaluatedRoutes", "Inconclusive")),
            shadow_excluded=None
            if doc.get("shadowExcludedRoutes") is None
            else tuple(str(r) for r in doc["shadowExcludedRoutes"]),
        )


@dataclass(frozen=True)
class PlanResult:
    plan: EvalPlan | None
    problems: tuple[Problem, ...] = ()
    key_envs: tuple[SecretKeyEnv, ...] = ()  # judge tiers' keys


def plan_for_policy(
    policy: Resource,
    tiers: Mapping[str, Resource],
    dataset_path: Callable[[ConfigMapKeyRef], str],
    *,
    routes: tuple[str, ...] | None = None,
) -> PlanResult:
    """The plan of ``policy``'s ``spec.evaluation`` (which must be set).

    ``dataset_path`` maps a dataset's ConfigMap reference to the file holding it (the mount
    path in a Job, a local file for ``tierwise eval``); ``routes`` keeps only those routes.
    """
    spec: CascadePolicySpec = policy.spec
    evaluation: Evaluation | None = spec.evaluation
    if evaluation is None:
        raise ValueError(f"CascadePolicy {policy.name} has no spec.evaluation")
    route_plans = []
    for route in evaluation.offline_routes():  # the others are left to the shadow stage
        if routes is not None and route.name not in routes:
            continue
        dataset = evaluation.dataset_for(route.name)
        route_plans.append(
            RoutePlan(
                name=route.name,
                dataset=dataset_path(dataset.config_map_ref),
                grader=_grader(evaluation.grader_for(route.name)),
                sample_size=dataset.sample_size,
                template=dataset.template,
            )
        )
    judge_tiers: dict[str, Mapping[str, Any]] = {}
    problems: list[Problem] = []
    key_envs: list[SecretKeyEnv] = []
    for name in evaluation.judge_tiers():
        rendered = render_tier(name, tiers, policy.namespace)
        if isinstance(rendered, Problem):
            problems.append(rendered)
            continue
        judge_tiers[name] = rendered
        ref = tiers[name].spec.api_key_secret_ref
        if ref is not None:
            key_envs.append(SecretKeyEnv(api_key_env(name), ref.name, ref.key))
    if problems:
        return PlanResult(None, tuple(problems))
    gate = evaluation.gate
    plan = EvalPlan(
        policy=f"{policy.namespace}/{policy.name}",
        routes=tuple(route_plans),
        gate=GateSpec(
            min_quality=float(gate.min_quality),
            max_quality_drop=_float(gate.max_quality_drop),
            max_cost_per_item=gate.max_cost_per_item,
            max_p95_latency_seconds=_float(gate.max_p95_latency_seconds),
            min_items=gate.min_items,
            max_error_rate=float(gate.max_error_rate),
            candidate_errors=gate.candidate_errors,
        ),
        judge_tiers=judge_tiers,
        concurrency=evaluation.concurrency,
        timeout_seconds=evaluation.timeout_seconds,
        use_batch_api=evaluation.use_batch_api,
        unevaluated_routes=evaluation.unevaluated_routes,
        shadow_excluded=None
        if evaluation.shadow is None
        else tuple(evaluation.shadow.exclude_routes or ()),
    )
    return PlanResult(plan, (), tuple(key_envs))


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _grader(grader: Grader) -> GraderSpec:
    return GraderSpec(
        type=grader.type,
        field=grader.field,
        values=tuple(grader.values or ()),
        pattern=grader.pattern,
        tier=grader.tier,
        criteria=grader.criteria,
    )


def strongest_tier_config(document: Mapping[str, Any]) -> dict[str, Any]:
    """The baseline of a policy without a promoted config: every route answered by its
    strongest tier (the route's counterfactual tier) in one step, nothing escalated."""
    doc = copy.deepcopy(dict(document))
    for route in doc["routes"]:
        strongest = route.get("counterfactualTier") or route["steps"][-1]["tier"]
        step = next((s for s in route["steps"] if s["tier"] == strongest), route["steps"][-1])
        route["steps"] = [
            {"tier": strongest, "maxTokens": step.get("maxTokens"), "escalateWhen": []}
        ]
    doc["hash"] = content_hash(doc)
    return doc


def route_changes(
    candidate: Mapping[str, Any], baseline: Mapping[str, Any], evaluated: Sequence[str]
) -> dict[str, str]:
    """Every route of either config: changed (and evaluated or not) or unchanged.

    A route changed when what serves its requests differs: its own settings, a tier it can
    reach (steps, counterfactual, the fallback) or the config-wide fallback, retry and cache
    settings. A route in only one of the configs changed.
    """
    cand, base = _route_prints(candidate), _route_prints(baseline)
    changes = {}
    for name in [*cand, *(n for n in base if n not in cand)]:
        if cand.get(name) == base.get(name):
            changes[name] = UNCHANGED
        else:
            changes[name] = CHANGED_EVALUATED if name in evaluated else CHANGED_NOT_EVALUATED
    return changes


def without_dataset(
    changes: Mapping[str, str],
    unevaluated_routes: str,
    shadows: Callable[[str], bool] | None = None,
) -> dict[str, Decision]:
    """A decision per changed route without a dataset (``route_changes``): left to the
    shadow stage when it gates the route (``shadows``; None: no shadow stage follows),
    else Inconclusive, or Promoted untested with ``unevaluatedRoutes: Promote``."""
    decisions = {}
    for name, change in changes.items():
        if change != CHANGED_NOT_EVALUATED:
            continue
        reason = f"route {name} changed and has no dataset"
        if shadows is not None and shadows(name):
            decisions[name] = Decision(
                PROMOTED, (f"{reason}: the shadow stage gates it on live traffic",)
            )
        elif unevaluated_routes == "Promote":
            decisions[name] = Decision(
                PROMOTED, (f"{reason}: promoted untested (unevaluatedRoutes: Promote)",)
            )
        else:
            decisions[name] = Decision(INCONCLUSIVE, (reason,))
    return decisions


def _route_prints(document: Mapping[str, Any]) -> dict[str, str]:
    """Per route, the content hash of everything that decides how it answers."""
    tiers = document.get("tiers") or {}
    shared = {k: document.get(k) for k in ("fallback", "retry", "cache")}
    fallback = (document.get("fallback") or {}).get("tier")
    prints = {}
    for route in document.get("routes") or []:
        names = {s.get("tier") for s in route.get("steps") or []}
        names |= {route.get("counterfactualTier"), fallback}
        reached = {n: tiers.get(n) for n in sorted(n for n in names if n)}
        prints[route["name"]] = content_hash({"route": route, "tiers": reached, **shared})
    return prints


def judge_config(
    document: Mapping[str, Any], judge_tiers: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any] | None:
    """A router config with one route per judge tier (``judge-<tier>``, rendered tiers by
    name), for the judge graders, the eval's and the shadow stage's: the judge's calls go
    through the same engine, retries and pricing."""
    if not judge_tiers:
        return None
    doc = copy.deepcopy(dict(document))
    doc["tiers"] = {k: dict(v) for k, v in judge_tiers.items()}
    doc["routes"] = [
        {
            "name": f"{JUDGE_ROUTE}-{name}",
            "models": [f"tierwise/{JUDGE_ROUTE}-{name}"],
            "mode": "interactive",
            "streamPolicy": "cascade",
            "formatInstruction": None,
            "counterfactualTier": name,
            "steps": [{"tier": name, "maxTokens": 256, "escalateWhen": []}],
        }
        for name in judge_tiers
    ]
    doc["defaultRoute"] = None
    doc["fallback"] = None
    doc["hash"] = content_hash(doc)
    return doc

"""Evals from local manifests (``tierwise eval -f``, ``tierwise calibrate``, CI).

Finds the policies with ``spec.evaluation``, renders them exactly as the operator does,
reads their datasets from the ConfigMap manifests next to them (or ``--dataset``), and
optionally points every tier at an in-process model emulator loaded with the datasets.
"""

from __future__ import annotations

import copy
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierwise.api import CASCADE_POLICY, Resource, load_manifests
from tierwise.api.manifests import DEFAULT_NAMESPACE, load_documents
from tierwise.api.models import ConfigMapKeyRef
from tierwise.evals.dataset import Dataset, DatasetError, load_dataset, parse_dataset
from tierwise.evals.plan import EvalPlan, plan_for_policy
from tierwise.render import Workspace, content_hash


class InputError(ValueError):
    """Bad input on the command line or in the manifests: exit status 2."""


@dataclass(frozen=True)
class LocalEval:
    policy: Resource
    plan: EvalPlan
    candidate: dict[str, Any]
    datasets: dict[str, Dataset]  # by route, sampled


def local_evals(
    paths: Sequence[str],
    *,
    policy: str | None = None,
    routes: Sequence[str] | None = None,
    dataset_file: str | None = None,
) -> list[LocalEval]:
    try:
        resources = load_manifests(paths)
    except FileNotFoundError as exc:
        raise InputError(str(exc)) from exc
    workspace = Workspace.of(resources)
    policies = [p for p in workspace.policies() if policy is None or p.name == policy]
    if policy is not None and not policies:
        raise InputError(f"no CascadePolicy named {policy!r} in {', '.join(paths)}")
    evaluated = [p for p in policies if p.spec.evaluation is not None]
    if not evaluated:
        named = (
            f"CascadePolicy {policy!r} has" if policy else "no CascadePolicy in the manifests has"
        )
        raise InputError(f"{named} no spec.evaluation, so there is nothing to gate")
    config_maps = _config_maps(paths)
    found = []
    for resource in evaluated:
        result = workspace.render(resource)
        if result.document is None:
            problems = "; ".join(p.message for p in result.problems)
            raise InputError(f"CascadePolicy {resource.name} does not render: {problems}")
        wanted = tuple(routes) if routes else None
        if wanted:
            known = {r.name for r in resource.spec.evaluation.offline_routes()}
            unknown = [r for r in wanted if r not in known]
            if unknown:
                raise InputError(
                    f"route {unknown[0]!r} is not evaluated by CascadePolicy {resource.name} "
                    f"(evaluated: {', '.join(sorted(known))})"
                )
        tiers = workspace.named("ModelTier", resource.namespace)
        plan_result = plan_for_policy(
            resource,
            tiers,
            lambda ref, ns=resource.namespace: dataset_file or _config_map_label(ns, ref),
            routes=wanted,
        )
        if plan_result.plan is None:
            problems = "; ".join(p.message for p in plan_result.problems)
            raise InputError(f"CascadePolicy {resource.name}: {problems}")
        plan = plan_result.plan
        datasets = {}
        for route in plan.routes:
            if dataset_file is not None:
                dataset = load_dataset(dataset_file)
            else:
                text, source = _config_map_text(config_maps, resource.namespace, route.dataset)
                dataset = parse_dataset(text, source)
            datasets[route.name] = dataset.sample(route.sample_size)
        found.append(LocalEval(resource, plan, result.document, datasets))
    return found


def baseline_document(paths: Sequence[str], policy: Resource) -> dict[str, Any]:
    """The same policy rendered from other manifests (``--baseline DIR``: e.g. main's)."""
    workspace = Workspace.of(load_manifests(paths))
    match = [p for p in workspace.policies() if p.key == policy.key]
    if not match:
        raise InputError(f"the baseline manifests have no CascadePolicy {policy.name}")
    result = workspace.render(match[0])
    if result.document is None:
        raise InputError(
            "the baseline does not render: " + "; ".join(p.message for p in result.problems)
        )
    return result.document


def _config_map_label(namespace: str, ref: ConfigMapKeyRef) -> str:
    return f"configmap:{namespace}/{ref.name}/{ref.key}"


def _config_maps(paths: Sequence[str]) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    found = {}
    for source, doc in load_documents(paths):
        if doc.get("kind") == "ConfigMap" and doc.get("apiVersion") == "v1":
            meta = doc.get("metadata") or {}
            key = (meta.get("namespace") or DEFAULT_NAMESPACE, str(meta.get("name")))
            found[key] = (source, doc)
    return found


def _config_map_text(
    config_maps: Mapping[tuple[str, str], tuple[str, dict[str, Any]]], namespace: str, label: str
) -> tuple[str, str]:
    _, rest = label.split(":", 1)
    ns, name, key = rest.split("/", 2)
    entry = config_maps.get((ns, name))
    if entry is None:
        raise InputError(
            f"dataset ConfigMap {name!r} (namespace {namespace!r}) is not in the manifests; "
            "add its manifest or pass --dataset FILE"
        )
    source, doc = entry
    data = doc.get("data") or {}
    if key not in data:
        raise InputError(
            f"ConfigMap {name!r} [{source}] has no key {key!r} (keys: {', '.join(sorted(data))})"
        )
    return str(data[key]), f"ConfigMap {name} key {key} [{source}]"


# --- the in-process emulator -----------------------------------------------------------------


@dataclass(frozen=True)
class EmulatorTask:
    """A route's dataset as the emulator answers it: in its grader's shape, with the
    confidence field its escalation signals read."""

    dataset: Dataset
    grader: Mapping[str, Any]
    confidence_field: str | None = "confidence"


def emulator_tasks(evals: Iterable[LocalEval]) -> list[EmulatorTask]:
    """Every evaluated route's dataset with the route's grader and confidence field."""
    return [
        route_task(found.plan, found.candidate, route.name, found.datasets[route.name])
        for found in evals
        for route in found.plan.routes
    ]


def route_task(
    plan: EvalPlan, candidate: Mapping[str, Any], route: str, dataset: Dataset
) -> EmulatorTask:
    """``dataset`` as the emulator should answer it on ``route`` of ``candidate``."""
    grader = next(r.grader for r in plan.routes if r.name == route)
    routes = {r["name"]: r for r in candidate.get("routes", [])}
    return EmulatorTask(dataset, grader.to_document(), _confidence_field(routes.get(route, {})))


def _confidence_field(route: Mapping[str, Any]) -> str | None:
    """The field a route's ``jsonFieldBelow`` signal reads (``confidence`` if none does)."""
    for step in route.get("steps", []):
        for signal in step.get("escalateWhen", []):
            if signal.get("signal") == "jsonFieldBelow" and signal.get("field"):
                return str(signal["field"])
    return "confidence"


def emulator_dataset(sources: Iterable[Dataset | EmulatorTask]) -> Any:
    """The items the emulator recognises: each route's items with its task (a bare dataset
    is graded by ``jsonField`` on ``label``)."""
    from tierwise.emulator import Dataset as EmulatorDataset
    from tierwise.emulator import DatasetItem, Task

    items: dict[str, DatasetItem] = {}
    labels: list[str] = []
    for source in sources:
        task_of = source if isinstance(source, EmulatorTask) else EmulatorTask(source, {})
        dataset = task_of.dataset
        task = Task.from_document(
            {**task_of.grader, "confidenceField": task_of.confidence_field}, dataset.labels
        )
        labels += dataset.labels
        for item in dataset.items:
            key = item.input if item.input is not None else _last_user_text(item.messages)
            if not key.strip():
                continue
            items.setdefault(
                key.strip(),
                DatasetItem(
                    key,
                    label=item.label,
                    expected=item.expected,
                    accept=item.accept,
                    pattern=item.pattern,
                    task=task,
                ),
            )
    if not items:
        return None
    used = {i.label for i in items.values() if i.label is not None}
    return EmulatorDataset(items.values(), list(dict.fromkeys([*labels, *sorted(used)])))


def _last_user_text(messages: Sequence[Mapping[str, Any]] | None) -> str:
    from tierwise.emulator.answers import last_user_text

    return last_user_text(list(messages or ()))


def point_at(document: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """A copy of a config (or of a plan's judge tiers) with every Anthropic tier's endpoint
    replaced. The emulator stands in for the Messages API only: a self-hosted tier (provider
    openai) keeps its own server, so its answers stay a real model's."""
    doc = copy.deepcopy(dict(document))
    for tier in doc["tiers"].values():
        if tier.get("provider", "anthropic") == "anthropic":
            tier["endpoint"] = base_url
    doc["hash"] = content_hash(doc)
    return doc


def emulator_env(*documents: Mapping[str, Any] | None) -> dict[str, str]:
    env = dict(os.environ)
    for doc in documents:
        for tier in (doc or {}).get("tiers", {}).values():
            if tier.get("apiKeyEnv"):
                env.setdefault(tier["apiKeyEnv"], "emulator")
    return env


@asynccontextmanager
async def maybe_emulator(
    enabled: bool,
    datasets: Iterable[Dataset | EmulatorTask],
    latency_scale: float,
    seed: int,
    *,
    notes: list[str] | None = None,
) -> AsyncIterator[str | None]:
    """The base URL of an in-process emulator serving ``datasets``, or None.

    ``notes`` receives, at the end, what the emulator could not follow: requests it did not
    recognise as an item of the datasets, and items whose task it could not answer."""
    if not enabled:
        yield None
        return
    from tierwise.emulator import EmulatorConfig, running_emulator

    config = EmulatorConfig(
        zero_latency=latency_scale == 0,
        latency_scale=latency_scale or 1.0,
        dataset=emulator_dataset(datasets),
        seed=seed,
    )
    async with running_emulator(config) as emu:
        assert emu.base_url is not None
        yield emu.base_url
        if notes is not None:
            notes.extend(emulator_notes(emu.engine.dataset_stats()))


def emulator_notes(stats: Mapping[str, int]) -> list[str]:
    """What the emulator says about the requests it answered from the datasets."""
    notes = []
    total = sum(stats.values())
    if stats.get("unrecognised"):
        notes.append(
            f"the emulator recognised no dataset item in {stats['unrecognised']}/{total} "
            "requests and echoed them (they grade as wrong): does the route's template or "
            "format instruction change the item's text?"
        )
    if stats.get("unanswerable"):
        notes.append(
            f"the emulator could not follow the grader for {stats['unanswerable']}/{total} "
            "requests (an item without the reference its grader needs?)"
        )
    return notes


def plan_with_endpoint(plan: EvalPlan, base_url: str) -> EvalPlan:
    from dataclasses import replace

    judges = {name: {**tier, "endpoint": base_url} for name, tier in plan.judge_tiers.items()}
    return replace(plan, judge_tiers=judges)


def check_paths(paths: Sequence[str]) -> None:
    for path in paths:
        if not Path(path).exists():
            raise InputError(f"no such file or directory: {path}")


__all__ = [
    "CASCADE_POLICY",
    "DatasetError",
    "EmulatorTask",
    "InputError",
    "LocalEval",
    "baseline_document",
    "check_paths",
    "emulator_env",
    "emulator_tasks",
    "local_evals",
    "maybe_emulator",
    "plan_with_endpoint",
    "point_at",
    "route_task",
]

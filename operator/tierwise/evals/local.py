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
            known = {r.name for r in resource.spec.evaluation.routes}
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


def emulator_dataset(datasets: Iterable[Dataset]) -> Any:
    """The labelled items the emulator answers (items with an input and a label)."""
    from tierwise.emulator import Dataset as EmulatorDataset
    from tierwise.emulator import DatasetItem

    items: dict[str, DatasetItem] = {}
    labels: list[str] = []
    for dataset in datasets:
        labels += dataset.labels
        for item in dataset.items:
            if item.input is not None and item.label is not None:
                items.setdefault(item.input.strip(), DatasetItem(item.input, item.label))
    if not items:
        return None
    used = {i.label for i in items.values()}
    return EmulatorDataset(items.values(), list(dict.fromkeys([*labels, *sorted(used)])))


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
    enabled: bool, datasets: Iterable[Dataset], latency_scale: float, seed: int
) -> AsyncIterator[str | None]:
    """The base URL of an in-process emulator serving ``datasets``, or None."""
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
    "InputError",
    "LocalEval",
    "baseline_document",
    "check_paths",
    "emulator_env",
    "local_evals",
    "maybe_emulator",
    "plan_with_endpoint",
    "point_at",
]

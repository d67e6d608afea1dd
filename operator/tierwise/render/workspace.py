"""Render every policy in a set of resources, resolving references per namespace."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tierwise.api import CACHE_PROFILE, CASCADE_POLICY, MODEL_TIER, Resource
from tierwise.render.document import RenderResult, render_policy


@dataclass(frozen=True)
class Workspace:
    """Tierwise resources indexed by kind, namespace and name."""

    resources: tuple[Resource, ...]

    @classmethod
    def of(cls, resources: Iterable[Resource]) -> Workspace:
        return cls(tuple(resources))

    def named(self, kind: str, namespace: str) -> dict[str, Resource]:
        return {r.name: r for r in self.resources if r.kind == kind and r.namespace == namespace}

    def policies(self) -> list[Resource]:
        return sorted((r for r in self.resources if r.kind == CASCADE_POLICY), key=lambda r: r.key)

    def render(self, policy: Resource, **options: Any) -> RenderResult:
        """``options`` are render_policy's keyword arguments (catalog, today)."""
        return render_policy(
            policy,
            self.named(MODEL_TIER, policy.namespace),
            self.named(CACHE_PROFILE, policy.namespace),
            **options,
        )


def render_all(
    resources: Iterable[Resource], **options: Any
) -> list[tuple[Resource, RenderResult]]:
    workspace = Workspace.of(resources)
    return [(policy, workspace.render(policy, **options)) for policy in workspace.policies()]

"""Tierwise objects as the controller sees them: parsed once, at the kopf boundary.

kopf hands handlers live mapping views of raw JSON. ``observe`` turns one into an
``Observed``: identity, the bits of metadata and status the controller needs, and the spec
parsed into the typed API models (``tierwise.api``), or the reason it does not parse. The
indexes hold ``Observed`` objects, so every handler, the resync and the webhook work on the
same typed values and nothing re-reads raw dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tierwise import API_VERSION
from tierwise.api import (
    CACHE_PROFILE,
    CASCADE_POLICY,
    MODEL_TIER,
    CacheProfileSpec,
    CascadePolicySpec,
    ModelTierSpec,
    Resource,
    SpecError,
    parse_resource,
)
from tierwise.api.capture import Capture
from tierwise.api.models import LabelSelector

KIND_BY_PLURAL = {
    "cascadepolicies": CASCADE_POLICY,
    "modeltiers": MODEL_TIER,
    "cacheprofiles": CACHE_PROFILE,
}


@dataclass(frozen=True)
class Observed:
    """One object of a Tierwise kind as last seen, with its spec parsed (or why not)."""

    kind: str
    namespace: str
    name: str
    uid: str = ""
    generation: int | None = None
    created: str = ""
    deleting: bool = False
    status: Mapping[str, Any] = field(default_factory=dict)
    resource: Resource | None = None
    error: SpecError | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)  # e.g. rollout break-glass

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def spec(self) -> Any:
        """The typed spec, or None when the object does not fit its schema."""
        return self.resource.spec if self.resource is not None else None

    def reference(self) -> dict[str, Any]:
        """What an Event or an owner reference needs to name this object."""
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }

    # -- CascadePolicy ------------------------------------------------------------------

    def tier_names(self) -> list[str]:
        """Tiers a policy uses (steps, then fallback); none when its spec is invalid."""
        spec = self.spec
        return spec.tier_names() if isinstance(spec, CascadePolicySpec) else []

    def uses_tier(self, tier: str) -> bool:
        return tier in self.tier_names()

    def shadow_judge_tier(self) -> str | None:
        """The tier judging the policy's shadow stage, if one does."""
        spec = self.spec
        if not isinstance(spec, CascadePolicySpec) or spec.evaluation is None:
            return None
        shadow = spec.evaluation.shadow
        return shadow.judge_tier if shadow is not None else None

    def capture(self) -> Capture | None:
        """A policy's ``spec.capture`` (None: off, or not a valid policy)."""
        spec = self.spec
        return spec.capture if isinstance(spec, CascadePolicySpec) else None

    def cache_profile_name(self) -> str | None:
        spec = self.spec
        if isinstance(spec, CascadePolicySpec) and spec.cache_profile_ref is not None:
            return spec.cache_profile_ref.name
        return None

    def uses_profile(self, profile: str) -> bool:
        return self.cache_profile_name() == profile

    def pod_selector(self) -> LabelSelector | None:
        spec = self.spec
        return spec.pod_selector if isinstance(spec, CascadePolicySpec) else None

    @property
    def config_hash(self) -> str | None:
        return self.status.get("configHash")


# uid -> (generation, resource, error): the spec of a generation never changes, and only
# the latest generation of each object is kept.
ParseCache = dict[str, tuple[Any, Resource | None, SpecError | None]]


def observe(
    body: Mapping[str, Any], kind: str | None = None, cache: ParseCache | None = None
) -> Observed:
    """Parse ``body`` (an API object) once. ``kind`` defaults to the body's own. With
    ``cache``, a spec already parsed for the same uid and generation is not parsed again
    (the resync sees every object every period)."""
    metadata = body.get("metadata") or {}
    kind = kind or str(body.get("kind") or "")
    uid, generation = str(metadata.get("uid") or ""), metadata.get("generation")
    cached = cache.get(uid) if cache is not None and uid else None
    if cached is not None and cached[0] == generation:
        resource, error = cached[1], cached[2]
    else:
        resource, error = _parse(body, kind, metadata)
        if cache is not None and uid:
            cache[uid] = (generation, resource, error)
    return Observed(
        kind=kind,
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        generation=metadata.get("generation"),
        created=str(metadata.get("creationTimestamp") or ""),
        deleting=bool(metadata.get("deletionTimestamp")),
        status=plain(body.get("status") or {}),
        resource=resource,
        error=error,
        annotations=dict(metadata.get("annotations") or {}),
    )


def _parse(
    body: Mapping[str, Any], kind: str, metadata: Mapping[str, Any]
) -> tuple[Resource | None, SpecError | None]:
    try:
        resource = parse_resource(
            {
                "apiVersion": body.get("apiVersion") or API_VERSION,
                "kind": kind,
                "metadata": {
                    "name": metadata.get("name"),
                    "namespace": metadata.get("namespace"),
                },
                "spec": plain(body.get("spec") or {}),
            }
        )
    except SpecError as exc:
        return None, exc
    return resource, None


def by_name(objects: Iterable[Observed]) -> dict[str, Resource]:
    """The parsed resources of ``objects`` by name; those that do not parse are left out
    (a policy then reports them as not found, and their own status says why)."""
    return {o.name: o.resource for o in objects if o.resource is not None}


def policies_using(
    policies: Iterable[Observed], *, tiers: Iterable[str] = (), profiles: Iterable[str] = ()
) -> list[Observed]:
    """Policies whose steps or fallback use one of ``tiers``, or that use one of
    ``profiles``."""
    tiers, profiles = set(tiers), set(profiles)
    return [
        p
        for p in policies
        if not tiers.isdisjoint(p.tier_names()) or p.cache_profile_name() in profiles
    ]


def tier_spec(tier: Observed) -> ModelTierSpec | None:
    spec = tier.spec
    return spec if isinstance(spec, ModelTierSpec) else None


def cache_profile_spec(profile: Observed) -> CacheProfileSpec | None:
    spec = profile.spec
    return spec if isinstance(spec, CacheProfileSpec) else None


def plain(value: Any) -> Any:
    """A deep copy as plain dicts and lists (kopf bodies are live mapping views)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value

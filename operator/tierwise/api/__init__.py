"""The Tierwise API: typed models of the ``tierwise.dev/v1alpha1`` resources."""

from tierwise.api.manifests import (
    CACHE_PROFILE,
    CASCADE_POLICY,
    MODEL_TIER,
    Resource,
    load_manifests,
    parse_resource,
)
from tierwise.api.models import (
    CacheProfileSpec,
    CascadePolicySpec,
    EscalationSignal,
    ModelTierSpec,
    Route,
    Step,
)
from tierwise.api.parsing import SpecError, parse

__all__ = [
    "CACHE_PROFILE",
    "CASCADE_POLICY",
    "MODEL_TIER",
    "CacheProfileSpec",
    "CascadePolicySpec",
    "EscalationSignal",
    "ModelTierSpec",
    "Resource",
    "Route",
    "SpecError",
    "Step",
    "load_manifests",
    "parse",
    "parse_resource",
]

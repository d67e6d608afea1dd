"""Pure rendering of policies into router config documents (see docs/router-config.md)."""

from tierwise.render.document import (
    CACHE_PROFILE_NOT_FOUND,
    CONFIG_KEY,
    PRICING_AMBIGUOUS,
    PRICING_UNKNOWN,
    SCHEMA_VERSION,
    TIER_NOT_FOUND,
    Problem,
    RenderResult,
    SecretKeyEnv,
    api_key_env,
    canonical_json,
    content_hash,
    dump_document,
    render_policy,
    strongest_tier,
    with_endpoint,
)
from tierwise.render.workspace import Workspace, render_all

__all__ = [
    "CACHE_PROFILE_NOT_FOUND",
    "CONFIG_KEY",
    "PRICING_AMBIGUOUS",
    "PRICING_UNKNOWN",
    "SCHEMA_VERSION",
    "TIER_NOT_FOUND",
    "Problem",
    "RenderResult",
    "SecretKeyEnv",
    "Workspace",
    "api_key_env",
    "canonical_json",
    "content_hash",
    "dump_document",
    "render_all",
    "render_policy",
    "strongest_tier",
    "with_endpoint",
]

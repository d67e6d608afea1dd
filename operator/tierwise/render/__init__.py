"""Pure rendering of policies into router config documents (see docs/router-config.md).

The format itself (classes, version, defaults, hash) belongs to ``tierwise.routerconfig``;
the names re-exported here from it are for the operator's convenience.
"""

from tierwise.render.document import (
    CACHE_PROFILE_NOT_FOUND,
    KEY_ENV_CONFLICT,
    PRICING_AMBIGUOUS,
    PRICING_UNKNOWN,
    SIGNAL_UNSUPPORTED,
    TIER_NOT_FOUND,
    Problem,
    RenderResult,
    SecretKeyEnv,
    key_env_conflicts,
    redis_secrets,
    render_policy,
    render_tier,
    secret_key_env,
    strongest_tier,
    with_endpoint,
)
from tierwise.render.workspace import Workspace, render_all
from tierwise.routerconfig import (
    CONFIG_KEY,
    SCHEMA_VERSION,
    api_key_env,
    canonical_json,
    content_hash,
    dump_document,
)

__all__ = [
    "CACHE_PROFILE_NOT_FOUND",
    "CONFIG_KEY",
    "KEY_ENV_CONFLICT",
    "PRICING_AMBIGUOUS",
    "PRICING_UNKNOWN",
    "SCHEMA_VERSION",
    "SIGNAL_UNSUPPORTED",
    "TIER_NOT_FOUND",
    "Problem",
    "RenderResult",
    "SecretKeyEnv",
    "Workspace",
    "api_key_env",
    "canonical_json",
    "content_hash",
    "dump_document",
    "key_env_conflicts",
    "redis_secrets",
    "render_all",
    "render_policy",
    "render_tier",
    "secret_key_env",
    "strongest_tier",
    "with_endpoint",
]

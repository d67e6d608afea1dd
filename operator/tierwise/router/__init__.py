"""The router sidecar: Anthropic Messages API in front of model tiers.

Routing, cheap-first cascades, prompt-caching breakpoints, a response cache, retries and
fallback, Prometheus metrics and hot reload of the config document
(docs/router-config.md). Behaviour reference: docs/router.md.

    from tierwise.router import load_config, running_router

    async with running_router("router-config.json") as router:
        ...  # point an Anthropic SDK client at router.base_url
"""

from tierwise.router.metrics import RouterMetrics
from tierwise.router.runner import RouterThread, running_router
from tierwise.router.server import DEFAULT_MAX_BODY_BYTES, Router
from tierwise.routerconfig import ConfigError, RouterConfig
from tierwise.routerconfig import content_hash as document_hash
from tierwise.routerconfig import load as load_config
from tierwise.routerconfig import parse as parse_config

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ConfigError",
    "Router",
    "RouterConfig",
    "RouterMetrics",
    "RouterThread",
    "document_hash",
    "load_config",
    "parse_config",
    "running_router",
]

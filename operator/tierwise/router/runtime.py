"""Everything derived from one config: tier clients, response cache, label values.

A ``Runtime`` is immutable once built; a reload builds a new one and swaps the router's
reference in one assignment, so a request sees one config from start to end. Concurrency
slots and the response cache carry over to the new runtime when their settings did not
change, so a reload neither resets in-flight limits nor empties a warm cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from tierwise.router.openai_upstream import OpenAIAdapter
from tierwise.router.response_cache import ResponseCache, make_response_cache
from tierwise.router.upstream import TierClient
from tierwise.routerconfig import OPENAI, RouterConfig, Tier

log = logging.getLogger("tierwise.router")


@dataclass
class Runtime:
    config: RouterConfig
    clients: Mapping[str, TierClient]
    response_cache: ResponseCache | None
    policy: str
    # Semaphores by (tier name, max concurrency), handed on to the next runtime.
    semaphores: dict[tuple[str, int], asyncio.Semaphore] = field(default_factory=dict)


def build_runtime(
    config: RouterConfig, env: Mapping[str, str], previous: Runtime | None = None
) -> Runtime:
    semaphores: dict[tuple[str, int], asyncio.Semaphore] = {}
    clients: dict[str, TierClient] = {}
    for name, tier in config.tiers.items():
        key = (name, tier.limits.max_concurrency)
        semaphore = (previous.semaphores.get(key) if previous else None) or asyncio.Semaphore(
            tier.limits.max_concurrency
        )
        semaphores[key] = semaphore
        adapter = OpenAIAdapter() if tier.provider == OPENAI else None
        clients[name] = TierClient(tier, _api_key(tier, env), semaphore, adapter)
    return Runtime(
        config=config,
        clients=clients,
        response_cache=_response_cache(config, previous, env),
        policy=config.policy.label,
        semaphores=semaphores,
    )


def _api_key(tier: Tier, env: Mapping[str, str]) -> str | None:
    # A missing variable sends no key (an endpoint may need none, e.g. a local gateway);
    # ``reload`` reports it at start and refuses a reload that needs it.
    return env.get(tier.api_key_env) or None if tier.api_key_env else None


def _response_cache(
    config: RouterConfig, previous: Runtime | None, env: Mapping[str, str]
) -> ResponseCache | None:
    settings = config.cache.response_cache
    old = previous.response_cache if previous else None
    if old is not None and settings.enabled and old.same_settings(settings):
        old.update_settings(settings)  # e.g. a new TTL applies to new entries
        return old
    return make_response_cache(settings, config.policy.label, env)


async def retire_runtime(old: Runtime, new: Runtime) -> None:
    """Close what the new runtime no longer uses (after in-flight requests had time)."""
    if old.response_cache is not None and old.response_cache is not new.response_cache:
        await asyncio.sleep(30)  # let requests that still hold the old runtime finish
        try:
            await old.response_cache.close()
        except Exception:  # closing a broken connection must not break a reload
            log.debug("closing the previous response cache failed", exc_info=True)

"""A route's input budget around a request: count the prompt, trim it or refuse it.

The trimming rules are pure (``router.input_budget``); this module counts with the first step's
model (``count_tokens`` on its tier, else the local estimate with its margin), decides, and
records the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tierwise.pricing.model import MTOK
from tierwise.router.cascade import Exchange
from tierwise.router.errors import invalid_request
from tierwise.router.input_budget import BudgetExceeded, estimated_count, trim
from tierwise.router.jsonutil import dumps, loads
from tierwise.router.metrics import RouterMetrics
from tierwise.router.request import build_count_tokens_request, estimate_prompt_tokens
from tierwise.router.upstream import COUNT_TOKENS_PATH, Upstream, UpstreamFailure
from tierwise.routerconfig import InputBudget, Tier

log = logging.getLogger("tierwise.router")

# The fields of a Messages request that count_tokens accepts (and that make the prompt).
COUNTABLE_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking"})
TRIM_ROUNDS = 3  # the estimate can be off: recount, trim again if needed


class InputBudgetCheck:
    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics

    async def fit(self, ex: Exchange, upstream: Upstream, budget: InputBudget) -> dict[str, Any]:
        """The body to send: as is, trimmed under the route's budget, or a 400 (raised)."""
        tier = ex.runtime.config.tiers[ex.route.steps[0].tier]
        count, counted = await self.count(ex, upstream, ex.body, tier)
        original, body = count, ex.body
        limit = budget.max_input_tokens
        labels = (ex.runtime.policy, ex.route.name)
        if count <= limit:
            self.metrics.child(self.metrics.input_budget, *labels, "within", counted).inc()
            return body
        try:
            if budget.on_exceed == "reject":
                raise BudgetExceeded(count, limit)
            for _ in range(TRIM_ROUNDS):
                estimate = estimate_prompt_tokens(body)
                scale = count / estimate if estimate else 1.0
                body = trim(body, budget.on_exceed, count - limit, scale).body
                count, counted = await self.count(ex, upstream, body, tier)
                if count <= limit:
                    break
            else:
                raise BudgetExceeded(count, limit)
        except BudgetExceeded:
            self.metrics.child(self.metrics.input_budget, *labels, "rejected", counted).inc()
            raise invalid_request(
                f"prompt is too long: {original} tokens > {limit} maximum "
                f"(the input budget of route {ex.route.name!r})"
            ) from None
        ex.trimmed_tokens = original - count
        saved = ex.trimmed_tokens * tier.prices.rates.input / MTOK
        self.metrics.child(self.metrics.input_budget, *labels, "trimmed", counted).inc()
        self.metrics.child(self.metrics.input_trimmed_tokens, *labels).inc(ex.trimmed_tokens)
        self.metrics.child(self.metrics.input_trim_saved, *labels).inc(float(saved))
        return body

    async def count(
        self, ex: Exchange, upstream: Upstream, body: Mapping[str, Any], tier: Tier
    ) -> tuple[int, str]:
        """The prompt's tokens by the tier model's count_tokens, else the local estimate."""
        payload = {
            k: v
            for k, v in build_count_tokens_request(body, ex.route, tier).items()
            if k in COUNTABLE_FIELDS
        }
        try:
            reply = await upstream.call(
                ex.runtime.clients[tier.name],
                COUNT_TOKENS_PATH,
                dumps(payload),
                ex.forwarded,
                ex.runtime.config.retry,
                attempts=1,
            )
            tokens = loads(reply.body).get("input_tokens")
            if isinstance(tokens, int) and not isinstance(tokens, bool):
                return tokens, "count_tokens"
        except (UpstreamFailure, ValueError, AttributeError):
            log.debug("count_tokens on tier %s failed; using the local estimate", tier.name)
        return estimated_count(payload), "estimate"

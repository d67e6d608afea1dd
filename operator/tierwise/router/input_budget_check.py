"""A route's input budget around a request: count the prompt, trim it or refuse it.

The trimming rules are pure (``router.input_budget``); this module counts with the first step's
model (``count_tokens`` on its tier, else the local estimate with its margin), decides, and
records the metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from tierwise.pricing.model import MTOK
from tierwise.router.cascade import Exchange
from tierwise.router.errors import invalid_request
from tierwise.router.input_budget import (
    ESTIMATE_MARGIN,
    BudgetExceeded,
    allowed_tokens,
    trim,
    with_margin,
)
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
        """The body to send: as is, trimmed under the route's budget, or a 400 (raised).

        Counting is part of the request's first upstream attempt: it starts the first step's
        ``timeoutSeconds`` clock (``ex.deadline``), so a hung upstream costs one timeout, not
        one for counting and another for the answer.
        """
        tier = ex.runtime.config.tiers[ex.route.steps[0].tier]
        if ex.deadline is None:
            ex.deadline = time.monotonic() + tier.limits.timeout_seconds
        count, counted = await self.count(ex, upstream, ex.body, tier)
        original = count
        limit = budget.max_input_tokens
        labels = (ex.runtime.policy, ex.route.name)
        if count <= allowed_tokens(limit, counted == "estimate"):
            self.metrics.child(self.metrics.input_budget, *labels, "within", counted).inc()
            return ex.body
        try:
            if budget.on_exceed == "reject":
                raise BudgetExceeded(count, limit)
            body, count, counted = await self._trim(ex, upstream, budget, tier, original, counted)
        except BudgetExceeded:
            self.metrics.child(self.metrics.input_budget, *labels, "rejected", counted).inc()
            raise invalid_request(
                too_long_message(original, counted, limit, ex.route.name)
            ) from None
        ex.trimmed_tokens = original - count
        saved = ex.trimmed_tokens * tier.prices.rates.input / MTOK
        self.metrics.child(self.metrics.input_budget, *labels, "trimmed", counted).inc()
        self.metrics.child(self.metrics.input_trimmed_tokens, *labels).inc(ex.trimmed_tokens)
        self.metrics.child(self.metrics.input_trim_saved, *labels).inc(float(saved))
        return body

    async def _trim(
        self,
        ex: Exchange,
        upstream: Upstream,
        budget: InputBudget,
        tier: Tier,
        original: int,
        counted: str,
    ) -> tuple[dict[str, Any], int, str]:
        """The body trimmed under the budget, its count and how it was counted.

        Every round trims the client's body (never an already trimmed one) by the whole
        amount still needed. The first round converts counted tokens to the local estimate's
        units at most 1:1: part of a count never shrinks with trimming (the model's hidden
        tool-use prompt, images), so the whole-prompt ratio would under-cut. A later round,
        if needed, uses the ratio the previous one measured.
        """
        source = ex.body
        estimate = estimate_prompt_tokens(source)
        scale = min(1.0, original / estimate) if estimate else 1.0
        count = original
        for _ in range(TRIM_ROUNDS):
            over = original - allowed_tokens(budget.max_input_tokens, counted == "estimate")
            trimmed = trim(source, budget.on_exceed, over, scale)
            count, counted = await self.count(ex, upstream, trimmed.body, tier)
            if count <= allowed_tokens(budget.max_input_tokens, counted == "estimate"):
                return trimmed.body, count, counted
            if original > count and trimmed.removed_estimate > 0:
                scale = (original - count) / trimmed.removed_estimate
        raise BudgetExceeded(count, budget.max_input_tokens)

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
                deadline=ex.deadline,
            )
            tokens = loads(reply.body).get("input_tokens")
            if isinstance(tokens, int) and not isinstance(tokens, bool):
                return tokens, "count_tokens"
        except (UpstreamFailure, ValueError, AttributeError):
            log.debug("count_tokens on tier %s failed; using the local estimate", tier.name)
        return estimate_prompt_tokens(payload), "estimate"


def too_long_message(tokens: int, counted: str, limit: int, route: str) -> str:
    """The reject text: the prompt's count (an estimate says so, and names its margin)."""
    if counted == "estimate":
        size = (
            f"about {tokens} tokens (a local estimate; with its "
            f"{ESTIMATE_MARGIN:.0%} safety margin, {with_margin(tokens)})"
        )
    else:
        size = f"{tokens} tokens"
    return f"prompt is too long: {size} > {limit} maximum (the input budget of route {route!r})"

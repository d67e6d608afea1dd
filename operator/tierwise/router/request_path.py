"""The one path a Messages request takes through the router, whoever sends it.

The HTTP server (``/v1/messages``) and the eval's engine (``CascadeEngine``) run a request
the same way, so what an eval measures is what the sidecar serves (the batch endpoints check
each item with the same ``check_messages_request`` and refuse routes with an input budget,
see ``router.batches``; their cascade is ``router.batch_cascade``, shared with the eval):

1. ``admit``: the request's shape is checked (``check_messages_request``) and the route's
   ``inputBudget`` is applied — the prompt is counted with the first step's model, then sent
   as is, trimmed, or refused with a 400 (``InputBudgetCheck``);
2. ``answer``: the route's steps run buffered (``Cascade``: caps, format instruction,
   effort/thinking, cache breakpoints, retries, fallback, hedging, escalation signals,
   exact cost) and the final answer is priced on the counterfactual tier.

What stays with an endpoint is only what belongs to its transport: the response cache and
live streaming (HTTP), buffering a whole batch (batches).
"""

from __future__ import annotations

from tierwise.router.cascade import Answer, Cascade, Exchange
from tierwise.router.input_budget_check import InputBudgetCheck
from tierwise.router.metrics import RouterMetrics
from tierwise.router.request import check_messages_request


class RequestPath:
    def __init__(self, cascade: Cascade, metrics: RouterMetrics) -> None:
        self.cascade = cascade
        self.budgets = InputBudgetCheck(metrics)

    async def admit(self, ex: Exchange) -> None:
        """Check ``ex.body`` and fit it to the route's input budget (``ex.body`` is replaced
        by the trimmed body; a refused request raises the 400 the client gets)."""
        check_messages_request(ex.body)
        budget = ex.route.input_budget
        if budget is not None:
            ex.body = await self.budgets.fit(ex, self.cascade.upstream, budget)

    async def answer(self, ex: Exchange) -> Answer:
        """The whole route, buffered, for an admitted request, with its counterfactual cost."""
        answer = await self.cascade.run(ex)
        self.cascade.account_counterfactual(ex, answer.usage, answer.tier.name, answer.cost)
        return answer

    async def run(self, ex: Exchange) -> Answer:
        """``admit`` then ``answer``: a request with nothing in between (no cache, no stream)."""
        await self.admit(ex)
        return await self.answer(ex)

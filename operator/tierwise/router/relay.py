"""Streaming answers: a synthesized stream for a buffered answer, and the live relay.

The live relay copies upstream SSE chunks to the client as they arrive, watching the
events for usage (cost), the first content (time to first token) and errors. An upstream
stream that breaks or ends early ends in an ``error`` event; a client that leaves drops the
upstream connection so the tier stops generating. The cost, known only at the end, goes out
as an SSE comment that clients ignore.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from tierwise.pricing import Usage, format_usd
from tierwise.router.cascade import Cascade, Exchange
from tierwise.router.jsonutil import dumps
from tierwise.router.metrics import RouterMetrics
from tierwise.router.pipeline import response_headers
from tierwise.router.sse import (
    SSEParser,
    StreamTracker,
    error_event,
    sse_comment,
    synthesize_stream,
)
from tierwise.router.upstream import Stream
from tierwise.routerconfig import Tier

SSE_TYPE = "text/event-stream"
COST_COMMENT = "x-tierwise-cost-usd"

OnFailure = Callable[[str, str], None]  # (tier, kind)
Store = Callable[[Exchange, str, bytes], Awaitable[None]]  # (exchange, tier, message JSON)


class Relay:
    def __init__(self, metrics: RouterMetrics, cascade: Cascade, on_failure: OnFailure) -> None:
        self.metrics = metrics
        self.cascade = cascade
        self.on_failure = on_failure

    def synthesized(
        self, ex: Exchange, message: Mapping[str, Any], request_id: str | None
    ) -> web.Response:
        """A complete answer sent as the event stream the API would have sent."""
        data = synthesize_stream(message) + sse_comment(f"{COST_COMMENT}: {format_usd(ex.cost)}")
        self._observe_ttft(ex, ex.tier)
        headers = response_headers(ex, request_id)
        headers["Cache-Control"] = "no-cache"
        return web.Response(body=data, headers=headers, content_type=SSE_TYPE)

    async def live(
        self,
        request: web.Request,
        ex: Exchange,
        stream: Stream,
        tier: Tier,
        store: Store,
        keep_message: bool = False,
    ) -> web.StreamResponse:
        """Pass a live upstream stream through, watching its events for usage and errors;
        the final message goes to ``store`` when cached or ``keep_message`` (shadowed)."""
        headers = response_headers(ex, stream.request_id, cost=False)
        headers["Cache-Control"] = "no-cache"
        response = web.StreamResponse(headers=headers)
        response.content_type = SSE_TYPE
        tracker = StreamTracker(keep_message=ex.cache_key is not None or keep_message)
        accounted = False
        try:
            await response.prepare(request)
            await self._pump(ex, tier, stream, response, tracker)
            if tracker.error is None and not tracker.stopped:
                tracker.error = {"type": "api_error"}
                await response.write(
                    error_event(
                        "api_error", f"the upstream stream of tier {tier.name!r} ended early"
                    )
                )
            self._account(ex, tier, tracker)
            accounted = True
            await response.write(sse_comment(f"{COST_COMMENT}: {format_usd(ex.cost)}"))
            await response.write_eof()
        except ConnectionResetError:
            ex.outcome = "cancelled"  # the client went away; nobody to answer
            return response
        except asyncio.CancelledError:
            ex.outcome = "cancelled"
            raise
        finally:
            # An unfinished stream's connection is dropped, so the upstream stops generating.
            stream.close(abort=not tracker.stopped)
            if not accounted:
                self._account(ex, tier, tracker)
        if tracker.error is not None:
            self.on_failure(tier.name, "stream")
            ex.outcome = "upstream_error"
            return response
        self.cascade.account_counterfactual(ex, Usage.from_anthropic(tracker.usage))
        final = tracker.final_message()
        if final is not None:
            await store(ex, tier.name, dumps(final))
        return response

    async def _pump(
        self,
        ex: Exchange,
        tier: Tier,
        stream: Stream,
        response: web.StreamResponse,
        tracker: StreamTracker,
    ) -> None:
        """Copy upstream chunks to the client as they come; a broken upstream ends in an
        ``error`` event. Write errors (the client left) propagate."""
        parser = SSEParser()
        content = stream.response.content
        ttft_seen = False
        while True:
            try:
                chunk = await content.readany()
            except (aiohttp.ClientError, TimeoutError) as exc:
                tracker.error = {"type": "api_error"}
                await response.write(
                    error_event(
                        "api_error",
                        f"the upstream stream of tier {tier.name!r} broke: {type(exc).__name__}",
                    )
                )
                return
            if not chunk:
                return
            chunk = stream.scrub(chunk)
            events = parser.feed(chunk)
            if events:
                tracker.feed(events)
            await response.write(chunk)
            if not ttft_seen and tracker.content_seen:
                ttft_seen = True
                self._observe_ttft(ex, tier.name)

    def _observe_ttft(self, ex: Exchange, tier: str) -> None:
        self.metrics.child(self.metrics.ttft, ex.runtime.policy, ex.route.name, tier).observe(
            time.perf_counter() - ex.started
        )

    def _account(self, ex: Exchange, tier: Tier, tracker: StreamTracker) -> None:
        """Cost of a live stream, from the usage its events reported (if it started)."""
        if tracker.started:
            # Priced per serving model and iteration, as a buffered answer is.
            served = {"model": tracker.model or tier.model, "usage": tracker.usage}
            self.cascade.account(ex, tier, Usage.from_anthropic(tracker.usage), message=served)

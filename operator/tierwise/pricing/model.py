"""The cost model: Anthropic ``usage`` records priced in exact decimal dollars.

Everything here is plain Python with ``Decimal`` arithmetic, so a cost computed by the
router, by an eval or by ``tierwise estimate`` is the same number to the last digit, and
matches the provider's bill (which is computed per token, per MTok rate) to the cent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tierwise.decimals import to_decimal

MTOK = Decimal(1_000_000)
# The Message Batches API bills every kind of token at half price.
BATCH_MULTIPLIER = Decimal("0.5")
# Billed on top of tokens (Anthropic "Pricing" and "Data residency" pages, read 2026-11-29):
# web search is $10 per 1,000 searches (web fetch costs only its tokens); inference pinned to
# the US (``inference_geo: "us"``, Opus/Sonnet 4.6 and later) multiplies every token rate by
# 1.1. Thinking tokens are already inside ``output_tokens`` and the tool-use system prompt
# inside ``input_tokens``: both are priced as the API reports them, never estimated.
WEB_SEARCH_USD_PER_REQUEST = Decimal("0.01")
US_INFERENCE_MULTIPLIER = Decimal("1.1")


@dataclass(frozen=True)
class Rates:
    """USD per million tokens for each kind of token."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal

    def to_decimals(self) -> tuple[Decimal, ...]:
        return (self.input, self.output, self.cache_write_5m, self.cache_write_1h, self.cache_read)

    def to_document(self) -> dict[str, str]:
        return {
            "input": _plain(self.input),
            "output": _plain(self.output),
            "cacheWrite5m": _plain(self.cache_write_5m),
            "cacheWrite1h": _plain(self.cache_write_1h),
            "cacheRead": _plain(self.cache_read),
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Rates:
        return cls(
            input=to_decimal(doc["input"]),
            output=to_decimal(doc["output"]),
            cache_write_5m=to_decimal(doc["cacheWrite5m"]),
            cache_write_1h=to_decimal(doc["cacheWrite1h"]),
            cache_read=to_decimal(doc["cacheRead"]),
        )


@dataclass(frozen=True)
class LongPromptBand:
    """Rates that apply to a whole request once its prompt exceeds a token threshold.

    The prompt is input + cache reads + cache writes; when it is over the threshold every
    token of that request, output included, is billed at these rates.
    """

    threshold_tokens: int
    rates: Rates


@dataclass(frozen=True)
class Prices:
    """Everything needed to price one model's usage."""

    rates: Rates
    long_prompt: LongPromptBand | None = None
    batch_multiplier: Decimal = BATCH_MULTIPLIER
    source: str = "spec"

    def rates_for(self, prompt_tokens: int) -> Rates:
        if self.long_prompt and prompt_tokens > self.long_prompt.threshold_tokens:
            return self.long_prompt.rates
        return self.rates

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            **self.rates.to_document(),
            "batchMultiplier": _plain(self.batch_multiplier),
            "source": self.source,
        }
        if self.long_prompt:
            doc["longPrompt"] = {
                "thresholdTokens": self.long_prompt.threshold_tokens,
                **self.long_prompt.rates.to_document(),
            }
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Prices:
        long_doc = doc.get("longPrompt")
        long_prompt = (
            LongPromptBand(int(long_doc["thresholdTokens"]), Rates.from_document(long_doc))
            if long_doc
            else None
        )
        return cls(
            rates=Rates.from_document(doc),
            long_prompt=long_prompt,
            batch_multiplier=to_decimal(doc.get("batchMultiplier", BATCH_MULTIPLIER)),
            source=str(doc.get("source", "spec")),
        )


@dataclass(frozen=True)
class Usage:
    """Token counts of one response, as the Messages API reports them.

    ``input_tokens`` excludes cached tokens: the prompt is the sum of input, cache read
    and cache write tokens. ``output_tokens`` includes the thinking tokens (``thinking_tokens``
    says how many, for observability; they are billed as output even when the response
    shows only a summary). ``web_search_requests`` are billed per search; ``inference_geo``
    ``"us"`` raises every token rate.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_5m_input_tokens: int = 0
    cache_write_1h_input_tokens: int = 0
    thinking_tokens: int = 0
    web_search_requests: int = 0
    inference_geo: str | None = None

    @property
    def cache_creation_input_tokens(self) -> int:
        return self.cache_write_5m_input_tokens + self.cache_write_1h_input_tokens

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_write_5m_input_tokens + other.cache_write_5m_input_tokens,
            self.cache_write_1h_input_tokens + other.cache_write_1h_input_tokens,
            self.thinking_tokens + other.thinking_tokens,
            self.web_search_requests + other.web_search_requests,
            self.inference_geo if self.inference_geo == other.inference_geo else None,
        )

    @classmethod
    def from_anthropic(cls, usage: Mapping[str, Any] | Any) -> Usage:
        """From a ``usage`` dict (or SDK object) of a Messages API response.

        When the per-TTL split ``cache_creation`` is absent (older API versions), all cache
        writes are 5-minute writes, the API's default TTL.
        """
        get = usage.get if isinstance(usage, Mapping) else lambda k, d=None: getattr(usage, k, d)
        written = int(get("cache_creation_input_tokens", 0) or 0)
        split = get("cache_creation", None)
        if split is not None:
            split_get = split.get if isinstance(split, Mapping) else lambda k: getattr(split, k)
            five = int(split_get("ephemeral_5m_input_tokens") or 0)
            hour = int(split_get("ephemeral_1h_input_tokens") or 0)
        else:
            five, hour = written, 0
        geo = get("inference_geo", None)
        return cls(
            input_tokens=int(get("input_tokens", 0) or 0),
            output_tokens=int(get("output_tokens", 0) or 0),
            cache_read_input_tokens=int(get("cache_read_input_tokens", 0) or 0),
            cache_write_5m_input_tokens=five,
            cache_write_1h_input_tokens=hour,
            thinking_tokens=_nested_int(get("output_tokens_details", None), "thinking_tokens"),
            web_search_requests=_nested_int(get("server_tool_use", None), "web_search_requests"),
            inference_geo=geo if isinstance(geo, str) else None,
        )

    def to_anthropic(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_write_5m_input_tokens,
                "ephemeral_1h_input_tokens": self.cache_write_1h_input_tokens,
            },
        }
        if self.thinking_tokens:
            doc["output_tokens_details"] = {"thinking_tokens": self.thinking_tokens}
        if self.web_search_requests:
            doc["server_tool_use"] = {"web_search_requests": self.web_search_requests}
        if self.inference_geo is not None:
            doc["inference_geo"] = self.inference_geo
        return doc


def _nested_int(value: Any, key: str) -> int:
    """``value[key]`` of a nested usage object (dict or SDK model), 0 when absent."""
    if value is None:
        return 0
    raw = value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)
    return int(raw or 0)


@dataclass(frozen=True)
class CostBreakdown:
    """Dollars per kind of token; ``total`` is their exact sum."""

    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    cache_read: Decimal = Decimal(0)
    cache_write_5m: Decimal = Decimal(0)
    cache_write_1h: Decimal = Decimal(0)
    server_tools: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        return (
            self.input
            + self.output
            + self.cache_read
            + self.cache_write_5m
            + self.cache_write_1h
            + self.server_tools
        )


def cost_breakdown(usage: Usage, prices: Prices, *, batch: bool = False) -> CostBreakdown:
    rates = prices.rates_for(usage.prompt_tokens)
    multiplier = prices.batch_multiplier if batch else Decimal(1)
    if usage.inference_geo == "us":
        multiplier *= US_INFERENCE_MULTIPLIER

    def dollars(tokens: int, rate: Decimal) -> Decimal:
        return tokens * rate * multiplier / MTOK

    return CostBreakdown(
        input=dollars(usage.input_tokens, rates.input),
        output=dollars(usage.output_tokens, rates.output),
        cache_read=dollars(usage.cache_read_input_tokens, rates.cache_read),
        cache_write_5m=dollars(usage.cache_write_5m_input_tokens, rates.cache_write_5m),
        cache_write_1h=dollars(usage.cache_write_1h_input_tokens, rates.cache_write_1h),
        server_tools=usage.web_search_requests * WEB_SEARCH_USD_PER_REQUEST,
    )


def cost_usd(usage: Usage, prices: Prices, *, batch: bool = False) -> Decimal:
    """Exact cost in USD (not rounded; round only for display)."""
    return cost_breakdown(usage, prices, batch=batch).total


def counterfactual_cost_usd(usage: Usage, other: Prices, *, batch: bool = False) -> Decimal:
    """What the same usage would have cost on another tier (e.g. the route's strongest)."""
    return cost_usd(usage, other, batch=batch)


def format_usd(amount: Decimal) -> str:
    """A plain decimal string (no exponent), as used in headers and documents."""
    return _plain(amount)


def _plain(amount: Decimal) -> str:
    text = format(amount.normalize(), "f")
    return text if text != "-0" else "0"

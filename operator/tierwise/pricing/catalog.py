"""Built-in price catalog for Anthropic models, USD per million tokens.

Source: Anthropic's published pricing page ("Pricing", Claude Developer Platform docs) and
the per-model overview pages, as read on 2026-11-25. Every rate is stated explicitly rather
than derived, because newer models do not all follow the 1.25x / 2x / 0.1x cache
multipliers (Sonnet 5.5 cache reads are 0.05x since 2026-10-07). The Batch API halves every
rate (input, output and cache) and stacks with the long-prompt band.

A ModelTier's ``spec.pricing`` overrides these. A model that is neither here nor priced in
its ModelTier is reported as ``PricingUnknown``; it is never priced at zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tierwise.pricing.model import LongPromptBand, Prices, Rates, to_decimal

CATALOG_DATE = "2026-11-25"
CATALOG_SOURCE = f"catalog:{CATALOG_DATE}"


def _rates(input: str, output: str, write_5m: str, write_1h: str, read: str) -> Rates:
    return Rates(*(to_decimal(v) for v in (input, output, write_5m, write_1h, read)))


_OPUS_4_5_FAMILY = _rates("5", "25", "6.25", "10", "0.50")
_OPUS_4_FAMILY = _rates("15", "75", "18.75", "30", "1.50")
_SONNET_4_FAMILY = _rates("3", "15", "3.75", "6", "0.30")
# Sonnet 4 and 4.5 with the 1M-token context: a prompt over 200K tokens is billed at these
# rates for the whole request (Sonnet 4.6 and later dropped the surcharge).
_SONNET_4_LONG = LongPromptBand(200_000, _rates("6", "22.50", "7.50", "12", "0.60"))

# Canonical model id -> prices. Dated ids (claude-haiku-4-5-20251001) resolve by prefix.
_CATALOG: dict[str, Prices] = {
    "claude-haiku-4-5": Prices(_rates("1", "5", "1.25", "2", "0.10"), source=CATALOG_SOURCE),
    "claude-sonnet-4-5": Prices(_SONNET_4_FAMILY, _SONNET_4_LONG, source=CATALOG_SOURCE),
    "claude-opus-4-5": Prices(_OPUS_4_5_FAMILY, source=CATALOG_SOURCE),
    "claude-sonnet-4-6": Prices(_SONNET_4_FAMILY, source=CATALOG_SOURCE),
    "claude-opus-4-6": Prices(_OPUS_4_5_FAMILY, source=CATALOG_SOURCE),
    "claude-opus-4-7": Prices(_OPUS_4_5_FAMILY, source=CATALOG_SOURCE),
    "claude-opus-4-8": Prices(_OPUS_4_5_FAMILY, source=CATALOG_SOURCE),
    "claude-sonnet-4": Prices(_SONNET_4_FAMILY, _SONNET_4_LONG, source=CATALOG_SOURCE),
    "claude-sonnet-4-0": Prices(_SONNET_4_FAMILY, _SONNET_4_LONG, source=CATALOG_SOURCE),
    "claude-opus-4": Prices(_OPUS_4_FAMILY, source=CATALOG_SOURCE),
    "claude-opus-4-0": Prices(_OPUS_4_FAMILY, source=CATALOG_SOURCE),
    "claude-opus-4-1": Prices(_OPUS_4_FAMILY, source=CATALOG_SOURCE),
    "claude-3-5-haiku": Prices(_rates("0.80", "4", "1", "1.6", "0.08"), source=CATALOG_SOURCE),
    "claude-3-haiku": Prices(_rates("0.25", "1.25", "0.30", "0.50", "0.03"), source=CATALOG_SOURCE),
    "claude-opus-5": Prices(_OPUS_4_5_FAMILY, source=CATALOG_SOURCE),
    "claude-sonnet-5": Prices(_rates("2", "10", "2.50", "4", "0.20"), source=CATALOG_SOURCE),
    "claude-sonnet-5-5": Prices(_rates("2", "10", "2.50", "4", "0.10"), source=CATALOG_SOURCE),
    # Haiku 5.5 is priced by prompt length: over 100K prompt tokens, the higher band applies.
    "claude-haiku-5-5": Prices(
        _rates("0.10", "0.50", "0.125", "0.20", "0.01"),
        LongPromptBand(100_000, _rates("0.50", "2.50", "0.625", "1.00", "0.05")),
        source=CATALOG_SOURCE,
    ),
}

_DATE_SUFFIX = re.compile(r"-\d{8}$")

# Minimum cacheable prompt length (tokens) per model family: a cache breakpoint on a shorter
# prefix is silently not cached by the API, so the router does not spend a breakpoint on it.
_MIN_CACHEABLE: dict[str, int] = {
    "claude-haiku-4-5": 4096,
    "claude-opus-4-5": 4096,
    "claude-3-5-haiku": 2048,
    "claude-3-haiku": 2048,
}
DEFAULT_MIN_CACHEABLE_TOKENS = 1024


@dataclass(frozen=True)
class PricingUnknown:
    """An error value: the model has no catalog entry and its ModelTier gives no prices."""

    model: str
    # The spec.pricing fields still needed (an unknown model needs input and output).
    missing: tuple[str, ...] = ("input", "output")

    @property
    def message(self) -> str:
        needed = " and ".join(f"spec.pricing.{name}" for name in self.missing)
        return (
            f"model {self.model!r} is not in the built-in price catalog ({CATALOG_DATE}); "
            f"set {needed} on its ModelTier"
        )


def canonical_model(model: str) -> str:
    """Drop a release date suffix: claude-haiku-4-5-20251001 -> claude-haiku-4-5."""
    return _DATE_SUFFIX.sub("", model.strip())


def catalog_prices(model: str) -> Prices | PricingUnknown:
    return _CATALOG.get(canonical_model(model)) or PricingUnknown(model)


def known_models() -> list[str]:
    return sorted(_CATALOG)


def min_cacheable_tokens(model: str) -> int:
    return _MIN_CACHEABLE.get(canonical_model(model), DEFAULT_MIN_CACHEABLE_TOKENS)


def resolve_prices(model: str, override: dict | None) -> Prices | PricingUnknown:
    """Prices for a ModelTier: its ``spec.pricing`` over the catalog entry of its model.

    An override is flat (no long-prompt band). Given ``input``, cache rates it leaves out
    are derived from it by the standard multipliers; without ``input``, they come from the
    catalog. An unknown model needs both ``input`` and ``output``.
    """
    override = {k: v for k, v in (override or {}).items() if v is not None}
    base = catalog_prices(model)
    if not override:
        return base
    if isinstance(base, PricingUnknown):
        missing = tuple(name for name in ("input", "output") if name not in override)
        if missing:
            return PricingUnknown(model, missing)
        derived = Rates.from_input_output(override["input"], override["output"])
    elif "input" in override:
        derived = Rates.from_input_output(
            override["input"], override.get("output", base.rates.output)
        )
    else:
        derived = base.rates
    return Prices(
        rates=Rates(
            input=to_decimal(override.get("input", derived.input)),
            output=to_decimal(override.get("output", derived.output)),
            cache_write_5m=to_decimal(override.get("cacheWrite5m", derived.cache_write_5m)),
            cache_write_1h=to_decimal(override.get("cacheWrite1h", derived.cache_write_1h)),
            cache_read=to_decimal(override.get("cacheRead", derived.cache_read)),
        ),
        source="spec",
    )

"""Prices and the cost model shared by the router, evals and ``tierwise estimate``."""

from tierwise.pricing.catalog import (
    CATALOG_DATE,
    PricingUnknown,
    canonical_model,
    catalog_prices,
    known_models,
    min_cacheable_tokens,
    resolve_prices,
)
from tierwise.pricing.model import (
    CostBreakdown,
    LongPromptBand,
    Prices,
    Rates,
    Usage,
    cost_breakdown,
    cost_usd,
    counterfactual_cost_usd,
    format_usd,
    to_decimal,
)

__all__ = [
    "CATALOG_DATE",
    "CostBreakdown",
    "LongPromptBand",
    "Prices",
    "PricingUnknown",
    "Rates",
    "Usage",
    "canonical_model",
    "catalog_prices",
    "cost_breakdown",
    "cost_usd",
    "counterfactual_cost_usd",
    "format_usd",
    "known_models",
    "min_cacheable_tokens",
    "resolve_prices",
    "to_decimal",
]

"""The catalog as the Markdown table in docs/pricing.md: ``python -m tierwise.pricing.table``."""

from __future__ import annotations

import re
from datetime import date

from tierwise.pricing.catalog import BUILTIN, PriceCatalog
from tierwise.pricing.model import Rates, format_usd

# The status column is as of a day the table names: statuses follow from the models' dates.
STATUS_DAY = re.compile(r"\| status on (\d{4}-\d{2}-\d{2}) \|")


def _header(catalog: PriceCatalog, today: date) -> str:
    return (
        f"| model | status on {today.isoformat()} | retires | input | output | 5m write "
        "| 1h write | cache read | batch | long prompt | min cacheable "
        f"| source (read {catalog.date}) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )


def _usd(rates: Rates) -> list[str]:
    return [f"${format_usd(v)}" for v in rates.to_decimals()]


def catalog_table(catalog: PriceCatalog = BUILTIN, today: date | None = None) -> str:
    """One row per model, in catalog order; USD per million tokens; status on ``today``."""
    today = today or date.today()
    rows = [_header(catalog, today)]
    for entry in catalog.entries.values():
        prices = entry.prices
        band = prices.long_prompt
        long_prompt = (
            f"over {band.threshold_tokens // 1000}K prompt tokens: " + " / ".join(_usd(band.rates))
            if band
            else "none"
        )
        cells = [
            f"`{entry.model}`" + (f" ({', '.join(entry.aliases)})" if entry.aliases else ""),
            entry.status_on(today),
            entry.retires.isoformat() if entry.retires else "-",
            *_usd(prices.rates),
            f"{format_usd(prices.batch_multiplier)}x",
            long_prompt,
            str(entry.min_cacheable_tokens) if entry.min_cacheable_tokens else "1024 (assumed)",
            " ".join(f"[{i + 1}]({url})" for i, url in enumerate(entry.sources))
            + (f"; {entry.note}" if entry.note else ""),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(catalog_table())

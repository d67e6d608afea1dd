"""The price catalog: every current and legacy Anthropic model, USD per million tokens.

Each entry states every rate explicitly (newer models do not follow the old 1.25x / 2x / 0.1x
cache multipliers: Opus 5.5 and Sonnet 5.5 read the cache at 0.05x, Fable 5.1 at 0.025x),
its long-prompt band if it has one, the Batch API multiplier (0.5: the Batch API halves every
rate, cache included, and stacks with a long-prompt band), its minimum cacheable prompt
length, its lifecycle status and retirement date, and where each figure was read. The table
in docs/pricing.md is generated from these entries (a test keeps them equal).

Sources, read on ``CATALOG_DATE``:

- PRICING: https://platform.claude.com/docs/en/about-claude/pricing ("Model pricing" table)
- OVERVIEW pages: https://platform.claude.com/docs/en/models/<model>/overview (pricing and
  availability boxes)
- DEPRECATIONS: https://platform.claude.com/docs/en/about-claude/model-deprecations, and the
  list of deprecated models shipped in the official Python SDK (``anthropic._data``)
- CACHING: https://platform.claude.com/docs/en/build-with-claude/prompt-caching (minimum
  cacheable prompt length)

Where Anthropic's page was not the place a figure was found, the entry's ``note`` says so.

A ModelTier's ``spec.pricing`` and the operator's price-catalog ConfigMap override these
(``resolve_prices``, ``PriceCatalog.overlay``). Nothing is derived silently: an override that
leaves a price ambiguous is a ``PricingAmbiguous`` value naming the missing field, and a model
in no catalog and not fully priced by its ModelTier is ``PricingUnknown``; neither is ever
priced at zero.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Literal

from tierwise.pricing.model import BATCH_MULTIPLIER, LongPromptBand, Prices, Rates, to_decimal

CATALOG_DATE = "2026-11-29"
CATALOG_SOURCE = f"catalog:{CATALOG_DATE}"
DEFAULT_MIN_CACHEABLE_TOKENS = 1024
RETIREMENT_WARNING_DAYS = 30

PRICING = "https://platform.claude.com/docs/en/about-claude/pricing"
DEPRECATIONS = "https://platform.claude.com/docs/en/about-claude/model-deprecations"
CACHING = "https://platform.claude.com/docs/en/build-with-claude/prompt-caching"
FABLE_5_2_NEWS = "https://platform.claude.com/docs/en/models/fable-5-2/whats-new-fable-5-2"
RATE_FIELDS = ("input", "output", "cacheWrite5m", "cacheWrite1h", "cacheRead")
CACHE_FIELDS = ("cacheWrite5m", "cacheWrite1h", "cacheRead")

Status = Literal["active", "legacy", "deprecated", "retired"]


def overview(slug: str) -> str:
    return f"https://platform.claude.com/docs/en/models/{slug}/overview"


@dataclass(frozen=True)
class CatalogEntry:
    """One model: its prices and the facts about it a cost-minded operator needs."""

    model: str
    display_name: str
    prices: Prices
    # The lifecycle stage the pages state without a date (active, legacy; deprecated or
    # retired when no date is published). Dated stages follow from the dates: ``status_on``.
    status: Status
    retires: date | None = None  # past for a retired model; None when no date is published
    min_cacheable_tokens: int | None = None  # None: not published; the router assumes 1024
    sources: tuple[str, ...] = (PRICING,)
    checked: str = CATALOG_DATE
    note: str = ""
    aliases: tuple[str, ...] = ()
    deprecated: date | None = None  # when the model was deprecated, where published

    def status_on(self, today: date) -> Status:
        """The model's status on ``today``: retired from its retirement date, deprecated from
        its deprecation date, else the stage the pages state."""
        if self.retires is not None and today >= self.retires:
            return "retired"
        if self.deprecated is not None and today >= self.deprecated:
            return "deprecated"
        return self.status


def _rates(input: str, output: str, write_5m: str, write_1h: str, read: str) -> Rates:
    return Rates(*(to_decimal(v) for v in (input, output, write_5m, write_1h, read)))


def _prices(rates: Rates, long_prompt: LongPromptBand | None = None) -> Prices:
    return Prices(rates, long_prompt, source=CATALOG_SOURCE)


_FABLE_5_1 = _rates("10", "50", "12.50", "20", "0.25")
_FABLE_5 = _rates("10", "50", "12.50", "20", "1")
_OPUS_4_5_TO_5 = _rates("5", "25", "6.25", "10", "0.50")
_OPUS_4_0 = _rates("15", "75", "18.75", "30", "1.50")
_SONNET_3_TO_4_6 = _rates("3", "15", "3.75", "6", "0.30")
# Sonnet 4 and 4.5 with the 1M-token context window: a prompt over 200K tokens is billed at
# these rates for the whole request (Sonnet 4.6 and later dropped the surcharge).
_SONNET_4_LONG = LongPromptBand(200_000, _rates("6", "22.50", "7.50", "12", "0.60"))

_ENTRIES: tuple[CatalogEntry, ...] = (
    # --- current line-up ---------------------------------------------------------------
    CatalogEntry(
        "claude-fable-5-2",
        "Claude Fable 5.2",
        _prices(_rates("8", "40", "10", "16", "0.20")),
        "active",
        min_cacheable_tokens=512,
        sources=(FABLE_5_2_NEWS,),
        checked="2026-12-06",
        note="released 2026-11-09 (Anthropic's What's new in Claude Fable 5.2, read "
        "2026-12-06); the rates themselves were not found on an Anthropic page read here "
        "(neither the release notes of 2026-11-09 nor the pricing page's Fable 5.2 row): they "
        "are the $8/$40 list price third-party reports agree on, cache rates at "
        "1.25x/2x/0.025x input like Fable 5.1's",
    ),
    CatalogEntry(
        "claude-fable-5-1",
        "Claude Fable 5.1",
        _prices(_FABLE_5_1),
        "active",
        min_cacheable_tokens=512,
        sources=(PRICING, overview("fable-5-1")),
        note="cache reads 0.025x input",
    ),
    CatalogEntry(
        "claude-mythos-5-1",
        "Claude Mythos 5.1 (limited availability)",
        _prices(_FABLE_5_1),
        "active",
        min_cacheable_tokens=512,
        sources=(PRICING,),
    ),
    CatalogEntry(
        "claude-opus-5-5",
        "Claude Opus 5.5",
        _prices(_rates("4", "20", "5", "8", "0.20")),
        "active",
        sources=(PRICING, overview("opus-5-5")),
        note="cache reads 0.05x input",
    ),
    CatalogEntry(
        "claude-sonnet-5-5",
        "Claude Sonnet 5.5",
        _prices(_rates("2", "10", "2.50", "4", "0.10")),
        "active",
        sources=(PRICING, overview("sonnet-5-5")),
        note="cache reads cut from $0.20 to $0.10 (0.05x input) on 2026-10-07",
    ),
    CatalogEntry(
        "claude-haiku-5-5",
        "Claude Haiku 5.5",
        # Priced by prompt length: over 100K prompt tokens the higher band applies.
        _prices(
            _rates("0.10", "0.50", "0.125", "0.20", "0.01"),
            LongPromptBand(100_000, _rates("0.50", "2.50", "0.625", "1.00", "0.05")),
        ),
        "active",
        sources=(PRICING, overview("haiku-5-5")),
        note="released 2026-10-07; two bands by prompt length (100K tokens)",
    ),
    # --- legacy: available, no longer updated -------------------------------------------
    CatalogEntry(
        "claude-fable-5",
        "Claude Fable 5",
        _prices(_FABLE_5),
        "legacy",
        min_cacheable_tokens=512,
        sources=(PRICING, overview("fable-5")),
    ),
    CatalogEntry(
        "claude-mythos-5",
        "Claude Mythos 5 (limited availability)",
        _prices(_FABLE_5),
        "legacy",
        min_cacheable_tokens=512,
        sources=(PRICING, overview("mythos-5")),
    ),
    CatalogEntry(
        "claude-opus-5",
        "Claude Opus 5",
        _prices(_OPUS_4_5_TO_5),
        "legacy",
        min_cacheable_tokens=512,
        sources=(PRICING, overview("opus-5")),
        note="retirement not sooner than 2027-07-24",
    ),
    CatalogEntry(
        "claude-sonnet-5",
        "Claude Sonnet 5",
        _prices(_rates("2", "10", "2.50", "4", "0.20")),
        "legacy",
        min_cacheable_tokens=1024,
        sources=(PRICING, overview("sonnet-5")),
    ),
    CatalogEntry(
        "claude-opus-4-8",
        "Claude Opus 4.8",
        _prices(_OPUS_4_5_TO_5),
        "legacy",
        min_cacheable_tokens=1024,
    ),
    CatalogEntry(
        "claude-opus-4-7",
        "Claude Opus 4.7",
        _prices(_OPUS_4_5_TO_5),
        "legacy",
        min_cacheable_tokens=4096,
        sources=(PRICING, CACHING),
    ),
    CatalogEntry(
        "claude-opus-4-6",
        "Claude Opus 4.6",
        _prices(_OPUS_4_5_TO_5),
        "legacy",
        min_cacheable_tokens=4096,
        sources=(PRICING, CACHING),
    ),
    CatalogEntry(
        "claude-sonnet-4-6",
        "Claude Sonnet 4.6",
        _prices(_SONNET_3_TO_4_6),
        "legacy",
        min_cacheable_tokens=2048,
        sources=(PRICING, overview("sonnet-4-6"), CACHING),
    ),
    CatalogEntry(
        "claude-haiku-4-5",
        "Claude Haiku 4.5",
        _prices(_rates("1", "5", "1.25", "2", "0.10")),
        "legacy",
        min_cacheable_tokens=4096,
        sources=(PRICING, overview("haiku-4-5"), CACHING),
        aliases=("claude-haiku-4-5-20251001",),
    ),
    # --- deprecated: working until the retirement date set ----------------------------
    CatalogEntry(
        "claude-opus-4-5",
        "Claude Opus 4.5",
        _prices(_OPUS_4_5_TO_5),
        "legacy",
        retires=date(2027, 1, 22),
        deprecated=date(2026, 11, 23),
        min_cacheable_tokens=4096,
        sources=(PRICING, overview("opus-4-5"), DEPRECATIONS, CACHING),
        note="replacement claude-opus-5-5",
        aliases=("claude-opus-4-5-20251101",),
    ),
    CatalogEntry(
        "claude-sonnet-4-5",
        "Claude Sonnet 4.5",
        _prices(_SONNET_3_TO_4_6, _SONNET_4_LONG),
        "deprecated",
        retires=date(2026, 11, 30),
        min_cacheable_tokens=1024,
        sources=(PRICING, overview("sonnet-4-5"), DEPRECATIONS, CACHING),
        note="replacement claude-sonnet-5-5",
        aliases=("claude-sonnet-4-5-20250929",),
    ),
    # --- retired: requests fail; kept so past usage can still be priced ------------------
    CatalogEntry(
        "claude-opus-4-1",
        "Claude Opus 4.1",
        _prices(_OPUS_4_0),
        "retired",
        min_cacheable_tokens=1024,
        sources=(PRICING, CACHING),
        note="the pricing page lists it as retired (except on Bedrock and Google Cloud); "
        "no retirement date found",
        aliases=("claude-opus-4-1-20250805",),
    ),
    CatalogEntry(
        "claude-opus-4",
        "Claude Opus 4",
        _prices(_OPUS_4_0),
        "retired",
        retires=date(2026, 6, 15),
        min_cacheable_tokens=1024,
        sources=(PRICING, DEPRECATIONS, CACHING),
        aliases=("claude-opus-4-0", "claude-opus-4-20250514"),
    ),
    CatalogEntry(
        "claude-sonnet-4",
        "Claude Sonnet 4",
        _prices(_SONNET_3_TO_4_6, _SONNET_4_LONG),
        "retired",
        retires=date(2026, 6, 15),
        min_cacheable_tokens=1024,
        sources=(PRICING, DEPRECATIONS, CACHING),
        aliases=("claude-sonnet-4-0", "claude-sonnet-4-20250514"),
    ),
    CatalogEntry(
        "claude-3-5-haiku",
        "Claude Haiku 3.5",
        _prices(_rates("0.80", "4", "1", "1.6", "0.08")),
        "retired",
        retires=date(2026, 2, 19),
        min_cacheable_tokens=2048,
        sources=(PRICING, DEPRECATIONS, CACHING),
        aliases=("claude-3-5-haiku-20241022",),
    ),
    CatalogEntry(
        "claude-3-haiku",
        "Claude Haiku 3",
        _prices(_rates("0.25", "1.25", "0.30", "0.50", "0.03")),
        "legacy",
        min_cacheable_tokens=2048,
        sources=(PRICING, CACHING),
        note="no retirement date found on the pages read",
        aliases=("claude-3-haiku-20240307",),
    ),
)

_DATE_SUFFIX = re.compile(r"-\d{8}$")


def canonical_model(model: str) -> str:
    """Drop a release date suffix: claude-haiku-4-5-20251001 -> claude-haiku-4-5."""
    return _DATE_SUFFIX.sub("", model.strip())


# --- problems, as values --------------------------------------------------------------------


@dataclass(frozen=True)
class PricingProblem:
    """Why a model cannot be priced; ``reason`` is a CamelCase condition reason."""

    model: str

    reason = "PricingProblem"

    @property
    def message(self) -> str:  # pragma: no cover - subclasses say what is wrong
        raise NotImplementedError


@dataclass(frozen=True)
class PricingUnknown(PricingProblem):
    """The model has no catalog entry and its ModelTier gives no prices."""

    catalog_date: str = CATALOG_DATE
    reason = "PricingUnknown"

    @property
    def message(self) -> str:
        fields = ", ".join(f"spec.pricing.{f}" for f in RATE_FIELDS)
        return (
            f"model {self.model!r} is not in the price catalog ({self.catalog_date}); "
            f"set {fields} on its ModelTier"
        )


@dataclass(frozen=True)
class PricingAmbiguous(PricingProblem):
    """An override that leaves some price to be guessed: it names what is missing."""

    missing: tuple[str, ...] = ()
    why: str = ""
    reason = "PricingAmbiguous"

    @property
    def message(self) -> str:
        fields = ", ".join(f"spec.pricing.{f}" for f in self.missing)
        return f"model {self.model!r}: {self.why}; set {fields}"


# --- the catalog --------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceCatalog:
    """Entries by canonical model id; aliases and dated ids resolve to their entry."""

    entries: Mapping[str, CatalogEntry]
    date: str = CATALOG_DATE
    _index: dict[str, CatalogEntry] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for entry in self.entries.values():
            self._index[entry.model] = entry
            for alias in entry.aliases:
                self._index[alias] = entry

    def entry(self, model: str) -> CatalogEntry | None:
        return self._index.get(model.strip()) or self._index.get(canonical_model(model))

    def prices(self, model: str) -> Prices | PricingUnknown:
        found = self.entry(model)
        return found.prices if found else PricingUnknown(model, self.date)

    def min_cacheable_tokens(self, model: str) -> int:
        found = self.entry(model)
        if found is None or found.min_cacheable_tokens is None:
            return DEFAULT_MIN_CACHEABLE_TOKENS
        return found.min_cacheable_tokens

    def models(self) -> list[str]:
        return sorted(self.entries)

    def overlay(self, other: PriceCatalog) -> PriceCatalog:
        """This catalog with ``other``'s entries replacing or adding models."""
        merged = dict(self.entries)
        for model, entry in other.entries.items():
            base = self.entry(model)
            merged.pop(base.model if base else model, None)
            merged[model] = entry
        return PriceCatalog(merged, other.date)


BUILTIN = PriceCatalog({e.model: e for e in _ENTRIES})


def catalog_prices(model: str, catalog: PriceCatalog = BUILTIN) -> Prices | PricingUnknown:
    return catalog.prices(model)


def known_models(catalog: PriceCatalog = BUILTIN) -> list[str]:
    return catalog.models()


def min_cacheable_tokens(model: str, catalog: PriceCatalog = BUILTIN) -> int:
    return catalog.min_cacheable_tokens(model)


# --- retirement ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RetirementNotice:
    """A model that has retired, or retires within ``RETIREMENT_WARNING_DAYS``."""

    model: str
    retired: bool
    retires: date | None
    days_left: int | None

    @property
    def reason(self) -> str:
        return "Retired" if self.retired else "RetiresSoon"

    @property
    def message(self) -> str:
        if self.retired:
            when = f" on {self.retires.isoformat()}" if self.retires else ""
            return f"model {self.model!r} retired{when}: requests to it fail; move this tier to a current model"
        assert self.retires is not None
        return (
            f"model {self.model!r} retires on {self.retires.isoformat()} "
            f"(in {self.days_left} day{'s' if self.days_left != 1 else ''}): requests will fail "
            "after that; move this tier to a current model"
        )


def retirement_notice(
    model: str, today: date, catalog: PriceCatalog = BUILTIN
) -> RetirementNotice | None:
    entry = catalog.entry(model)
    if entry is None:
        return None
    if entry.retires is None:
        return RetirementNotice(model, True, None, None) if entry.status == "retired" else None
    days_left = (entry.retires - today).days
    if entry.status_on(today) == "retired":
        return RetirementNotice(model, True, entry.retires, min(days_left, 0))
    if days_left <= RETIREMENT_WARNING_DAYS:
        return RetirementNotice(model, False, entry.retires, days_left)
    return None


# --- overrides ----------------------------------------------------------------------------


def resolve_prices(
    model: str, override: Mapping[str, Any] | None, catalog: PriceCatalog = BUILTIN
) -> Prices | PricingProblem:
    """Prices for a ModelTier: its ``spec.pricing`` over the catalog entry of its model.

    Fields the override leaves out keep the catalog's value, except where that would be a
    guess: overriding ``input`` needs the three cache rates too (they are quoted relative to
    input, and the catalog's no longer follow from the new one), and overriding a model that
    has a long-prompt band needs ``longPrompt`` too. A model not in the catalog needs all five
    rates. Nothing is derived by multipliers.
    """
    override = {k: v for k, v in (override or {}).items() if v is not None}
    base = catalog.prices(model)
    if not override:
        return base
    if isinstance(base, PricingUnknown):
        missing = tuple(f for f in RATE_FIELDS if f not in override)
        if missing:
            return PricingAmbiguous(
                model, missing, f"the model is not in the price catalog ({catalog.date})"
            )
        rates = Rates.from_document(override)
        return Prices(rates, _long_prompt(override.get("longPrompt")), source="spec")
    if "input" in override:
        missing = tuple(f for f in CACHE_FIELDS if f not in override)
        if missing:
            return PricingAmbiguous(
                model,
                missing,
                "spec.pricing.input is overridden, and cache prices do not follow from it "
                "(current models read the cache at 0.025x to 0.1x input)",
            )
    if base.long_prompt and "longPrompt" not in override:
        band = base.long_prompt.threshold_tokens
        return PricingAmbiguous(
            model,
            ("longPrompt",),
            f"the catalog bills prompts over {band:,} tokens at other rates, and an override "
            "does not say whether they still apply",
        )
    rates = base.rates.to_document()
    rates.update({k: override[k] for k in RATE_FIELDS if k in override})
    long_prompt = (
        _long_prompt(override["longPrompt"]) if "longPrompt" in override else base.long_prompt
    )
    return replace(base, rates=Rates.from_document(rates), long_prompt=long_prompt, source="spec")


def _long_prompt(doc: Mapping[str, Any] | None) -> LongPromptBand | None:
    if not doc:
        return None
    return LongPromptBand(int(doc["thresholdTokens"]), Rates.from_document(doc))


# --- the price-catalog document (the operator's optional ConfigMap) --------------------------


class CatalogError(ValueError):
    """A price-catalog document that does not parse; the message names the field."""


def parse_catalog(doc: Any, *, source: str = "configmap") -> PriceCatalog:
    """A catalog from ``{date, models: {id: {input, output, ..., longPrompt, retires}}}``.

    Every entry states all five rates (nothing derived); ``longPrompt``, ``batchMultiplier``,
    ``minCacheableTokens``, ``retires`` (YYYY-MM-DD), ``status`` and ``aliases`` are optional,
    and the non-price ones default to the built-in entry of the same model when there is one.
    """
    if not isinstance(doc, Mapping):
        raise CatalogError("price catalog: expected a mapping with 'date' and 'models'")
    when = str(doc.get("date") or "").strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", when):
        raise CatalogError("price catalog: 'date' must be YYYY-MM-DD (when the prices were read)")
    models = doc.get("models")
    if not isinstance(models, Mapping) or not models:
        raise CatalogError("price catalog: 'models' must map model ids to prices")
    tag = f"{source}:{when}"
    return PriceCatalog(
        {str(m): _parse_entry(str(m), raw, tag, when) for m, raw in models.items()}, when
    )


_ENTRY_FIELDS = frozenset(
    {
        *RATE_FIELDS,
        "longPrompt",
        "batchMultiplier",
        "minCacheableTokens",
        "retires",
        "status",
        "aliases",
        "displayName",
        "source",
    }
)


def _parse_entry(model: str, raw: Any, tag: str, when: str) -> CatalogEntry:
    where = f"price catalog: models.{model}"
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{where}: expected a mapping of prices")
    unknown = sorted(set(raw) - _ENTRY_FIELDS)
    if unknown:
        raise CatalogError(f"{where}.{unknown[0]}: unknown field")
    missing = [f for f in RATE_FIELDS if raw.get(f) is None]
    if missing:
        raise CatalogError(f"{where}.{missing[0]}: required (every rate is stated, none derived)")
    try:
        rates = Rates.from_document(raw)
        band = raw.get("longPrompt")
        if band is not None:
            band_missing = [f for f in ("thresholdTokens", *RATE_FIELDS) if band.get(f) is None]
            if band_missing:
                raise CatalogError(f"{where}.longPrompt.{band_missing[0]}: required")
        multiplier = to_decimal(raw.get("batchMultiplier", BATCH_MULTIPLIER))
    except (TypeError, ArithmeticError, AttributeError) as exc:
        raise CatalogError(f"{where}: {exc}") from None
    if any(v < 0 for v in rates.to_decimals()) or not 0 < multiplier <= 1:
        raise CatalogError(f"{where}: prices must be >= 0 and batchMultiplier in (0, 1]")
    builtin = BUILTIN.entry(model)
    retires = raw.get("retires", builtin.retires if builtin else None)
    if isinstance(retires, str):
        try:
            retires = date.fromisoformat(retires)
        except ValueError:
            raise CatalogError(f"{where}.retires: must be YYYY-MM-DD") from None
    elif retires is not None and not isinstance(retires, date):
        raise CatalogError(f"{where}.retires: must be YYYY-MM-DD")
    status = raw.get("status", builtin.status if builtin else "active")
    if status not in ("active", "legacy", "deprecated", "retired"):
        raise CatalogError(f"{where}.status: one of active, legacy, deprecated, retired")
    min_cache = raw.get("minCacheableTokens", builtin.min_cacheable_tokens if builtin else None)
    if min_cache is not None and (isinstance(min_cache, bool) or not isinstance(min_cache, int)):
        raise CatalogError(f"{where}.minCacheableTokens: must be an integer")
    return CatalogEntry(
        model=model,
        display_name=str(raw.get("displayName") or (builtin.display_name if builtin else model)),
        prices=Prices(rates, _long_prompt(band), multiplier, source=tag),
        status=status,
        retires=retires,
        min_cacheable_tokens=min_cache,
        sources=(str(raw["source"]),) if raw.get("source") else (tag,),
        checked=when,
        aliases=tuple(str(a) for a in raw.get("aliases") or (builtin.aliases if builtin else ())),
    )

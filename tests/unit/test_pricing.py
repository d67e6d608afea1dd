import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierwise.pricing import (
    BUILTIN,
    CATALOG_DATE,
    CatalogError,
    Prices,
    PricingAmbiguous,
    PricingUnknown,
    Rates,
    Usage,
    catalog_prices,
    cost_breakdown,
    cost_usd,
    counterfactual_cost_usd,
    format_usd,
    known_models,
    min_cacheable_tokens,
    parse_catalog,
    resolve_prices,
    retirement_notice,
)
from tierwise.pricing.table import STATUS_DAY, catalog_table

MILLION = 1_000_000
RATES = ("input", "output", "cacheWrite5m", "cacheWrite1h", "cacheRead")


def prices(model: str) -> Prices:
    found = catalog_prices(model)
    assert isinstance(found, Prices), found
    return found


def test_one_million_in_and_out_on_haiku_4_5_costs_six_dollars_exactly():
    cost = cost_usd(Usage(input_tokens=MILLION, output_tokens=MILLION), prices("claude-haiku-4-5"))
    assert cost == Decimal("6.00")
    assert isinstance(cost, Decimal)


# Every usage shape on a current model, against figures worked out by hand from the
# published Sonnet 5.5 rates: $2 input, $10 output, $2.50 5m writes, $4 1h writes, $0.10
# cache reads per million tokens; batch halves everything.
SONNET_5_5_SHAPES = [
    # (usage, batch, expected dollars, how)
    (Usage(input_tokens=1200, output_tokens=80), False, "0.0032", "1200*2 + 80*10"),
    (
        Usage(100, 50, cache_write_5m_input_tokens=5000),
        False,
        "0.013200",
        "100*2 + 50*10 + 5000*2.5",
    ),
    (Usage(100, 50, cache_write_1h_input_tokens=5000), False, "0.020700", "100*2 + 50*10 + 5000*4"),
    (Usage(100, 50, cache_read_input_tokens=5000), False, "0.001200", "100*2 + 50*10 + 5000*0.1"),
    (Usage(1200, 80, 5000, 1000, 2000), True, "0.0071", "(2400+800+500+2500+8000)/2"),
    # Thinking is billed as output: 300 answer + 2700 thinking tokens = 3000 output tokens.
    (Usage(input_tokens=1000, output_tokens=3000), False, "0.032", "1000*2 + 3000*10"),
]


@pytest.mark.parametrize(("usage", "batch", "expected", "how"), SONNET_5_5_SHAPES)
def test_every_usage_shape_on_sonnet_5_5_matches_the_hand_computed_bill(
    usage, batch, expected, how
):
    assert cost_usd(usage, prices("claude-sonnet-5-5"), batch=batch) == Decimal(expected), how


def test_long_context_on_haiku_5_5_reprices_the_whole_request():
    p = prices("claude-haiku-5-5")
    # 100,000 prompt tokens is still the low band: 100000*0.10 + 1000*0.50
    assert cost_usd(Usage(100_000, 1000), p) == Decimal("0.0105")
    # One more prompt token (a cache read counts) and every token is billed at the high
    # band: 90000*0.50 + 10001*0.05 + 1000*2.50
    assert cost_usd(Usage(90_000, 1000, cache_read_input_tokens=10_001), p) == Decimal("0.04800005")
    # Batch stacks with the band: half of the above.
    assert cost_usd(Usage(90_000, 1000, 10_001), p, batch=True) == Decimal("0.024000025")


def test_opus_5_5_and_fable_5_1_read_the_cache_below_the_old_multiplier():
    opus = prices("claude-opus-5-5").rates
    assert (opus.input, opus.output, opus.cache_write_5m, opus.cache_write_1h, opus.cache_read) == (
        Decimal(4),
        Decimal(20),
        Decimal(5),
        Decimal(8),
        Decimal("0.20"),
    )
    assert prices("claude-fable-5-1").rates.cache_read == Decimal("0.25")  # 0.025x input


def test_each_kind_of_token_is_billed_at_its_own_rate():
    usage = Usage(
        input_tokens=1000,
        output_tokens=500,
        cache_read_input_tokens=20_000,
        cache_write_5m_input_tokens=4000,
        cache_write_1h_input_tokens=8000,
    )
    breakdown = cost_breakdown(usage, prices("claude-sonnet-4-6"))
    assert breakdown.input == Decimal("0.003")  # 1000 * $3 / 1M
    assert breakdown.output == Decimal("0.0075")  # 500 * $15 / 1M
    assert breakdown.cache_read == Decimal("0.006")  # 20000 * $0.30 / 1M
    assert breakdown.cache_write_5m == Decimal("0.015")  # 4000 * $3.75 / 1M
    assert breakdown.cache_write_1h == Decimal("0.048")  # 8000 * $6 / 1M
    assert breakdown.total == Decimal("0.0795")


def test_batch_halves_every_rate_including_cache():
    usage = Usage(MILLION, MILLION, MILLION, MILLION, MILLION)
    p = prices("claude-opus-5-5")
    assert cost_usd(usage, p, batch=True) * 2 == cost_usd(usage, p)
    assert cost_usd(usage, p, batch=True) == Decimal("18.6")  # (4+20+0.2+5+8)/2


def test_dated_model_ids_price_like_their_undated_form():
    assert catalog_prices("claude-haiku-4-5-20251001") == catalog_prices("claude-haiku-4-5")
    assert catalog_prices("claude-sonnet-4-0") == catalog_prices("claude-sonnet-4")


def test_unknown_model_is_an_error_value_never_zero():
    found = catalog_prices("claude-imaginary-9")
    assert isinstance(found, PricingUnknown)
    assert "claude-imaginary-9" in found.message and "spec.pricing.cacheRead" in found.message


def test_override_of_an_unknown_model_must_state_every_rate():
    partial = resolve_prices("my-model", {"input": 2, "output": 8})
    assert isinstance(partial, PricingAmbiguous)
    assert partial.missing == ("cacheWrite5m", "cacheWrite1h", "cacheRead")
    assert "spec.pricing.cacheRead" in partial.message
    full = {"input": 2, "output": 8, "cacheWrite5m": 2.5, "cacheWrite1h": 4, "cacheRead": 0.1}
    resolved = resolve_prices("my-model", full)
    assert isinstance(resolved, Prices) and resolved.source == "spec"
    assert resolved.rates == Rates(
        Decimal(2), Decimal(8), Decimal("2.5"), Decimal(4), Decimal("0.1")
    )


def test_overriding_input_alone_is_ambiguous_never_a_doubled_cache_read():
    # Opus 5.5 reads the cache at 0.05x: deriving 0.1x from input would double it.
    found = resolve_prices("claude-opus-5-5", {"input": 4, "output": 20})
    assert isinstance(found, PricingAmbiguous)
    assert found.missing == ("cacheWrite5m", "cacheWrite1h", "cacheRead")
    assert found.reason == "PricingAmbiguous"


def test_partial_override_keeps_catalog_rates_it_does_not_touch():
    resolved = resolve_prices("claude-sonnet-5-5", {"output": 12, "cacheRead": 0.25})
    assert isinstance(resolved, Prices)
    assert resolved.rates.input == Decimal(2)
    assert resolved.rates.output == Decimal(12)
    assert resolved.rates.cache_read == Decimal("0.25")
    assert resolved.rates.cache_write_1h == Decimal(4)


def test_overriding_a_banded_model_must_say_what_happens_to_the_band():
    found = resolve_prices("claude-haiku-5-5", {"output": "0.4"})
    assert isinstance(found, PricingAmbiguous) and found.missing == ("longPrompt",)
    assert "100,000 tokens" in found.message
    band = {
        "thresholdTokens": 100_000,
        "input": "0.5",
        "output": "2",
        "cacheWrite5m": "0.625",
        "cacheWrite1h": "1",
        "cacheRead": "0.05",
    }
    resolved = resolve_prices("claude-haiku-5-5", {"output": "0.4", "longPrompt": band})
    assert isinstance(resolved, Prices)
    assert resolved.long_prompt is not None and resolved.long_prompt.rates.output == 2


def test_long_prompt_band_prices_the_whole_request():
    p = prices("claude-sonnet-4-5")
    short = Usage(input_tokens=200_000, output_tokens=1000)
    long = Usage(input_tokens=150_000, cache_read_input_tokens=50_001, output_tokens=1000)
    assert cost_usd(short, p) == Decimal("0.615")  # 200k*$3 + 1k*$15
    assert cost_usd(long, p) == Decimal("0.9525006")  # 150k*$6 + 50001*$0.6 + 1k*$22.5


def test_retirement_notices_within_thirty_days_and_after():
    assert retirement_notice("claude-sonnet-5-5", date(2026, 11, 29)) is None
    soon = retirement_notice("claude-sonnet-4-5-20250929", date(2026, 11, 29))
    assert soon is not None and not soon.retired and soon.days_left == 1
    assert "retires on 2026-11-30 (in 1 day)" in soon.message
    assert retirement_notice("claude-sonnet-4-5", date(2026, 10, 30)) is None  # 31 days out
    assert retirement_notice("claude-sonnet-4-5", date(2026, 10, 31)) is not None
    gone = retirement_notice("claude-sonnet-4-5", date(2026, 11, 30))
    assert gone is not None and gone.retired and gone.reason == "Retired"
    undated = retirement_notice("claude-opus-4-1", date(2026, 11, 29))
    assert undated is not None and undated.retired
    assert retirement_notice("claude-opus-4-5", date(2026, 11, 29)) is None  # 2027-01-22
    assert retirement_notice("not-a-model", date(2026, 11, 29)) is None


def test_catalog_document_overrides_and_adds_models():
    doc = {
        "date": "2026-12-15",
        "models": {
            "claude-sonnet-5-5": {
                "input": 1.5,
                "output": 7.5,
                "cacheWrite5m": 1.875,
                "cacheWrite1h": 3,
                "cacheRead": 0.075,
            },
            "claude-next-6": {
                "input": 1,
                "output": 2,
                "cacheWrite5m": 3,
                "cacheWrite1h": 4,
                "cacheRead": 0.05,
                "retires": "2026-12-20",
                "minCacheableTokens": 256,
            },
        },
    }
    catalog = BUILTIN.overlay(parse_catalog(doc))
    assert catalog.prices("claude-sonnet-5-5").rates.input == Decimal("1.5")  # type: ignore[union-attr]
    assert catalog.prices("claude-sonnet-5-5").source == "configmap:2026-12-15"  # type: ignore[union-attr]
    assert catalog.prices("claude-haiku-4-5") == BUILTIN.prices("claude-haiku-4-5")
    assert catalog.min_cacheable_tokens("claude-next-6") == 256
    assert retirement_notice("claude-next-6", date(2026, 12, 1), catalog) is not None
    # an override entry replaces an aliased built-in entry, dated id included
    assert catalog.entry("claude-sonnet-5-5-20261001").prices.rates.output == Decimal("7.5")  # type: ignore[union-attr]
    resolved = resolve_prices("claude-next-6", None, catalog)
    assert isinstance(resolved, Prices)


@pytest.mark.parametrize(
    ("doc", "names"),
    [
        ({"models": {}}, "'date'"),
        ({"date": "2026-12-01", "models": {}}, "'models'"),
        (
            {"date": "2026-12-01", "models": {"m": {"input": 1, "output": 2}}},
            "models.m.cacheWrite5m",
        ),
        (
            {"date": "2026-12-01", "models": {"m": {**dict.fromkeys(RATES, 1), "price": 1}}},
            "models.m.price: unknown field",
        ),
        (
            {"date": "2026-12-01", "models": {"m": {**dict.fromkeys(RATES, 1), "retires": "soon"}}},
            "models.m.retires",
        ),
        (
            {"date": "2026-12-01", "models": {"m": {**dict.fromkeys(RATES, -1)}}},
            "models.m: prices must be >= 0",
        ),
        (
            {
                "date": "2026-12-01",
                "models": {"m": {**dict.fromkeys(RATES, 1), "longPrompt": {"input": 1}}},
            },
            "models.m.longPrompt.thresholdTokens",
        ),
    ],
)
def test_a_bad_catalog_document_is_an_error_naming_the_field(doc, names):
    with pytest.raises(CatalogError, match=re.escape(names)):
        parse_catalog(doc)


def test_usage_from_anthropic_splits_cache_writes_by_ttl():
    usage = Usage.from_anthropic(
        {
            "input_tokens": 10,
            "output_tokens": 20,
            "cache_read_input_tokens": 30,
            "cache_creation_input_tokens": 70,
            "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 40},
        }
    )
    assert usage == Usage(10, 20, 30, 30, 40)
    assert usage.prompt_tokens == 110


def test_usage_without_ttl_split_counts_writes_as_five_minute():
    usage = Usage.from_anthropic(
        {"input_tokens": 1, "output_tokens": 2, "cache_creation_input_tokens": 50}
    )
    assert usage.cache_write_5m_input_tokens == 50 and usage.cache_write_1h_input_tokens == 0


def test_usage_from_the_sdk_object():
    from anthropic.types import Usage as SdkUsage

    sdk = SdkUsage(
        input_tokens=5, output_tokens=6, cache_read_input_tokens=7, cache_creation_input_tokens=8
    )
    assert Usage.from_anthropic(sdk) == Usage(5, 6, 7, 8, 0)


def test_counterfactual_prices_the_same_usage_on_another_tier():
    usage = Usage(2000, 300)
    haiku, sonnet = prices("claude-haiku-4-5"), prices("claude-sonnet-4-6")
    assert counterfactual_cost_usd(usage, sonnet) == cost_usd(usage, haiku) * 3


def test_every_catalog_entry_is_priced_dated_and_sourced():
    for model in known_models():
        entry = BUILTIN.entry(model)
        assert entry is not None and entry.sources and entry.checked >= CATALOG_DATE
        rates = entry.prices.rates
        assert rates.input > 0 and rates.output > rates.input
        assert rates.cache_read < rates.input < rates.cache_write_5m < rates.cache_write_1h
        assert entry.status in ("active", "legacy", "deprecated", "retired")
        if entry.status == "deprecated":
            assert entry.retires is not None, model
    for current in ("claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-fable-5-1"):
        assert BUILTIN.entry(current).status == "active"  # type: ignore[union-attr]


def test_pricing_doc_table_lists_every_catalog_model_as_the_catalog_has_it():
    text = (Path(__file__).parents[2] / "docs" / "pricing.md").read_text()
    day = STATUS_DAY.search(text)
    assert day, "the table names the day of its status column"
    table = catalog_table(today=date.fromisoformat(day.group(1)))
    assert table in text, "regenerate with: python -m tierwise.pricing.table"


def test_a_models_status_follows_from_its_dates_and_the_day():
    sonnet_4_5 = BUILTIN.entry("claude-sonnet-4-5")
    opus_4_5 = BUILTIN.entry("claude-opus-4-5")
    assert sonnet_4_5 is not None and opus_4_5 is not None
    assert sonnet_4_5.status_on(date(2026, 11, 29)) == "deprecated"
    assert sonnet_4_5.status_on(date(2026, 11, 30)) == "retired"  # its retirement date
    assert opus_4_5.status_on(date(2026, 11, 22)) == "legacy"
    assert opus_4_5.status_on(date(2026, 11, 23)) == "deprecated"
    assert opus_4_5.status_on(date(2027, 1, 22)) == "retired"
    assert "| `claude-sonnet-4-5` (claude-sonnet-4-5-20250929) | retired |" in catalog_table(
        today=date(2026, 12, 6)
    )


def test_every_source_is_anthropics_and_figures_found_elsewhere_say_so():
    for entry in BUILTIN.entries.values():
        for source in entry.sources:
            assert source.startswith("https://platform.claude.com/"), (entry.model, source)
    fable = BUILTIN.entry("claude-fable-5-2")
    assert fable is not None
    assert "not found on an Anthropic page" in fable.note


def test_minimum_cacheable_length_per_model():
    assert min_cacheable_tokens("claude-haiku-4-5-20251001") == 4096
    assert min_cacheable_tokens("claude-sonnet-4-5") == 1024
    assert min_cacheable_tokens("claude-fable-5-1") == 512
    assert min_cacheable_tokens("claude-opus-5-5") == 1024  # not published: the default


def test_format_usd_is_plain_decimal():
    assert format_usd(Decimal("0.000015")) == "0.000015"
    assert format_usd(Decimal("6.00")) == "6"
    assert format_usd(Decimal("1E+1")) == "10"


tokens = st.integers(min_value=0, max_value=10**9)
usages = st.builds(Usage, tokens, tokens, tokens, tokens, tokens)
price_values = st.decimals(
    min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False
)
flat_prices = st.builds(
    lambda *r: Prices(Rates(*r)),
    price_values,
    price_values,
    price_values,
    price_values,
    price_values,
)


@given(usages, usages, flat_prices)
def test_cost_is_additive_over_usage(a, b, p):
    assert cost_usd(a + b, p) == cost_usd(a, p) + cost_usd(b, p)


@given(usages, flat_prices)
def test_batch_is_exactly_half_and_cost_never_negative(usage, p):
    full = cost_usd(usage, p)
    assert full >= 0
    assert cost_usd(usage, p, batch=True) == full / 2


@given(usages, flat_prices)
def test_cost_is_exact_sum_of_token_times_rate(usage, p):
    r = p.rates
    expected = (
        usage.input_tokens * r.input
        + usage.output_tokens * r.output
        + usage.cache_read_input_tokens * r.cache_read
        + usage.cache_write_5m_input_tokens * r.cache_write_5m
        + usage.cache_write_1h_input_tokens * r.cache_write_1h
    ) / MILLION
    assert cost_usd(usage, p) == expected


@given(usages)
def test_usage_round_trips_through_the_anthropic_shape(usage):
    assert Usage.from_anthropic(usage.to_anthropic()) == usage


@given(flat_prices)
def test_prices_round_trip_through_the_document(p):
    assert Prices.from_document(p.to_document()) == p


def test_usage_reads_thinking_server_tools_and_geo_from_the_api() -> None:
    usage = Usage.from_anthropic(
        {
            "input_tokens": 400,
            "output_tokens": 2100,
            "output_tokens_details": {"thinking_tokens": 2000},
            "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 1},
            "inference_geo": "us",
        }
    )
    assert (usage.thinking_tokens, usage.web_search_requests, usage.inference_geo) == (
        2000,
        3,
        "us",
    )
    assert Usage.from_anthropic(usage.to_anthropic()) == usage


def test_thinking_is_billed_as_output_and_searches_per_request() -> None:
    prices = catalog_prices("claude-sonnet-4-6")
    assert not isinstance(prices, PricingUnknown)
    thinking = Usage(input_tokens=1000, output_tokens=2100, thinking_tokens=2000)
    # Thinking tokens are inside output_tokens: priced once, at the output rate.
    assert cost_usd(thinking, prices) == Decimal("0.003") + Decimal("0.0315")
    searched = Usage(input_tokens=1000, web_search_requests=2)
    assert cost_usd(searched, prices) == Decimal("0.003") + Decimal("0.02")


def test_us_inference_costs_more() -> None:
    prices = catalog_prices("claude-opus-4-6")
    assert not isinstance(prices, PricingUnknown)
    base = Usage(input_tokens=1_000_000, output_tokens=100_000)
    us = Usage(input_tokens=1_000_000, output_tokens=100_000, inference_geo="us")
    assert cost_usd(us, prices) == cost_usd(base, prices) * Decimal("1.1")

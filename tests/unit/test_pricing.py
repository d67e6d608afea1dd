from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierwise.pricing import (
    Prices,
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
    resolve_prices,
)

MILLION = 1_000_000


def prices(model: str) -> Prices:
    found = catalog_prices(model)
    assert isinstance(found, Prices), found
    return found


def test_one_million_in_and_out_on_haiku_4_5_costs_six_dollars_exactly():
    cost = cost_usd(Usage(input_tokens=MILLION, output_tokens=MILLION), prices("claude-haiku-4-5"))
    assert cost == Decimal("6.00")
    assert isinstance(cost, Decimal)


@pytest.mark.parametrize(
    ("model", "input", "output"),
    [
        ("claude-haiku-4-5", "1", "5"),
        ("claude-sonnet-4-5", "3", "15"),
        ("claude-opus-4-5", "5", "25"),
    ],
)
def test_current_models_follow_the_documented_cache_multipliers(model, input, output):
    rates = prices(model).rates
    assert rates.input == Decimal(input)
    assert rates.output == Decimal(output)
    assert rates.cache_write_5m == Decimal(input) * Decimal("1.25")
    assert rates.cache_write_1h == Decimal(input) * 2
    assert rates.cache_read == Decimal(input) * Decimal("0.1")


def test_each_kind_of_token_is_billed_at_its_own_rate():
    usage = Usage(
        input_tokens=1000,
        output_tokens=500,
        cache_read_input_tokens=20_000,
        cache_write_5m_input_tokens=4000,
        cache_write_1h_input_tokens=8000,
    )
    breakdown = cost_breakdown(usage, prices("claude-sonnet-4-5"))
    assert breakdown.input == Decimal("0.003")  # 1000 * $3 / 1M
    assert breakdown.output == Decimal("0.0075")  # 500 * $15 / 1M
    assert breakdown.cache_read == Decimal("0.006")  # 20000 * $0.30 / 1M
    assert breakdown.cache_write_5m == Decimal("0.015")  # 4000 * $3.75 / 1M
    assert breakdown.cache_write_1h == Decimal("0.048")  # 8000 * $6 / 1M
    assert breakdown.total == Decimal("0.0795")


def test_batch_halves_every_rate_including_cache():
    usage = Usage(MILLION, MILLION, MILLION, MILLION, MILLION)
    p = prices("claude-opus-4-5")
    assert cost_usd(usage, p, batch=True) * 2 == cost_usd(usage, p)
    assert cost_usd(usage, p, batch=True) == Decimal("23.375")  # (5+25+0.5+6.25+10)/2


def test_dated_model_ids_price_like_their_undated_form():
    assert catalog_prices("claude-haiku-4-5-20251001") == catalog_prices("claude-haiku-4-5")


def test_unknown_model_is_an_error_value_never_zero():
    found = catalog_prices("claude-imaginary-9")
    assert isinstance(found, PricingUnknown)
    assert "claude-imaginary-9" in found.message and "spec.pricing" in found.message
    # An override of only one price is not enough for an unknown model.
    assert isinstance(resolve_prices("claude-imaginary-9", {"input": 1}), PricingUnknown)


def test_override_for_unknown_model_derives_cache_prices_from_input():
    resolved = resolve_prices("my-model", {"input": 2, "output": 8})
    assert isinstance(resolved, Prices)
    assert resolved.rates == Rates(
        Decimal(2), Decimal(8), Decimal("2.5"), Decimal(4), Decimal("0.2")
    )
    assert resolved.source == "spec"


def test_partial_override_keeps_catalog_rates_it_does_not_touch():
    resolved = resolve_prices("claude-sonnet-4-5", {"output": 12, "cacheRead": 0.25})
    assert isinstance(resolved, Prices)
    assert resolved.rates.input == Decimal(3)
    assert resolved.rates.output == Decimal(12)
    assert resolved.rates.cache_read == Decimal("0.25")
    assert resolved.rates.cache_write_1h == Decimal(6)


def test_long_prompt_band_prices_the_whole_request():
    p = prices("claude-sonnet-4-5")
    short = Usage(input_tokens=200_000, output_tokens=1000)
    long = Usage(input_tokens=150_000, cache_read_input_tokens=50_001, output_tokens=1000)
    assert cost_usd(short, p) == Decimal("0.615")  # 200k*$3 + 1k*$15
    assert cost_usd(long, p) == Decimal("0.9525006")  # 150k*$6 + 50001*$0.6 + 1k*$22.5


def test_haiku_5_5_is_priced_by_prompt_length():
    p = prices("claude-haiku-5-5")
    assert cost_usd(Usage(100_000, 1000), p) == Decimal("0.0105")
    assert cost_usd(Usage(100_001, 1000), p) == Decimal("0.0525005")


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
    haiku, sonnet = prices("claude-haiku-4-5"), prices("claude-sonnet-4-5")
    assert counterfactual_cost_usd(usage, sonnet) == cost_usd(usage, haiku) * 3


def test_every_catalog_entry_is_priced_and_cache_reads_are_cheaper_than_input():
    for model in known_models():
        rates = prices(model).rates
        assert rates.input > 0 and rates.output > rates.input
        assert rates.cache_read < rates.input < rates.cache_write_5m < rates.cache_write_1h


def test_minimum_cacheable_length_per_model():
    assert min_cacheable_tokens("claude-haiku-4-5-20251001") == 4096
    assert min_cacheable_tokens("claude-sonnet-4-5") == 1024


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

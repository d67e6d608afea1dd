from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from tierwise.cli import main
from tierwise.pricing.estimate import break_even_rate, cascade_cost_per_request, estimate_cascade


def test_worked_example_in_relative_units(capsys):
    code = main(
        [
            "estimate",
            "--requests",
            "100000",
            "--cheap-cost",
            "1",
            "--strong-cost",
            "5",
            "--resolved",
            "0.9",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "all-strong:        500,000 units" in out
    assert "cascade:           150,000 units" in out
    assert "(70% cut)" in out
    assert "break-even:        80% escalation" in out


def test_dollars_from_the_example_route(capsys):
    code = main(
        [
            "estimate",
            "-f",
            "examples/support-triage/",
            "--route",
            "triage",
            "--input-tokens",
            "1000",
            "--output-tokens",
            "200",
            "--escalation-rate",
            "0.1",
            "--requests",
            "1000",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    # haiku 5.5: 1000*$0.10 + 200*$0.50 = $0.0002/request; sonnet 5.5: 1000*$2 + 200*$10
    # = $0.004/request. Cascade: 1000*$0.0002 + 100*$0.004.
    assert "all-strong:        $4.00" in out
    assert "cascade:           $0.60" in out
    assert "saving:            $3.40" in out


def test_unknown_model_is_an_error(capsys):
    assert main(["estimate", "--cheap-model", "nope", "--strong-model", "claude-opus-5-5"]) == 1
    assert "not in the price catalog" in capsys.readouterr().err


def test_missing_route_is_an_error(capsys):
    assert main(["estimate", "-f", "examples/support-triage/", "--route", "nope"]) == 1
    assert "no route 'nope'" in capsys.readouterr().err


def test_cascade_that_never_pays_off_has_break_even_zero():
    assert break_even_rate([Decimal(5), Decimal(5)], Decimal(5)) == Decimal(0)


def test_cheap_cascade_never_reaches_break_even():
    # The strong tier is far dearer than any path through the cascade.
    assert break_even_rate([Decimal(1), Decimal(2)], Decimal(10)) is None


costs = st.decimals(min_value=Decimal("0.01"), max_value=100, places=2)


@given(st.lists(costs, min_size=2, max_size=4))
def test_at_break_even_cascade_costs_what_all_strong_does(step_costs):
    strong = max(step_costs)
    rate = break_even_rate(step_costs, strong)
    if rate is None:
        assert cascade_cost_per_request(step_costs, Decimal(1)) <= strong
    elif rate > 0:
        assert abs(cascade_cost_per_request(step_costs, rate) - strong) < Decimal("1e-9") * strong


@given(costs, costs, st.decimals(min_value=0, max_value=1, places=3), st.integers(1, 10**6))
def test_two_step_totals(cheap, strong, rate, requests):
    result = estimate_cascade(requests, [cheap, strong], rate)
    assert result.cascade == requests * (cheap + rate * strong)
    assert result.all_strong == requests * strong
    assert result.saving == result.all_strong - result.cascade


def test_batch_shows_the_combined_saving_against_all_strong_synchronous(capsys):
    code = main(
        [
            "estimate",
            "-f",
            "examples/support-triage/",
            "--route",
            "triage",
            "--input-tokens",
            "1200",
            "--output-tokens",
            "60",
            "--escalation-rate",
            "0.33",
            "--requests",
            "10000",
            "--batch",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    # sync Sonnet 5.5: 1200*$2 + 60*$10 = $0.003/request, $30 for 10,000.
    assert "all-strong (sync): $30.00" in out
    # batch: haiku (1200*$0.10 + 60*$0.50)/2 for all; sonnet $0.0015 for the 3,300 escalated.
    assert "batch cascade:     $5.70" in out
    assert "combined saving:   $24.30 (81% cut: cascade x batch)" in out

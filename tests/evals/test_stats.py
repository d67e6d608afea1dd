"""Quality intervals: reference values, and properties over many counts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierwise.evals.stats import (
    PairedCounts,
    corrected_phi,
    paired_difference,
    percentile,
    wilson_interval,
)

# Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison of
# seven methods", Statistics in Medicine 17:857-872, Table II, method 3 (Wilson score).
NEWCOMBE_WILSON = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize(("successes", "total", "low", "high"), NEWCOMBE_WILSON)
def test_wilson_matches_published_values(successes, total, low, high):
    interval = wilson_interval(successes, total)
    assert interval is not None
    assert interval.low == pytest.approx(low, abs=5e-5)
    assert interval.high == pytest.approx(high, abs=5e-5)


def test_zero_graded_items_have_no_interval():
    assert wilson_interval(0, 0) is None
    assert paired_difference(PairedCounts(0, 0, 0, 0)) is None


def test_impossible_counts_are_refused():
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


counts = st.integers(min_value=1, max_value=5000).flatmap(
    lambda n: st.tuples(st.integers(min_value=0, max_value=n), st.just(n))
)


@given(counts)
def test_wilson_contains_the_estimate_and_stays_in_0_1(pair):
    successes, total = pair
    interval = wilson_interval(successes, total)
    assert interval is not None
    assert 0.0 <= interval.low <= interval.estimate <= interval.high <= 1.0


@given(counts, st.integers(min_value=2, max_value=20))
def test_more_items_narrow_the_interval(pair, factor):
    successes, total = pair
    small = wilson_interval(successes, total)
    large = wilson_interval(successes * factor, total * factor)
    assert small is not None and large is not None
    assert large.high - large.low < small.high - small.low


def test_the_gate_reads_the_lower_bound_not_the_mean():
    # 9 of 10 is a 90% mean but a lower bound near 60%.
    interval = wilson_interval(9, 10)
    assert interval is not None
    assert interval.estimate == 0.9 and interval.low < 0.6


paired = st.tuples(*(st.integers(min_value=0, max_value=300) for _ in range(4))).filter(
    lambda t: sum(t) > 0
)


@given(paired)
def test_paired_difference_contains_the_estimate(t):
    counts = PairedCounts(*t)
    interval = paired_difference(counts)
    assert interval is not None
    assert -1.0 <= interval.low <= interval.estimate <= interval.high <= 1.0
    assert interval.estimate == pytest.approx(
        (counts.first_only - counts.second_only) / counts.total
    )


@given(paired)
def test_paired_difference_is_antisymmetric(t):
    a, b, c, d = t
    forward = paired_difference(PairedCounts(a, b, c, d))
    backward = paired_difference(PairedCounts(a, c, b, d))
    assert forward is not None and backward is not None
    assert forward.low == pytest.approx(-backward.high, abs=1e-12)
    assert forward.high == pytest.approx(-backward.low, abs=1e-12)


def test_pairing_narrows_the_difference_of_agreeing_configs():
    # 200 items, the configs disagree on 4: the paired interval is much narrower than what
    # two independent samples with the same margins would give (Newcombe's method 10 with
    # phi = 0 is the unpaired hybrid score interval).
    agreeing = paired_difference(PairedCounts(180, 2, 2, 16))
    assert agreeing is not None
    assert agreeing.estimate == 0
    assert agreeing.high < 0.03
    first = wilson_interval(182, 200)
    second = wilson_interval(182, 200)
    assert first is not None and second is not None
    unpaired_half = (
        (first.high - first.estimate) ** 2 + (second.estimate - second.low) ** 2
    ) ** 0.5
    assert agreeing.high < unpaired_half / 2


def test_paired_difference_hand_computed():
    # a=40 b=10 c=2 d=8 (n=60): delta = 8/60; ad-bc = 300 > n/2, so
    # phi* = (300 - 30) / sqrt(50*10*42*18) = 0.43916; bounds from Newcombe's formula.
    counts = PairedCounts(40, 10, 2, 8)
    assert corrected_phi(counts) == pytest.approx(0.43916, abs=1e-5)
    interval = paired_difference(counts)
    assert interval is not None
    assert interval.estimate == pytest.approx(0.13333, abs=1e-5)
    assert interval.low == pytest.approx(0.0192, abs=5e-4)
    assert interval.high == pytest.approx(0.2472, abs=5e-4)


def test_point3_published_example_fagerland_lydersen_laake_2017():
    # Fagerland, Lydersen & Laake (2017), "Statistical Analysis of Contingency Tables",
    # the paired table [[59, 6], [16, 80]] with Newcombe's hybrid score interval:
    # -0.0621 [-0.1186, -0.0046].
    interval = paired_difference(PairedCounts(59, 6, 16, 80))
    assert interval is not None
    assert round(interval.estimate, 4) == -0.0621
    assert round(interval.low, 4) == -0.1186
    assert round(interval.high, 4) == -0.0046


@pytest.mark.parametrize(
    ("table", "phi"),
    [
        ((40, 10, 2, 8), 270 / (50 * 10 * 42 * 18) ** 0.5),  # ad-bc = 300 > n/2: minus n/2
        ((10, 5, 5, 3), 0.0),  # 0 <= ad-bc = 5 <= n/2 = 11.5: zero
        ((5, 10, 10, 5), -75 / 225),  # ad-bc < 0: uncorrected
        ((10, 0, 0, 0), 0.0),  # an empty margin
    ],
)
def test_point3_corrected_phi_is_piecewise_as_published(table, phi):
    assert corrected_phi(PairedCounts(*table)) == pytest.approx(phi, abs=1e-12)


def test_point3_no_discordant_pairs_near_half_quality_is_not_a_point():
    # 25 both right, 25 both wrong: the uncorrected phi is 1 and the interval collapsed to
    # [0, 0]; with phi* = (625 - 25)/625 it keeps a width.
    interval = paired_difference(PairedCounts(25, 0, 0, 25))
    assert interval is not None
    assert interval.high > 0.02 and interval.low < -0.02


def _simulated_misses(cells: tuple[float, float, float, float], n: int, runs: int) -> float:
    """Share of runs whose upper bound of the drop lies below the true drop."""
    rng = random.Random(f"coverage:{cells}:{n}")
    true_drop = cells[1] - cells[2]
    edges = [cells[0], cells[0] + cells[1], cells[0] + cells[1] + cells[2]]
    misses = 0
    for _ in range(runs):
        counts = [0, 0, 0, 0]
        for _ in range(n):
            u = rng.random()
            counts[sum(u >= e for e in edges)] += 1
        interval = paired_difference(PairedCounts(*counts))
        assert interval is not None
        misses += interval.high < true_drop - 1e-12
    return misses / runs


# (both right, baseline only, candidate only, both wrong): a typical cascade near 85%
# quality, and configs near 50% quality that rarely disagree (where the uncorrected phi
# gave zero-width intervals and missed in a sixth to a third of runs).
SCENARIOS = [(0.85, 0.05, 0.02, 0.08), (0.45, 0.05, 0.02, 0.48), (0.48, 0.02, 0.01, 0.49)]


@pytest.mark.parametrize("cells", SCENARIOS)
@pytest.mark.parametrize("n", [30, 50, 100, 200])
def test_point3_upper_bound_of_the_drop_covers_the_true_drop(cells, n):
    # A one-sided 97.5% bound should miss in 2.5% of runs; allow 3.5% (2000 seeded runs).
    assert _simulated_misses(cells, n, 2000) <= 0.035


def test_percentile():
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([1.0, 2.0], 0.95) == pytest.approx(1.95)

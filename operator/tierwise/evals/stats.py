"""Confidence intervals for quality: pure functions, no I/O.

Quality is a proportion (items answered correctly out of items graded), so its interval is
Wilson's score interval: unlike the normal ("Wald") interval it never leaves [0, 1] and keeps
its coverage near 0 and 1 and for small samples, which is where eval gates live.

The drop against the baseline compares two proportions measured on *the same items*, so the
interval of the difference is Newcombe's hybrid score interval for paired proportions
(Newcombe 1998, "Improved confidence intervals for the difference between binomial
proportions based on paired data", method 10) with the continuity-corrected correlation phi*
as published (checked against Fagerland, Lydersen & Laake 2017's worked example). Pairing matters: a cascade that answers most
items exactly like its baseline has a far narrower difference interval than two independent
samples of the same size would give.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

Z95 = 1.959963984540054  # two-sided 95%: the 0.975 quantile of the standard normal


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval."""

    estimate: float
    low: float
    high: float

    def format(self, digits: int = 3) -> str:
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def wilson_interval(successes: int, total: int, z: float = Z95) -> Interval | None:
    """Wilson score interval of ``successes`` out of ``total``; ``None`` when ``total`` is 0
    (nothing graded says nothing about quality)."""
    if total < 0 or not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total, got {successes}/{total}")
    if total == 0:
        return None
    p = successes / total
    z2 = z * z
    denominator = 1 + z2 / total
    centre = (p + z2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denominator
    # At p = 0 or 1 the bound is exactly 0 or 1; clamp away float noise.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return Interval(p, low, high)


@dataclass(frozen=True)
class PairedCounts:
    """Outcomes of two graders' verdicts on the same items.

    ``both``: correct in both; ``first_only``: correct in the first (the baseline) only;
    ``second_only``: correct in the second (the candidate) only; ``neither``.
    """

    both: int
    first_only: int
    second_only: int
    neither: int

    @property
    def total(self) -> int:
        return self.both + self.first_only + self.second_only + self.neither

    @classmethod
    def of(cls, pairs: Iterable[tuple[bool, bool]]) -> PairedCounts:
        counts = [0, 0, 0, 0]
        for first, second in pairs:
            if first and second:
                counts[0] += 1
            elif first:
                counts[1] += 1
            elif second:
                counts[2] += 1
            else:
                counts[3] += 1
        return cls(*counts)


def paired_difference(counts: PairedCounts, z: float = Z95) -> Interval | None:
    """Interval of (first - second) quality on paired items (Newcombe's method 10).

    Positive means the first (the baseline) is better: for a gate, the candidate's drop.
    """
    n = counts.total
    if n == 0:
        return None
    a, b, c = counts.both, counts.first_only, counts.second_only
    first = wilson_interval(a + b, n, z)
    second = wilson_interval(a + c, n, z)
    assert first is not None and second is not None
    delta = (b - c) / n
    phi = corrected_phi(counts)
    l1, u1 = first.estimate - first.low, first.high - first.estimate
    l2, u2 = second.estimate - second.low, second.high - second.estimate
    low = delta - math.sqrt(max(0.0, l1 * l1 - 2 * phi * l1 * u2 + u2 * u2))
    high = delta + math.sqrt(max(0.0, u1 * u1 - 2 * phi * u1 * l2 + l2 * l2))
    return Interval(delta, max(-1.0, low), min(1.0, high))


def corrected_phi(counts: PairedCounts) -> float:
    """Newcombe's continuity-corrected correlation phi* of the 2x2 table (method 10).

    With A = ad - bc and the margins e, f, g, h: (A - n/2)/sqrt(efgh) when A > n/2, 0 when
    0 <= A <= n/2, A/sqrt(efgh) when A < 0; 0 when a margin is empty. The uncorrected phi
    reaches 1 on a table without discordant pairs and collapses the interval to a point
    (zero width near 50% quality), which is what the correction is for.
    """
    a, b, c, d = counts.both, counts.first_only, counts.second_only, counts.neither
    n = counts.total
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    if margins == 0:
        return 0.0
    cross = a * d - b * c
    if cross > n / 2:
        return (cross - n / 2) / math.sqrt(margins)
    if cross >= 0:
        return 0.0
    return cross / math.sqrt(margins)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0 <= q <= 1:
        raise ValueError("q must be between 0 and 1")
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)

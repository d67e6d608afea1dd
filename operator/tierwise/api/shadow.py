"""``spec.evaluation.shadow``: the shadow stage of a CascadePolicy's rollout.

Mirrors the CRD's ``evaluation.shadow`` field for field (``tests/unit/test_api.py`` keeps them
in agreement); ``validate`` repeats its CEL rules with the same messages. Kept in its own
module so the rest of the policy's model stays as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from tierwise.api.parsing import SpecError

ComparisonType = Literal["graderField", "exactText", "judge"]


@dataclass(frozen=True)
class ShadowComparison:
    type: ComparisonType = "graderField"
    field: str | None = None  # default: the route's grader field, else "label"
    tier: str | None = None  # judge: the ModelTier that judges
    criteria: str | None = None  # judge: what a good answer does

    def validate(self, path: str) -> None:
        if self.type == "judge" and self.tier is None:
            raise SpecError(
                f"{path}.tier", "a judge comparison needs tier, the ModelTier that judges"
            )


@dataclass(frozen=True)
class Shadow:
    min_agreement: Decimal
    spend_limit_per_hour_usd: Decimal = field(metadata={"json": "spendLimitPerHourUSD"})
    sample_rate: Decimal = Decimal("0.1")
    min_samples: int = 200
    max_duration_seconds: int = 86400
    max_error_rate: Decimal = Decimal("0.05")
    comparison: ShadowComparison | None = None
    max_concurrency: int = 4
    timeout_seconds: int = 60
    exclude_routes: tuple[str, ...] | None = None

    def validate(self, path: str) -> None:
        rules = (
            (
                0 < self.sample_rate <= 1,
                "sampleRate",
                "shadow.sampleRate must be above 0 and at most 1",
            ),
            (
                1 <= self.min_samples <= 1_000_000,
                "minSamples",
                "shadow.minSamples must be between 1 and 1000000",
            ),
            (
                60 <= self.max_duration_seconds <= 2_592_000,
                "maxDurationSeconds",
                "shadow.maxDurationSeconds must be between 60 (a minute) and 2592000 (30 days)",
            ),
            (
                0 <= self.min_agreement <= 1,
                "minAgreement",
                "shadow.minAgreement must be between 0 and 1",
            ),
            (
                0 <= self.max_error_rate <= 1,
                "maxErrorRate",
                "shadow.maxErrorRate must be between 0 and 1",
            ),
            (
                self.spend_limit_per_hour_usd >= 0,
                "spendLimitPerHourUSD",
                "shadow.spendLimitPerHourUSD must be zero or more",
            ),
            (
                1 <= self.max_concurrency <= 64,
                "maxConcurrency",
                "shadow.maxConcurrency must be between 1 and 64",
            ),
            (
                1 <= self.timeout_seconds <= 600,
                "timeoutSeconds",
                "shadow.timeoutSeconds must be between 1 and 600",
            ),
        )
        for ok, name, message in rules:
            if not ok:
                raise SpecError(f"{path}.{name}", message)
        excluded = list(self.exclude_routes or ())
        if len(set(excluded)) != len(excluded):
            raise SpecError(path, "shadow.excludeRoutes names must be unique")

    @property
    def judge_tier(self) -> str | None:
        """The ModelTier that judges (its key must reach the sidecars), if a judge compares."""
        comparison = self.comparison
        return comparison.tier if comparison and comparison.type == "judge" else None

    def shadowed(self, route: str) -> bool:
        """Whether ``route``'s live requests may be sampled (it did not opt out)."""
        return route not in (self.exclude_routes or ())

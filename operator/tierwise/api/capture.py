"""``spec.capture``: capture of live requests for future datasets, in the injected sidecar.

Mirrors the CRD's ``capture`` field for field (``tests/unit/test_api.py`` keeps them in
agreement); ``validate`` repeats its CEL rules with the same messages, and compiles the
patterns, which CEL cannot. The webhook maps it to the router's ``--capture-*`` flags and a
volume (``controller/injection.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from tierwise.api.parsing import SpecError

# A redaction rule's name: it becomes ``[REDACTED:<name>]`` and the NAME of ``NAME=REGEX``.
RULE_NAME = re.compile(r"^[a-z0-9]([-_a-z0-9]*[a-z0-9])?$")
# A PersistentVolumeClaim's name (a DNS subdomain).
CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class RedactionRule:
    name: str
    pattern: str


@dataclass(frozen=True)
class Capture:
    claim_name: str
    rate: Decimal = Decimal("0.01")
    redact: tuple[RedactionRule, ...] | None = None
    max_bytes_per_day: int = 104857600

    def validate(self, path: str) -> None:
        if not CLAIM_NAME.match(self.claim_name) or len(self.claim_name) > 253:
            raise SpecError(
                f"{path}.claimName",
                "capture.claimName must name a PersistentVolumeClaim: lowercase letters, "
                "digits, '-' and '.'",
            )
        if not 0 < self.rate <= 1:
            raise SpecError(f"{path}.rate", "capture.rate must be above 0 and at most 1")
        if self.max_bytes_per_day < 1:
            raise SpecError(f"{path}.maxBytesPerDay", "capture.maxBytesPerDay must be at least 1")
        rules = list(self.redact or ())
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise SpecError(f"{path}.redact", "capture.redact names must be unique")
        for i, rule in enumerate(rules):
            if not RULE_NAME.match(rule.name):
                raise SpecError(
                    f"{path}.redact[{i}].name",
                    "a redaction rule's name must be lowercase letters, digits, '-' and '_', "
                    "starting and ending with a letter or digit",
                )
            try:
                re.compile(rule.pattern)
            except re.error as exc:
                raise SpecError(
                    f"{path}.redact[{i}].pattern", f"not a valid regular expression: {exc}"
                ) from exc

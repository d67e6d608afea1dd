"""The operator's options: one frozen object, built from the command line (or environment)
and handed to every handler through kopf's memo (``memo.options``); no module globals."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tierwise.api.models import is_label_key, is_label_value
from tierwise.controller.names import DEFAULT_ROUTER_IMAGE, WEBHOOK_CONFIGURATION
from tierwise.evals.job import JobSettings


@dataclass(frozen=True)
class WebhookOptions:
    """How the sidecar injection webhook is served, certified and registered.

    Certificates, one of:
    - ``cert_dir``: ``tls.crt`` and ``tls.key`` (and optionally ``ca.crt``) given by the
      installer, e.g. a cert-manager Certificate's Secret or a provided Secret mounted as a
      volume; re-read when the files change.
    - otherwise self-signed: the operator mints a CA and a serving certificate for ``host``
      and ``sans``, valid ``cert_validity``, and re-issues it when two thirds have passed.

    Registration, one of:
    - ``manage``: create/update the whole MutatingWebhookConfiguration (URL ``host``);
    - ``ca_bundle_configuration``: patch only the caBundle of an existing configuration (the
      Helm chart's static one) with the operator's CA, merged with the CAs already there;
    - neither: the installer keeps caBundle right (e.g. cert-manager's CA injector).
    """

    port: int = 9443
    address: str = "0.0.0.0"
    host: str | None = None
    sans: tuple[str, ...] = ()
    cert_dir: str | None = None
    cert_validity: dt.timedelta = dt.timedelta(days=365)
    manage: bool = False
    ca_bundle_configuration: str | None = None
    configuration_name: str = WEBHOOK_CONFIGURATION
    timeout_seconds: int = 5

    @property
    def enabled(self) -> bool:
        return self.port != 0

    @property
    def self_signed(self) -> bool:
        return self.cert_dir is None


@dataclass(frozen=True)
class OperatorOptions:
    namespaces: tuple[str, ...] = ()
    standalone: bool = True
    peering: str = "tierwise"
    priority: int = 0
    peering_lifetime: int = 10
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 8080
    health_address: str = "0.0.0.0"
    health_port: int = 8081
    resync_seconds: float = 30.0
    router_image: str = DEFAULT_ROUTER_IMAGE
    # The sidecar's container resources; None keeps the injection defaults.
    router_resources: Mapping[str, Any] | None = None
    evals: JobSettings = field(default_factory=JobSettings)
    webhook: WebhookOptions = field(default_factory=WebhookOptions)

    @property
    def peering_name(self) -> str | None:
        return None if self.standalone else self.peering

    @property
    def scope(self) -> str | None:
        """The namespace kopf keeps a namespaced peering object in (None: cluster-wide)."""
        return self.namespaces[0] if self.namespaces else None


def options_of(memo: Any) -> OperatorOptions:
    """The options in kopf's memo; defaults when the operator runs without the command."""
    options = getattr(memo, "options", None)
    return options if isinstance(options, OperatorOptions) else OperatorOptions()


# -- values that reach the objects the operator creates -----------------------------------
#
# Checked once, at start-up: a bad one would otherwise make the API server refuse every
# injected pod or every eval Job, far from where it was set.

# A Kubernetes resource quantity (resource.Quantity), without a sign: resources are never
# negative.
QUANTITY = re.compile(
    r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][-+]?[0-9]+)?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# A resource name: cpu, memory, hugepages-2Mi, example.com/gpu (a qualified name).
RESOURCE_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


def quantity(text: str) -> Decimal:
    """The value of a Kubernetes quantity ("500m" -> 0.5, "1Gi" -> 1073741824)."""
    match = QUANTITY.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 100m, 0.5, 128Mi, 1G)")
    number, suffix = Decimal(match.group(1)), match.group(3) or ""
    if suffix in _BINARY:
        return number * 1024 ** _BINARY[suffix]
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(suffix[1:]))


def resources_problems(resources: Mapping[str, Any]) -> list[str]:
    """What is wrong with a container's ``resources`` ({requests, limits}), as the API server
    would refuse it: unknown parts, bad names or quantities, a request above its limit."""
    problems = [f"unknown field {part!r}" for part in resources if part not in REQUESTS_LIMITS]
    values: dict[str, dict[str, Decimal]] = {}
    for part in REQUESTS_LIMITS:
        quantities = resources.get(part) or {}
        if not isinstance(quantities, Mapping):
            problems.append(f"{part} must map resource names to quantities")
            continue
        for name, text in quantities.items():
            if not RESOURCE_NAME.match(str(name)):
                problems.append(f"{part}: {name!r} is not a resource name")
                continue
            try:
                values.setdefault(part, {})[name] = quantity(str(text))
            except ValueError as exc:
                problems.append(f"{part}.{name}: {exc}")
    requests, limits = values.get("requests", {}), values.get("limits", {})
    for name in sorted(set(requests) & set(limits)):
        if requests[name] > limits[name]:
            problems.append(
                f"requests.{name} {resources['requests'][name]} is more than"
                f" limits.{name} {resources['limits'][name]}"
            )
    return problems


REQUESTS_LIMITS = ("requests", "limits")


def label_problems(labels: Mapping[str, str]) -> list[str]:
    """Labels that are no Kubernetes labels (the API server would refuse the object)."""
    problems = []
    for key, value in labels.items():
        if not is_label_key(key):
            problems.append(
                f"{key!r} is not a label key (an optional DNS prefix and '/', then"
                " at most 63 letters, digits, '-', '_' or '.')"
            )
        if not is_label_value(value):
            problems.append(
                f"{key}={value!r}: not a label value (at most 63 letters, digits,"
                " '-', '_' or '.', starting and ending with a letter or digit)"
            )
    return problems


def is_image(reference: str) -> bool:
    """A container image reference as far as the API server cares: no whitespace, not empty."""
    return (
        bool(reference)
        and reference == reference.strip()
        and not any(c.isspace() for c in reference)
    )

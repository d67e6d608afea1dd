"""The operator's options: one frozen object, built from the command line (or environment)
and handed to every handler through kopf's memo (``memo.options``); no module globals."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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

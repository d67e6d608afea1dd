"""Sidecar injection: kopf's mutating admission handler for Pods.

The handler only looks things up in kopf indexes (opted-in namespaces, policies and tiers by
namespace) and applies the pure ``injection.inject``; kopf turns the difference into the
JSON patch of the admission response.

failurePolicy is Ignore: when the operator is down, pods are still created, without the
sidecar, and the policy's status counts them under ``pods.withoutSidecar``. An app that must
never run without the router can check for the ``tierwise.dev/injected-by`` annotation.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf

from tierwise.controller.indexes import plain
from tierwise.controller.injection import choose_policy, inject, plan_for
from tierwise.controller.names import INJECTION_ENABLED, INJECTION_LABEL

log = logging.getLogger("tierwise.webhook")
_router_image = "ghcr.io/tierwise/tierwise:latest"
MANAGED_CONFIGURATION = "tierwise.dev"


@kopf.index("namespaces")
def injection_namespaces(name: str, labels: Mapping[str, str], **_: Any) -> dict[str, bool] | None:
    """Namespaces that opted in; kopf's managed webhook cannot carry a namespaceSelector."""
    return {name: True} if labels.get(INJECTION_LABEL) == INJECTION_ENABLED else None


@kopf.on.mutate(
    "pods", id="inject-router", operations=["CREATE"], ignore_failures=True, side_effects=False
)
def inject_router(
    body: kopf.Body,
    patch: kopf.Patch,
    injection_namespaces: kopf.Index,
    policies_by_namespace: kopf.Index,
    tiers_by_namespace: kopf.Index,
    **_: Any,
) -> None:
    pod = plain(body)
    namespace = pod.get("metadata", {}).get("namespace")
    if not namespace or namespace not in injection_namespaces:
        return
    policy = choose_policy(
        pod.get("metadata", {}).get("labels") or {}, policies_by_namespace.get(namespace, [])
    )
    if policy is None:
        return
    mutated = inject(pod, plan_for(policy, tiers_by_namespace.get(namespace, []), _router_image))
    if mutated is None:
        return

    def replace(target: dict[str, Any]) -> None:
        target.clear()
        target.update(copy.deepcopy(mutated))

    patch.fns.append(replace)
    log.info(
        "injecting the router into a pod of %s (policy %s)", namespace, policy["metadata"]["name"]
    )


def configure_admission(settings: kopf.OperatorSettings, options: Mapping[str, Any]) -> None:
    """Serve the webhook over TLS; with ``webhook_manage``, register it with the API server.

    Without ``webhook_cert_dir`` (tls.crt, tls.key, and ca.crt for the caBundle), a CA and a
    serving certificate for ``webhook_host`` are generated for this run.
    """
    global _router_image
    _router_image = options.get("router_image") or _router_image
    host = options.get("webhook_host") or options.get("webhook_address") or "127.0.0.1"
    cert_dir = options.get("webhook_cert_dir")
    if cert_dir:
        certs = Path(cert_dir)
        certfile, pkeyfile = certs / "tls.crt", certs / "tls.key"
        cafile = certs / "ca.crt" if (certs / "ca.crt").exists() else None
    else:
        certfile, pkeyfile, cafile = _self_signed(host)
    settings.admission.server = kopf.WebhookServer(
        addr=options.get("webhook_address"),
        port=options["webhook_port"],
        host=host,
        certfile=str(certfile),
        pkeyfile=str(pkeyfile),
        cafile=str(cafile) if cafile else None,
    )
    if options.get("webhook_manage"):
        settings.admission.managed = MANAGED_CONFIGURATION


def _self_signed(host: str) -> tuple[Path, Path, Path]:
    from tierwise.localcluster.pki import CertificateAuthority

    directory = Path(tempfile.mkdtemp(prefix="tierwise-webhook-"))
    ca = CertificateAuthority.create(directory, common_name="tierwise-webhook-ca")
    pair = ca.issue(directory, "webhook", host, server_hosts=[host], client=False)
    return pair.cert, pair.key, ca.paths.cert

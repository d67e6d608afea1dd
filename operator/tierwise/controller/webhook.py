"""Sidecar injection: kopf's mutating admission handler for Pods, and its HTTPS server.

Importing this module registers the handler. It reads only kopf indexes (CascadePolicies
and ModelTiers by namespace, from ``indexes.py``) and applies the pure
``injection.inject``; kopf turns the difference into the JSON patch of the admission
response. No API call is made per admission.

Which namespaces are served is decided by the API server, through the registration's
namespaceSelector (``injection.webhook_configuration``): kopf's own managed registration
(``settings.admission.managed``) can express neither a namespaceSelector nor a
reinvocationPolicy, so with ``manage=True`` the server registers itself instead.

failurePolicy is Ignore: when the operator is down, pods are still created, without the
sidecar, and the policy's status counts them under ``pods.withoutSidecar``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import kopf

from tierwise.controller.indexes import plain
from tierwise.controller.injection import (
    inject,
    matching_policies,
    plan_for,
    webhook_configuration,
)
from tierwise.controller.names import (
    DEFAULT_ROUTER_IMAGE,
    INJECTED_BY_ANNOTATION,
    WEBHOOK_CONFIGURATION,
    WEBHOOK_HANDLER_ID,
)

log = logging.getLogger("tierwise.webhook")

# Set once at startup by serve_admission(); read by every admission.
_router_image = DEFAULT_ROUTER_IMAGE

# Registration retries: the API server may be briefly unavailable when the operator starts.
REGISTER_ATTEMPTS = 5
REGISTER_BACKOFF_SECONDS = 1.0


@kopf.on.mutate(
    "pods",
    id=WEBHOOK_HANDLER_ID,
    operations=["CREATE"],
    ignore_failures=True,  # failurePolicy Ignore, in case kopf manages the registration
    side_effects=False,  # safe for dry-run requests: nothing is written anywhere
)
def inject_router(
    body: kopf.Body,
    patch: kopf.Patch,
    warnings: list[str],
    policies_by_namespace: kopf.Index,
    tiers_by_namespace: kopf.Index,
    **_: Any,
) -> None:
    pod = plain(body)
    namespace = (pod.get("metadata") or {}).get("namespace")
    if not namespace:
        return
    matching = matching_policies(pod, policies_by_namespace.get(namespace, []))
    if not matching:
        return
    policy = matching[0]
    if len(matching) > 1:
        # Shown by kubectl to whoever creates the pod; the choice is also on the pod.
        names = ", ".join(p["metadata"]["name"] for p in matching)
        warnings.append(
            f"CascadePolicies {names} all select this pod; "
            f"{policy['metadata']['name']} (the oldest) injects it"
        )
    plan = plan_for(policy, tiers_by_namespace.get(namespace, []), _router_image)
    mutated = inject(pod, plan)
    if mutated is None:
        return
    _replace_body(patch, mutated)
    log.info(
        "pod %s/%s: %s by policy %s",
        namespace,
        pod["metadata"].get("name") or pod["metadata"].get("generateName", ""),
        "re-admitted" if INJECTED_BY_ANNOTATION in _annotations(pod) else "router injected",
        policy["metadata"]["name"],
    )


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return (pod.get("metadata") or {}).get("annotations") or {}


def _replace_body(patch: kopf.Patch, mutated: Mapping[str, Any]) -> None:
    # kopf diffs the body before and after the patch's functions into the JSON patch it
    # returns, so replacing the whole body yields exactly the changes inject() made.
    def replace(target: dict[str, Any]) -> None:
        target.clear()
        target.update(copy.deepcopy(dict(mutated)))

    patch.fns.append(replace)


# -- serving and registration ---------------------------------------------------------------


class RegisteringWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS webhook server that (re-)registers the webhook each time it has a new
    client config: at start, and after a certificate rotation changes the CA bundle."""

    def __init__(self, *, timeout_seconds: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout_seconds = timeout_seconds

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in super().__call__(fn):
            configuration = webhook_configuration(
                client_config, name=WEBHOOK_CONFIGURATION, timeout_seconds=self.timeout_seconds
            )
            await register_webhook(configuration)
            yield client_config


async def register_webhook(configuration: dict[str, Any]) -> None:
    """Create or update the MutatingWebhookConfiguration (RBAC: create, patch)."""
    from kubernetes.client.rest import ApiException

    for attempt in range(1, REGISTER_ATTEMPTS + 1):
        try:
            await asyncio.to_thread(_apply_configuration, configuration)
        except ApiException as exc:
            if (exc.status is not None and 400 <= exc.status < 500) or attempt == REGISTER_ATTEMPTS:
                raise
            log.warning("registering the webhook failed (%s); retrying", exc.status)
            await asyncio.sleep(REGISTER_BACKOFF_SECONDS * attempt)
        else:
            url = configuration["webhooks"][0]["clientConfig"].get("url", "(service)")
            log.info("registered the webhook %s at %s", configuration["metadata"]["name"], url)
            return


def _apply_configuration(configuration: dict[str, Any]) -> None:
    import kubernetes
    from kubernetes.client.rest import ApiException

    from tierwise.controller import kube

    api = kubernetes.client.AdmissionregistrationV1Api(kube.client())
    try:
        api.create_mutating_webhook_configuration(configuration)
    except ApiException as exc:
        if exc.status != 409:
            raise
        # A JSON merge patch replaces the webhooks list as a whole: nothing stale survives.
        api.patch_mutating_webhook_configuration(
            configuration["metadata"]["name"],
            {"metadata": configuration["metadata"], "webhooks": configuration["webhooks"]},
            _content_type="application/merge-patch+json",
        )


def serve_admission(
    settings: kopf.OperatorSettings,
    *,
    port: int,
    addr: str | None = None,
    host: str | None = None,
    cert_dir: str | Path | None = None,
    manage: bool = False,
    router_image: str | None = None,
    timeout_seconds: int = 5,
) -> None:
    """Serve the injection webhook over TLS on ``addr:port``.

    - ``host``: the name or IP the API server uses to reach this server (in the URL of a
      self-managed registration and in a generated certificate); default ``addr``, else
      127.0.0.1.
    - ``cert_dir``: ``tls.crt`` and ``tls.key`` (and ``ca.crt``, the caBundle of a
      self-managed registration), re-read when they change (cert-manager rotation). Without
      it, a CA and a serving certificate for ``host`` are generated for this run.
    - ``manage``: register the MutatingWebhookConfiguration ``tierwise.dev`` with the API
      server (local runs and tests); otherwise it is registered statically (Helm).
    - ``router_image``: the image of the injected sidecar.
    """
    global _router_image
    _router_image = router_image or DEFAULT_ROUTER_IMAGE
    listen = None if addr in (None, "", "0.0.0.0") else addr
    reach = host or listen or "127.0.0.1"
    certfile, pkeyfile, cafile = _certificates(cert_dir, {reach, *([listen] if listen else [])})
    server_options: dict[str, Any] = {
        "addr": addr,
        "port": port,
        "host": reach,
        "certfile": str(certfile),
        "pkeyfile": str(pkeyfile),
        "cafile": str(cafile) if cafile else None,
    }
    if manage:
        settings.admission.server = RegisteringWebhookServer(
            timeout_seconds=timeout_seconds, **server_options
        )
    else:
        settings.admission.server = kopf.WebhookServer(**server_options)
    # Never kopf's managed registration: it would overwrite ours without a namespaceSelector.
    settings.admission.managed = None
    log.info(
        "injection webhook on %s:%s (reached as %s), %s, router image %s",
        addr or "*",
        port,
        reach,
        "self-registered" if manage else "registered statically",
        _router_image,
    )


def configure_admission(settings: kopf.OperatorSettings, options: Mapping[str, Any]) -> None:
    """``serve_admission`` from the ``tierwise operator`` options (``webhook_port``,
    ``webhook_address``, ``webhook_host``, ``webhook_cert_dir``, ``webhook_manage``,
    ``router_image``)."""
    serve_admission(
        settings,
        port=int(options["webhook_port"]),
        addr=options.get("webhook_address"),
        host=options.get("webhook_host"),
        cert_dir=options.get("webhook_cert_dir"),
        manage=bool(options.get("webhook_manage")),
        router_image=options.get("router_image"),
    )


def _certificates(cert_dir: str | Path | None, hosts: set[str]) -> tuple[Path, Path, Path | None]:
    if cert_dir:
        certs = Path(cert_dir)
        ca = certs / "ca.crt"
        return certs / "tls.crt", certs / "tls.key", ca if ca.exists() else None
    # Imported lazily: only runs without a mounted certificate need to mint one.
    from tierwise.localcluster.pki import CertificateAuthority

    directory = Path(tempfile.mkdtemp(prefix="tierwise-webhook-"))
    ca = CertificateAuthority.create(directory, common_name="tierwise-webhook-ca")
    names = sorted(hosts)
    pair = ca.issue(directory, "tls", names[0], server_hosts=names, client=False)
    log.info("generated a webhook certificate for %s; CA bundle %s", names, ca.paths.cert)
    return pair.cert, pair.key, ca.paths.cert

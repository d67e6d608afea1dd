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
import base64
import copy
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf

from tierwise.api import CACHE_PROFILE, CASCADE_POLICY, MODEL_TIER
from tierwise.controller.certificates import SelfSignedCertificates, merge_ca_bundle
from tierwise.controller.injection import (
    config_map_conflict,
    inject,
    matching_policies,
    plan_for,
    webhook_configuration,
)
from tierwise.controller.names import (
    DEFAULT_ROUTER_IMAGE,
    INJECTED_BY_ANNOTATION,
    WEBHOOK_HANDLER_ID,
)
from tierwise.controller.objects import Observed, observe, plain
from tierwise.controller.peering import is_active
from tierwise.controller.settings import WebhookOptions

log = logging.getLogger("tierwise.webhook")

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
    cache_profiles_by_namespace: kopf.Index,
    memo: Any = None,
    **_: Any,
) -> None:
    pod = plain(body)
    namespace = (pod.get("metadata") or {}).get("namespace")
    if not namespace:
        return
    policies, tiers, profiles = admission_view(
        namespace, policies_by_namespace, tiers_by_namespace, cache_profiles_by_namespace, memo
    )
    matching = matching_policies(pod, policies)
    if not matching:
        return
    policy = matching[0]
    if len(matching) > 1:
        # Shown by kubectl to whoever creates the pod; the choice is also on the pod.
        names = ", ".join(p.name for p in matching)
        warnings.append(
            f"CascadePolicies {names} all select this pod; {policy.name} (the oldest) injects it"
        )
    taken = config_map_conflict(policy)
    if taken is not None:
        # Mounting someone else's ConfigMap as the router's config would run their data.
        warnings.append(f"CascadePolicy {policy.name} is stalled, no router injected: {taken}")
        return
    options = getattr(memo, "options", None)
    image = getattr(options, "router_image", DEFAULT_ROUTER_IMAGE)
    plan = plan_for(
        policy, tiers, image, getattr(options, "router_resources", None), profiles=profiles
    )
    mutated = inject(pod, plan)
    if mutated is None:
        return
    _replace_body(patch, mutated)
    log.info(
        "pod %s/%s: %s by policy %s",
        namespace,
        pod["metadata"].get("name") or pod["metadata"].get("generateName", ""),
        "re-admitted" if INJECTED_BY_ANNOTATION in _annotations(pod) else "router injected",
        policy.name,
    )


# How long a replica trusts its last look at the peering object.
ACTIVE_CACHE_SECONDS = 2.0


def admission_view(
    namespace: str, policies_index: Any, tiers_index: Any, profiles_index: Any, memo: Any
) -> tuple[list[Observed], list[Observed], list[Observed]]:
    """The policies, tiers and cache profiles of ``namespace`` for one admission.

    Every replica serves the webhook, but kopf stops the watches of a replica that peering
    pauses, so a standby's indexes are empty or stale: a standby reads the three kinds from
    the API instead (three list calls per admission, on the standby only).
    """
    options = getattr(memo, "options", None)
    if options is None or options.standalone or _active(memo, options):
        return (
            list(policies_index.get(namespace, [])),
            list(tiers_index.get(namespace, [])),
            list(profiles_index.get(namespace, [])),
        )
    from tierwise.controller import kube

    return (
        [observe(b, CASCADE_POLICY) for b in kube.list_objects("cascadepolicies", namespace)],
        [observe(b, MODEL_TIER) for b in kube.list_objects("modeltiers", namespace)],
        [observe(b, CACHE_PROFILE) for b in kube.list_objects("cacheprofiles", namespace)],
    )


def _active(memo: Any, options: Any) -> bool:
    checked, active = getattr(memo, "active_checked", (0.0, True))
    if time.monotonic() - checked > ACTIVE_CACHE_SECONDS:
        active = is_active(options.peering_name, options.priority, options.scope)
        memo.active_checked = (time.monotonic(), active)
    return active


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return (pod.get("metadata") or {}).get("annotations") or {}


def _replace_body(patch: kopf.Patch, mutated: Mapping[str, Any]) -> None:
    # kopf diffs the body before and after the patch's functions into the JSON patch it
    # returns, so replacing the whole body yields exactly the changes inject() made.
    def replace(target: dict[str, Any]) -> None:
        target.clear()
        target.update(copy.deepcopy(dict(mutated)))

    patch.fns.append(replace)


# -- serving, certificates and registration --------------------------------------------------

Register = Callable[[Mapping[str, Any]], Awaitable[None]]


class RegisteringWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS webhook server that hands each new client config to ``register``: at
    start, and after the certificate files change (rotation, a renewed cert-manager
    Secret), which kopf notices and answers by restarting the server."""

    def __init__(self, *, register: Register, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.register = register

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in super().__call__(fn):
            await self.register(client_config)
            yield client_config


def serve_admission(settings: kopf.OperatorSettings, options: WebhookOptions, memo: Any) -> None:
    """Serve the injection webhook over TLS as ``options`` say (see ``WebhookOptions``).

    Self-signed certificates live in a temporary directory, are created here and rotated by
    a task kept in ``memo.certificate_rotation``.
    """
    listen = None if options.address in (None, "", "0.0.0.0", "::") else options.address
    reach = options.host or listen or "127.0.0.1"
    if options.self_signed:
        hosts = [reach, *([listen] if listen else []), *options.sans]
        store = SelfSignedCertificates(
            Path(tempfile.mkdtemp(prefix="tierwise-webhook-")), hosts, options.cert_validity
        )
        store.ensure()
        certfile, pkeyfile, cafile = store.cert, store.key, store.ca
        log.info("generated a webhook certificate for %s; CA %s", store.hosts, store.ca)
        if memo is not None:
            memo.certificate_rotation = asyncio.get_running_loop().create_task(
                rotate_forever(store)
            )
    else:
        certs = Path(options.cert_dir or ".")
        certfile, pkeyfile = certs / "tls.crt", certs / "tls.key"
        for required in (certfile, pkeyfile):
            if not required.is_file():
                raise kopf.PermanentError(f"--webhook-cert-dir: {required} does not exist")
        cafile = certs / "ca.crt" if (certs / "ca.crt").is_file() else None
    server_options: dict[str, Any] = {
        "addr": options.address,
        "port": options.port,
        "host": reach,
        "certfile": str(certfile),
        "pkeyfile": str(pkeyfile),
        "cafile": str(cafile) if cafile else None,
        "file_check_interval": CERT_CHECK_SECONDS,
    }
    register = _registration(options)
    if register is None:
        settings.admission.server = kopf.WebhookServer(**server_options)
    else:
        settings.admission.server = RegisteringWebhookServer(register=register, **server_options)
    # Never kopf's managed registration: it would overwrite ours without a namespaceSelector.
    settings.admission.managed = None
    log.info(
        "injection webhook on %s:%s (reached as %s), certificate %s, %s",
        options.address or "*",
        options.port,
        reach,
        "self-signed" if options.self_signed else f"from {options.cert_dir}",
        "self-registered"
        if options.manage
        else f"caBundle patched into {options.ca_bundle_configuration}"
        if options.ca_bundle_configuration
        else "registered by the installer",
    )


# kopf re-reads the certificate files this often and restarts its server when they change.
CERT_CHECK_SECONDS = 10.0
# Longest sleep of the rotation loop, so a suspended host or a clock jump is noticed.
ROTATION_CHECK_SECONDS = 3600.0


async def rotate_forever(store: SelfSignedCertificates) -> None:
    """Re-issue the self-signed certificates when due (see ``certificates.RENEW_AT``)."""
    while True:
        wait = (store.next_renewal() - datetime.now(UTC)).total_seconds()
        await asyncio.sleep(min(max(wait, 0.0), ROTATION_CHECK_SECONDS))
        try:
            if await asyncio.to_thread(store.renew_if_due):
                log.info("renewed the webhook certificate; next renewal %s", store.next_renewal())
        except Exception:
            log.exception("renewing the webhook certificate failed; retrying in a minute")
            await asyncio.sleep(60)


def _registration(options: WebhookOptions) -> Register | None:
    if options.manage:

        async def register_all(client_config: Mapping[str, Any]) -> None:
            configuration = webhook_configuration(
                client_config,
                name=options.configuration_name,
                timeout_seconds=options.timeout_seconds,
            )
            await _with_retries(_apply_configuration, configuration)

        return register_all
    if options.ca_bundle_configuration:
        name = options.ca_bundle_configuration

        async def patch_bundle(client_config: Mapping[str, Any]) -> None:
            bundle = base64.b64decode(client_config.get("caBundle") or "")
            await _with_retries(patch_ca_bundle, name, bundle)

        return patch_bundle
    return None


async def _with_retries(call: Callable[..., Any], *args: Any) -> None:
    """Run a registration call in a thread; the API server may be briefly unavailable when
    the operator starts, and a concurrent writer (another replica) gets a 409."""
    from kubernetes.client.rest import ApiException

    for attempt in range(1, REGISTER_ATTEMPTS + 1):
        try:
            await asyncio.to_thread(call, *args)
            return
        except ApiException as exc:
            retriable = exc.status in (409, 429) or exc.status is None or exc.status >= 500
            if not retriable or attempt == REGISTER_ATTEMPTS:
                raise
            log.warning("registering the webhook failed (%s); retrying", exc.status)
            await asyncio.sleep(REGISTER_BACKOFF_SECONDS * attempt)


def _apply_configuration(configuration: dict[str, Any]) -> None:
    """Create or update the whole MutatingWebhookConfiguration (RBAC: create, patch)."""
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
    url = configuration["webhooks"][0]["clientConfig"].get("url", "(service)")
    log.info("registered the webhook %s at %s", configuration["metadata"]["name"], url)


def patch_ca_bundle(name: str, ca_pem: bytes) -> None:
    """Merge ``ca_pem`` into the caBundle of every webhook of the configuration ``name``
    (RBAC: get, patch). The read resourceVersion makes a concurrent replica's patch a 409."""
    import kubernetes

    from tierwise.controller import kube

    api = kubernetes.client.AdmissionregistrationV1Api(kube.client())
    current = kube.client().sanitize_for_serialization(
        api.read_mutating_webhook_configuration(name)
    )
    webhooks = current.get("webhooks") or []
    if not webhooks:
        raise kopf.PermanentError(f"MutatingWebhookConfiguration {name} has no webhooks")
    changed = False
    for webhook in webhooks:
        client = webhook.setdefault("clientConfig", {})
        existing = base64.b64decode(client.get("caBundle") or "")
        merged = base64.b64encode(merge_ca_bundle(existing, ca_pem)).decode()
        changed |= merged != client.get("caBundle")
        client["caBundle"] = merged
    if not changed:
        return
    api.patch_mutating_webhook_configuration(
        name,
        {
            "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
            "webhooks": webhooks,
        },
        _content_type="application/merge-patch+json",
    )
    log.info("patched the caBundle of MutatingWebhookConfiguration %s", name)

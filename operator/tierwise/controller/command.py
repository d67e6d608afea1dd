"""`tierwise operator`: run the kopf operator.

Every option can also come from the environment as ``TIERWISE_<OPTION>`` (upper case, ``-``
as ``_``; lists comma-separated; flags ``true``/``false``), which is how a Helm chart sets
them; a command-line flag wins over the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import random

import kopf

from tierwise import __version__
from tierwise.api.models import is_dns_subdomain
from tierwise.controller.settings import (
    OperatorOptions,
    WebhookOptions,
    is_image,
    label_problems,
    resources_problems,
)
from tierwise.evals.job import EVAL_SERVICE_ACCOUNT, JobSettings

ENV_PREFIX = "TIERWISE_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def configure(parser: argparse.ArgumentParser, environ: dict[str, str] | None = None) -> None:
    parser.description = (
        "Reconcile CascadePolicies into router-config ConfigMaps (re-rendered whenever a "
        "referenced ModelTier or CacheProfile changes), keep the status of all three kinds, "
        "and inject the router sidecar into matching pods through a mutating webhook. "
        "Credentials: in-cluster service account, else KUBECONFIG. Every option can also be "
        "set as an environment variable, shown in brackets; a flag wins over it."
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        metavar="NS",
        help="watch only this namespace; repeatable (default: all namespaces)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    ha = parser.add_mutually_exclusive_group()
    ha.add_argument(
        "--peering",
        default="tierwise",
        metavar="NAME",
        help="kopf peering name shared by replicas: only the highest-priority replica acts (default: tierwise)",
    )
    ha.add_argument(
        "--standalone",
        action="store_true",
        help="no peering: for a single replica or local development",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority (default: random, so replicas never tie)",
    )
    parser.add_argument(
        "--peering-lifetime-seconds",
        type=int,
        default=10,
        metavar="SECONDS",
        help="how long a replica counts as alive after its last keepalive: a standby takes "
        "over at most this long after the active replica dies; keepalives are written every "
        "1 to 5 s for 10 (default 10)",
    )
    parser.add_argument(
        "--metrics-address",
        default="0.0.0.0",
        metavar="ADDR",
        help="address of the /metrics listener (default 0.0.0.0)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=8080, help="port of /metrics (default 8080; 0 disables)"
    )
    parser.add_argument(
        "--health-address",
        default="0.0.0.0",
        metavar="ADDR",
        help="address of the /healthz listener (default 0.0.0.0)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=8081,
        help="port of the /healthz liveness endpoint (default 8081; 0 disables)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=30.0,
        help="period of the full resync that also refreshes pod counts (default 30)",
    )
    parser.add_argument(
        "--price-catalog",
        metavar="[NAMESPACE/]NAME",
        default=os.environ.get("TIERWISE_PRICE_CATALOG") or None,
        help="optional ConfigMap whose catalog.yaml overrides the built-in price catalog "
        "(namespace defaults to the operator's own, from POD_NAMESPACE, else 'default'; "
        "env TIERWISE_PRICE_CATALOG)",
    )
    parser.add_argument(
        "--cleanup",
        action="store_true",
        help="delete the eval Jobs and eval ServiceAccounts Tierwise made (in --namespace, "
        "else everywhere) and exit: run on uninstall (the chart's pre-delete hook)",
    )
    parser.add_argument(
        "--router-image",
        default=f"ghcr.io/tierwise/tierwise:{__version__}",
        help="image of the injected router sidecar",
    )
    parser.add_argument(
        "--router-resources",
        type=_resources,
        default=None,
        metavar="JSON",
        help="resources of the injected router sidecar, as in a container spec, e.g. "
        '\'{"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}\' '
        "(default: small requests and limits, docs/operator.md)",
    )
    evals = parser.add_argument_group("eval Jobs (policies with spec.evaluation)")
    evals.add_argument(
        "--eval-image",
        default=f"ghcr.io/tierwise/tierwise:{__version__}",
        help="image of the eval Jobs (runs `tierwise eval`)",
    )
    evals.add_argument(
        "--eval-pod-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra label on eval Job pods, repeatable (e.g. to opt out of a service mesh)",
    )
    evals.add_argument(
        "--eval-service-account",
        default=EVAL_SERVICE_ACCOUNT,
        help=f"ServiceAccount eval Jobs run as, created in each policy's namespace with no permissions (default {EVAL_SERVICE_ACCOUNT})",
    )
    evals.add_argument(
        "--eval-ttl-seconds",
        type=int,
        default=3600,
        help="ttlSecondsAfterFinished of eval Jobs: how long a finished eval's logs stay (default 3600)",
    )
    evals.add_argument(
        "--eval-deadline-slack-seconds",
        type=int,
        default=120,
        help="activeDeadlineSeconds of an eval Job past its timeoutSeconds, to start and report (default 120)",
    )
    webhook = parser.add_argument_group(
        "sidecar injection webhook",
        "Certificates: --webhook-cert-dir (given, e.g. by cert-manager) or self-signed (the "
        "default; minted and rotated by the operator). caBundle: --webhook-manage (register "
        "the whole configuration), --webhook-ca-bundle-configuration (patch the caBundle of "
        "an existing one), or neither (the installer keeps it right).",
    )
    webhook.add_argument(
        "--webhook-port",
        type=int,
        default=9443,
        help="HTTPS port of the admission webhook (default 9443; 0 disables injection)",
    )
    webhook.add_argument(
        "--webhook-address",
        default="0.0.0.0",
        help="address the webhook server listens on (default 0.0.0.0)",
    )
    webhook.add_argument(
        "--webhook-host",
        default=None,
        help="host name the API server uses to reach the webhook: the URL of a managed "
        "registration and the first name of a self-signed certificate "
        "(default: --webhook-address, else 127.0.0.1)",
    )
    webhook.add_argument(
        "--webhook-cert-san",
        dest="webhook_cert_sans",
        action="append",
        metavar="NAME",
        help="extra DNS name or IP of a self-signed certificate, e.g. the Service's "
        "tierwise-webhook.tierwise-system.svc; repeatable",
    )
    webhook.add_argument(
        "--webhook-cert-dir",
        default=None,
        metavar="DIR",
        help="use tls.crt, tls.key (and ca.crt, if present, as caBundle) from DIR, re-read "
        "when they change, e.g. a mounted cert-manager Secret (default: self-signed)",
    )
    webhook.add_argument(
        "--webhook-cert-validity-days",
        type=float,
        default=365.0,
        metavar="DAYS",
        help="lifetime of a self-signed serving certificate; it is re-issued after two "
        "thirds of it, and its CA lives ten times as long (default 365)",
    )
    webhook.add_argument(
        "--webhook-manage",
        action="store_true",
        help="create and update the MutatingWebhookConfiguration itself (local runs; the Helm chart registers it statically)",
    )
    webhook.add_argument(
        "--webhook-ca-bundle-configuration",
        default=None,
        metavar="NAME",
        help="patch the caBundle of this existing MutatingWebhookConfiguration with the "
        "operator's CA (self-signed certificates with a static registration); CAs of other "
        "replicas already there are kept",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    apply_environment(parser, environ)


def apply_environment(
    parser: argparse.ArgumentParser, environ: dict[str, str] | None = None
) -> None:
    """Take each option's default from ``TIERWISE_<DEST>`` when set, and say so in --help."""
    environ = dict(os.environ if environ is None else environ)
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "version"):
            continue
        name = ENV_PREFIX + action.dest.upper()
        if action.dest == "namespaces":
            name = ENV_PREFIX + "NAMESPACES"
        if action.help and name not in action.help:
            action.help += f" [{name}]"
        raw = environ.get(name)
        if raw is None:
            continue
        action.default = _from_env(action, name, raw)


def _from_env(action: argparse.Action, name: str, raw: str) -> object:
    if isinstance(action, argparse._StoreTrueAction):
        value = raw.strip().lower()
        if value not in _TRUE | _FALSE:
            raise SystemExit(f"tierwise operator: {name}={raw!r} is not true or false")
        return value in _TRUE
    if isinstance(action, argparse._AppendAction):
        return [item.strip() for item in raw.split(",") if item.strip()] or None
    if action.type is not None:
        try:
            return action.type(raw)  # type: ignore[misc, operator]
        except argparse.ArgumentTypeError as exc:
            raise SystemExit(f"tierwise operator: {name}: {exc}") from None
        except ValueError:
            raise SystemExit(f"tierwise operator: {name}={raw!r} is not a valid value") from None
    return raw


def _resources(text: str) -> dict[str, dict[str, str]]:
    """A container's ``resources`` ({requests, limits} of quantities) from JSON."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict) or not set(value) <= {"requests", "limits"}:
        raise argparse.ArgumentTypeError('expected an object with "requests" and/or "limits"')
    for part, quantities in value.items():
        if not isinstance(quantities, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int) for k, v in quantities.items()
        ):
            raise argparse.ArgumentTypeError(f'"{part}" must map resource names to quantities')
    resources = {part: {k: str(v) for k, v in q.items()} for part, q in value.items()}
    # Every injected pod would be refused by the API server: refuse to start instead.
    problems = resources_problems(resources)
    if problems:
        raise argparse.ArgumentTypeError("; ".join(problems))
    return resources


def options_from(args: argparse.Namespace) -> OperatorOptions:
    """The one options object the handlers see (kopf's ``memo.options``)."""
    priority = args.priority if args.priority is not None else random.randint(1, 1_000_000)
    if args.peering_lifetime_seconds < 2:
        raise SystemExit("tierwise operator: --peering-lifetime-seconds must be at least 2")
    _check_created_objects(args)
    if args.webhook_cert_validity_days <= 0:
        raise SystemExit("tierwise operator: --webhook-cert-validity-days must be positive")
    if args.webhook_cert_dir and args.webhook_cert_sans:
        raise SystemExit(
            "tierwise operator: --webhook-cert-san applies to self-signed certificates; "
            "with --webhook-cert-dir the certificate's names are the issuer's"
        )
    return OperatorOptions(
        namespaces=tuple(args.namespaces or ()),
        standalone=args.standalone,
        peering=args.peering,
        priority=priority,
        peering_lifetime=args.peering_lifetime_seconds,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port,
        health_address=args.health_address,
        health_port=args.health_port,
        resync_seconds=args.resync_seconds,
        router_image=args.router_image,
        router_resources=args.router_resources,
        evals=JobSettings(
            image=args.eval_image,
            pod_labels=_labels(args.eval_pod_label or []),
            service_account=args.eval_service_account,
            ttl_seconds_after_finished=args.eval_ttl_seconds,
            deadline_slack_seconds=args.eval_deadline_slack_seconds,
        ),
        webhook=WebhookOptions(
            port=args.webhook_port,
            address=args.webhook_address,
            host=args.webhook_host,
            sans=tuple(args.webhook_cert_sans or ()),
            cert_dir=args.webhook_cert_dir,
            cert_validity=dt.timedelta(days=args.webhook_cert_validity_days),
            manage=args.webhook_manage,
            ca_bundle_configuration=args.webhook_ca_bundle_configuration,
        ),
    )


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"tierwise operator: --eval-pod-label needs KEY=VALUE, got {pair!r}")
        labels[key] = value
    # The API server would refuse every eval Job carrying them.
    problems = label_problems(labels)
    if problems:
        raise SystemExit(f"tierwise operator: --eval-pod-label: {'; '.join(problems)}")
    return labels


def _check_created_objects(args: argparse.Namespace) -> None:
    """Refuse to start with a value that would make the API server refuse what the operator
    creates (sidecars, eval Jobs), naming the flag rather than failing there."""
    for flag, image in (("--router-image", args.router_image), ("--eval-image", args.eval_image)):
        if not is_image(image):
            raise SystemExit(f"tierwise operator: {flag}={image!r} is not an image reference")
    if not is_dns_subdomain(args.eval_service_account):
        raise SystemExit(
            f"tierwise operator: --eval-service-account={args.eval_service_account!r} is not a"
            " ServiceAccount name (lower-case letters, digits, '-' and '.')"
        )
    for flag, seconds in (
        ("--eval-ttl-seconds", args.eval_ttl_seconds),
        ("--eval-deadline-slack-seconds", args.eval_deadline_slack_seconds),
    ):
        if seconds < 0:
            raise SystemExit(f"tierwise operator: {flag} must not be negative, got {seconds}")


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def peering_identity() -> str | None:
    """This replica's name among its peers: its pod's name (the chart sets ``POD_NAME``).

    Without it kopf derives one from the user name, which it asks the password database for:
    the image runs as a UID with no entry there, and kopf would fail to start.
    """
    return os.environ.get("POD_NAME") or None


def run(args: argparse.Namespace) -> int:
    from tierwise.controller import kube, operator_app, price_catalog  # noqa: F401

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    options = options_from(args)
    kube.connect()
    if args.cleanup:
        from tierwise.controller.cleanup import cleanup

        deleted = cleanup(options.namespaces)
        logging.getLogger("tierwise.cleanup").info("cleanup done: %d objects deleted", deleted)
        return 0
    price_catalog.configure(args.price_catalog, os.environ.get("POD_NAMESPACE") or "default")
    if options.webhook.enabled:
        # Registers the admission handler; kopf refuses to start with one and no server.
        from tierwise.controller import webhook  # noqa: F401
    health = (
        f"http://{_url_host(options.health_address)}:{options.health_port}/healthz"
        if options.health_port
        else None
    )
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        kopf.run(
            clusterwide=not options.namespaces,
            namespaces=list(options.namespaces),
            standalone=options.standalone,
            peering_name=options.peering_name,
            priority=options.priority,
            identity=peering_identity(),
            liveness_endpoint=health,
            memo=kopf.Memo(options=options),
        )
    return 0

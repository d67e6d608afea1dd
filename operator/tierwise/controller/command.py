"""`tierwise operator`: run the kopf operator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random

import kopf

from tierwise import __version__


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Reconcile CascadePolicies into router-config ConfigMaps (re-rendered whenever a "
        "referenced ModelTier or CacheProfile changes), keep the status of all three kinds, "
        "and inject the router sidecar into matching pods through a mutating webhook. "
        "Credentials: in-cluster service account, else KUBECONFIG."
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
        "--metrics-port", type=int, default=8080, help="port of /metrics (default 8080; 0 disables)"
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
        default=None,
        help="optional ConfigMap whose catalog.yaml overrides the built-in price catalog "
        "(namespace defaults to the operator's own, from POD_NAMESPACE, else 'default')",
    )
    parser.add_argument(
        "--router-image",
        default=f"ghcr.io/tierwise/tierwise:{__version__}",
        help="image of the injected router sidecar",
    )
    webhook = parser.add_argument_group("sidecar injection webhook")
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
        help="host name the API server uses to reach the webhook (self-managed registration)",
    )
    webhook.add_argument(
        "--webhook-cert-dir",
        default=None,
        help="directory with tls.crt and tls.key (default: generate a self-signed CA and certificate)",
    )
    webhook.add_argument(
        "--webhook-manage",
        action="store_true",
        help="create and update the MutatingWebhookConfiguration itself (local runs; the Helm chart registers it statically)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    from tierwise.controller import kube, operator_app, price_catalog

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    kube.connect()
    price_catalog.configure(args.price_catalog, os.environ.get("POD_NAMESPACE") or "default")
    priority = args.priority if args.priority is not None else random.randint(1, 1_000_000)
    operator_app.OPTIONS.update(vars(args), priority=priority)
    if args.webhook_port:
        # Registers the admission handler; kopf refuses to start with one and no server.
        from tierwise.controller import webhook  # noqa: F401
    namespaces = args.namespaces or []
    health = f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        kopf.run(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=args.standalone,
            peering_name=None if args.standalone else args.peering,
            priority=priority,
            liveness_endpoint=health,
        )
    return 0

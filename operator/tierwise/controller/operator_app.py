"""The operator as kopf sees it: importing this module registers every handler.

``tierwise operator`` passes its ``OperatorOptions`` as ``memo.options``; the startup
handler applies them to kopf's settings and starts the metrics server and the resync loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from tierwise.controller import (  # noqa: F401  (registers handlers)
    eval_jobs,
    indexes,
    policies,
    references,
    rollout,
)
from tierwise.controller.peering import is_active
from tierwise.controller.resync import resync_forever
from tierwise.controller.runtime import reconciler_of
from tierwise.controller.settings import options_of

log = logging.getLogger("tierwise.operator")


@kopf.on.startup()
async def configure_operator(
    settings: kopf.OperatorSettings, memo: kopf.Memo, pods_by_namespace: kopf.Index, **_: Any
) -> None:
    options = options_of(memo)
    # kopf's pod index is a live view (empty here, filled by the watch before any handler
    # runs): pods are counted from it, never listed.
    reconciler_of(memo).pods_index = pods_by_namespace
    # Events are posted by the operator itself (events.py), on transitions only.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.peering.mandatory = not options.standalone
    settings.peering.lifetime = options.peering_lifetime
    if options.webhook.enabled:
        from tierwise.controller import webhook  # imported (handlers registered) by the command

        webhook.serve_admission(settings, options.webhook, memo)
    if options.metrics_port:
        start_http_server(options.metrics_port, addr=options.metrics_address)

    def active() -> bool:
        return is_active(options.peering_name, options.priority, options.scope)

    memo.resync = asyncio.get_running_loop().create_task(
        resync_forever(
            reconciler_of(memo), list(options.namespaces) or None, options.resync_seconds, active
        )
    )
    log.info(
        "tierwise operator started (namespaces: %s)",
        ", ".join(options.namespaces) if options.namespaces else "all",
    )

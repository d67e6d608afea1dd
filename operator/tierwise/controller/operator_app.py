"""The operator as kopf sees it: importing this module registers every handler.

``tierwise operator`` fills ``OPTIONS`` from its flags before kopf starts; the startup
handler applies them to kopf's settings and starts the metrics server and the resync loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from tierwise.controller import (  # noqa: F401  (registers handlers)
    indexes,
    policies,
    references,
    rollout,
)
from tierwise.controller.peering import is_active
from tierwise.controller.resync import resync_forever

OPTIONS: dict[str, Any] = {}
log = logging.getLogger("tierwise.operator")


@kopf.on.startup()
async def configure_operator(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.peering.mandatory = not OPTIONS.get("standalone", True)
    if OPTIONS.get("webhook_port"):
        _configure_webhook(settings)
    if OPTIONS.get("metrics_port"):
        start_http_server(OPTIONS["metrics_port"])
    namespaces = OPTIONS.get("namespaces") or None
    peering = None if OPTIONS.get("standalone", True) else OPTIONS.get("peering")
    priority = int(OPTIONS.get("priority") or 0)
    scope = namespaces[0] if namespaces else None

    def active() -> bool:
        return is_active(peering, priority, scope)

    asyncio.get_running_loop().create_task(
        resync_forever(namespaces, OPTIONS.get("resync_seconds", 30.0), active)
    )
    log.info(
        "tierwise operator started (namespaces: %s)", ", ".join(namespaces) if namespaces else "all"
    )


def _configure_webhook(settings: kopf.OperatorSettings) -> None:
    from tierwise.controller import webhook  # imported (handlers registered) by the command

    webhook.configure_admission(settings, OPTIONS)

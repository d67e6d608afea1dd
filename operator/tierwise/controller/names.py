"""Names shared by the reconcile loop, the injection webhook, and the people reading pods."""

from __future__ import annotations

# A namespace opts in to sidecar injection with this label...
INJECTION_LABEL = "tierwise.dev/injection"
INJECTION_ENABLED = "enabled"
# ...and a pod opts out with this annotation set to "false".
INJECT_ANNOTATION = "tierwise.dev/inject"
# Written on injected pods: which policy and config they got.
INJECTED_BY_ANNOTATION = "tierwise.dev/injected-by"
CONFIG_HASH_ANNOTATION = "tierwise.dev/config-hash"

SIDECAR_NAME = "tierwise-router"
CONFIG_VOLUME = "tierwise-router-config"
CONFIG_DIR = "/etc/tierwise"
ROUTER_PORT = 8787
METRICS_PORT = 9787


def config_map_name(policy_name: str) -> str:
    """The ConfigMap holding a policy's rendered router config."""
    return f"tierwise-{policy_name}"

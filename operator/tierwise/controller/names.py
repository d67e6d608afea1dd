"""Names shared by the reconcile loop, the injection webhook, the Helm chart and the people
reading pods. Changing one of them changes the operator's contract with running pods."""

from __future__ import annotations

from tierwise import __version__

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
BATCH_STATE_VOLUME = "tierwise-batch-state"
BATCH_STATE_DIR = "/var/lib/tierwise/batches"
# spec.capture: the platform team's PersistentVolumeClaim, mounted here in the sidecar.
CAPTURE_VOLUME = "tierwise-capture"
CAPTURE_DIR = "/var/lib/tierwise/capture"
REDIS_TLS_VOLUME = "tierwise-redis-tls"
ROUTER_PORT = 8787
METRICS_PORT = 9787
# Port names are IANA service names: at most 15 characters.
METRICS_PORT_NAME = "router-metrics"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
DEFAULT_ROUTER_IMAGE = f"ghcr.io/tierwise/tierwise:{__version__}"

# The MutatingWebhookConfiguration, its one webhook, and the path the webhook server serves
# it on (kopf routes by the handler id in the path). A static registration (Helm) must use
# the same path.
WEBHOOK_CONFIGURATION = "tierwise.dev"
WEBHOOK_NAME = "inject-router.tierwise.dev"
WEBHOOK_HANDLER_ID = "inject-router"
WEBHOOK_PATH = f"/{WEBHOOK_HANDLER_ID}"


def config_map_name(policy_name: str) -> str:
    """The ConfigMap holding a policy's rendered router config."""
    return f"tierwise-{policy_name}"


def promoted_config_map_name(policy_name: str) -> str:
    """The operator's copy of a gated policy's promoted config, from which a deleted or
    edited live ConfigMap is restored. Its "tierwise." prefix (a dot) is never the
    "tierwise-" of another policy's live ConfigMap."""
    return f"tierwise.promoted.{policy_name}"

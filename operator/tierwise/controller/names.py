"""Names shared by the reconcile loop and the injection webhook."""

from __future__ import annotations


def config_map_name(policy_name: str) -> str:
    """The ConfigMap holding a policy's rendered router config."""
    return f"tierwise-{policy_name}"

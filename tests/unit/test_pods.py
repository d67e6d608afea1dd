"""Which selected pods cannot serve a policy's live config, read from their specs."""

from typing import Any

from tierwise.controller.injection import InjectionPlan, inject
from tierwise.controller.pods import (
    PODS_CURRENT,
    LiveConfig,
    count_pods,
    pods_condition,
    previous_condition,
    view_pods,
)
from tierwise.render import SecretKeyEnv

HAIKU = SecretKeyEnv("TIERWISE_TIER_HAIKU_API_KEY", "anthropic", "api-key")
OPUS = SecretKeyEnv("TIERWISE_TIER_OPUS_API_KEY", "anthropic", "opus-key")
LIVE = LiveConfig(
    "abc123", "tierwise-triage", frozenset({HAIKU.env, OPUS.env})
)  # the policy gained opus


def pod(name: str, *keys: SecretKeyEnv, policy: str = "triage", **extra: Any) -> dict[str, Any]:
    """A pod as the webhook injects it for ``policy`` with ``keys``."""
    bare = {"metadata": {"name": name}, "spec": {"containers": [{"name": "app"}]}}
    injected = inject(bare, InjectionPlan(policy=policy, image="router:1", keys=keys))
    assert injected is not None
    injected.update(extra)
    return injected


def test_a_sidecar_without_the_new_tiers_key_cannot_serve() -> None:
    pods = [pod("old-1", HAIKU), pod("new", HAIKU, OPUS), pod("old-0", HAIKU), {"spec": {}}]
    counts = count_pods(view_pods(pods), LIVE)
    assert counts.unable == {"old-0": (OPUS.env,), "old-1": (OPUS.env,)}
    assert counts.to_dict() == {
        "matching": 4,
        "injected": 3,
        "withoutSidecar": 1,
        "cannotServe": 2,
    }
    condition = pods_condition(counts, LIVE)
    assert (condition.type, condition.status, condition.reason) == (
        PODS_CURRENT,
        False,
        "MissingKeyEnv",
    )
    assert "2 of 3 pods" in condition.message
    assert OPUS.env in condition.message and HAIKU.env not in condition.message
    assert condition.message.endswith(": old-0, old-1")
    assert "abc123" in condition.message and "recreate" in condition.message


def test_all_current_and_unknown_live_config() -> None:
    pods = view_pods([pod("a", HAIKU, OPUS), pod("b", OPUS, HAIKU)])
    counts = count_pods(pods, LIVE)
    assert counts.unable == {} and counts.to_dict()["cannotServe"] == 0
    assert pods_condition(counts, LIVE).status is True
    # The live config unknown: counts only, nothing judged.
    assert count_pods(pods).to_dict() == {"matching": 2, "injected": 2, "withoutSidecar": 0}


def test_pods_not_judged_against_this_config() -> None:
    pods = [
        pod("other-policy", HAIKU, policy="older"),  # mounts another policy's ConfigMap
        pod("done", HAIKU, status={"phase": "Succeeded"}),
        pod("failed", HAIKU, status={"phase": "Failed"}),
        pod("going", HAIKU),
        pod("empty-value", HAIKU),
        pod("env-from", HAIKU),
    ]
    pods[3]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    sidecar = pods[4]["spec"]["initContainers"][0]
    sidecar["env"].append({"name": OPUS.env, "value": ""})  # empty: unset, as the router reads it
    pods[5]["spec"]["initContainers"][0]["envFrom"] = [{"secretRef": {"name": "keys"}}]
    counts = count_pods(view_pods(pods), LIVE)
    assert counts.unable == {"empty-value": (OPUS.env,)}
    assert counts.injected == 6


def test_a_hand_written_sidecar_in_containers_is_checked() -> None:
    mine = {
        "metadata": {"name": "mine"},
        "spec": {
            "containers": [
                {
                    "name": "tierwise-router",
                    "env": [{"name": HAIKU.env, "valueFrom": {"secretKeyRef": {"name": "s"}}}],
                    "volumeMounts": [{"name": "tierwise-router-config", "mountPath": "/c"}],
                }
            ],
            "volumes": [
                {"name": "tierwise-router-config", "configMap": {"name": "tierwise-triage"}}
            ],
        },
    }
    assert count_pods(view_pods([mine]), LIVE).unable == {"mine": (OPUS.env,)}


def test_condition_names_a_few_pods_and_is_kept() -> None:
    pods = view_pods([pod(f"p{i}", HAIKU) for i in range(5)])
    condition = pods_condition(count_pods(pods, LIVE), LIVE)
    assert condition.message.endswith(": p0, p1, p2 and 2 more")
    written = [condition.to_dict(1, "t")]
    assert previous_condition(written) == condition
    assert previous_condition([{"type": "Ready", "status": "True"}]) is None

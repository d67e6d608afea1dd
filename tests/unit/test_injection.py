import pytest

from tierwise.controller.injection import (
    BASE_URL_ENV,
    InjectionPlan,
    KeyRef,
    choose_policy,
    inject,
    plan_for,
    selects,
)
from tierwise.controller.names import CONFIG_VOLUME, SIDECAR_NAME


def pod(labels=None, annotations=None, containers=None, init=None):
    spec = {"containers": containers or [{"name": "app", "image": "app:1"}]}
    if init is not None:
        spec["initContainers"] = init
    return {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": spec,
    }


def policy(
    name, selector, created="2026-01-01T00:00:00Z", tiers=("haiku", "sonnet"), fallback=None
):
    spec = {
        "podSelector": selector,
        "routes": [{"name": "r", "steps": [{"tier": t} for t in tiers]}],
    }
    if fallback:
        spec["fallback"] = {"tier": fallback}
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": spec,
        "status": {"configHash": "sha256:abc"},
    }


def tier(name, secret=None):
    spec = {"model": "m"}
    if secret:
        spec["apiKeySecretRef"] = secret
    return {"metadata": {"name": name}, "spec": spec}


PLAN = InjectionPlan(
    policy="triage",
    image="tierwise:test",
    keys=(KeyRef("TIERWISE_TIER_HAIKU_API_KEY", "anthropic", "api-key"),),
    config_hash="sha256:abc",
)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (None, {"app": "x"}, False),
        ({}, {"app": "x"}, True),
        ({"matchLabels": {"app": "x"}}, {"app": "x", "tier": "web"}, True),
        ({"matchLabels": {"app": "x"}}, {"app": "y"}, False),
        (
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["x", "y"]}]},
            {"app": "y"},
            True,
        ),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}]}, {}, False),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["x"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["x"]}]},
            {"app": "x"},
            False,
        ),
        ({"matchExpressions": [{"key": "canary", "operator": "Exists"}]}, {"canary": ""}, True),
        (
            {"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]},
            {"canary": "1"},
            False,
        ),
    ],
)
def test_label_selector_semantics(selector, labels, expected):
    assert selects(selector, labels) is expected


def test_the_oldest_matching_policy_wins():
    newer = policy("b", {}, created="2026-02-01T00:00:00Z")
    older = policy("z", {}, created="2026-01-01T00:00:00Z")
    other = policy("a", {"matchLabels": {"app": "other"}}, created="2025-01-01T00:00:00Z")
    assert choose_policy({"app": "inbox"}, [newer, other, older])["metadata"]["name"] == "z"
    assert choose_policy({"app": "inbox"}, [other]) is None


def test_plan_maps_used_tiers_to_their_secrets_only():
    tiers = [
        tier("haiku", {"name": "k", "key": "api-key"}),
        tier("opus", {"name": "k2"}),
        tier("sonnet"),
        tier("unused", {"name": "x"}),
    ]
    plan = plan_for(policy("triage", {}, fallback="opus"), tiers, "img")
    assert plan.keys == (
        KeyRef("TIERWISE_TIER_HAIKU_API_KEY", "k", "api-key"),
        KeyRef("TIERWISE_TIER_OPUS_API_KEY", "k2", "api-key"),
    )
    assert plan.config_hash == "sha256:abc"


def test_injection_adds_a_native_sidecar_mount_keys_and_base_url():
    mutated = inject(pod(init=[{"name": "migrate", "image": "m"}]), PLAN)
    spec = mutated["spec"]
    router = spec["initContainers"][0]
    assert (
        router["name"] == SIDECAR_NAME
        and router["restartPolicy"] == "Always"
        and router["image"] == "tierwise:test"
    )
    assert (
        "--config=/etc/tierwise/router-config.json" in router["args"]
        and "--host=127.0.0.1" in router["args"]
    )
    assert router["env"] == [
        {
            "name": "TIERWISE_TIER_HAIKU_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "anthropic", "key": "api-key"}},
        }
    ]
    assert all(len(port["name"]) <= 15 for port in router["ports"])  # the API server's limit
    assert router["volumeMounts"] == [
        {"name": CONFIG_VOLUME, "mountPath": "/etc/tierwise", "readOnly": True}
    ]
    assert {"name": CONFIG_VOLUME, "configMap": {"name": "tierwise-triage"}} in spec["volumes"]
    security = router["securityContext"]
    assert (
        security["runAsNonRoot"]
        and not security["allowPrivilegeEscalation"]
        and security["capabilities"] == {"drop": ["ALL"]}
    )
    for container in (spec["initContainers"][1], spec["containers"][0]):
        assert {"name": BASE_URL_ENV, "value": "http://127.0.0.1:8787"} in container["env"]
    assert mutated["metadata"]["annotations"]["tierwise.dev/injected-by"] == "triage"


def test_an_explicit_base_url_is_kept():
    app = {"name": "app", "image": "a", "env": [{"name": BASE_URL_ENV, "value": "https://gateway"}]}
    mutated = inject(pod(containers=[app]), PLAN)
    assert mutated["spec"]["containers"][0]["env"] == [
        {"name": BASE_URL_ENV, "value": "https://gateway"}
    ]


def test_opted_out_pods_are_untouched():
    assert inject(pod(annotations={"tierwise.dev/inject": "false"}), PLAN) is None
    assert inject(pod(annotations={"tierwise.dev/inject": "False"}), PLAN) is None
    assert inject(pod(annotations={"tierwise.dev/inject": "true"}), PLAN) is not None


def test_injection_is_idempotent():
    once = inject(pod(), PLAN)
    assert inject(once, PLAN) is None
    assert sum(c["name"] == SIDECAR_NAME for c in once["spec"]["initContainers"]) == 1


def test_the_original_pod_is_not_mutated():
    original = pod()
    inject(original, PLAN)
    assert (
        "initContainers" not in original["spec"] and "env" not in original["spec"]["containers"][0]
    )

import json
from datetime import date

from tierwise import API_VERSION
from tierwise.api import parse
from tierwise.api.models import LabelSelector
from tierwise.controller.conditions import Condition, merge_conditions, transitions
from tierwise.controller.objects import by_name, observe, policies_using
from tierwise.controller.pods import count_pods, view_pods
from tierwise.controller.reconcile import (
    READY,
    RESOLVED_REFS,
    cache_profile_status,
    config_map_up_to_date,
    desired_config_map,
    holds_config,
    label_selector_string,
    models_condition,
    policy_status,
    tier_status,
)
from tierwise.pricing import BUILTIN
from tierwise.render import CONFIG_KEY, render_policy


def body(kind, name, spec, status=None, generation=1):
    meta = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": generation}
    return observe(
        {
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": meta,
            "spec": spec,
            **({"status": status} if status else {}),
        }
    )


HAIKU = body("ModelTier", "haiku", {"model": "claude-haiku-4-5"})
SONNET = body("ModelTier", "sonnet", {"model": "claude-sonnet-5-5"})
POLICY_SPEC = {
    "podSelector": {"matchLabels": {"app": "inbox"}},
    "routes": [{"name": "t", "steps": [{"tier": "haiku"}, {"tier": "sonnet"}]}],
}
POLICY = body("CascadePolicy", "triage", POLICY_SPEC)


def render(policy, tiers):
    return render_policy(policy.resource, by_name(tiers), {})


def conditions(status):
    return {c["type"]: c for c in status["conditions"]}


def test_ready_policy_status_and_owned_config_map():
    result = render(POLICY, [HAIKU, SONNET])
    status = policy_status(POLICY, result, count_pods([]), "2026-01-01T00:00:00Z", has_config=True)
    assert conditions(status)[READY]["status"] == "True"
    assert conditions(status)[RESOLVED_REFS]["reason"] == "AllResolved"
    assert (
        status["observedGeneration"] == 1 and status["routeCount"] == 1 and status["tierCount"] == 2
    )
    assert status["configHash"] == result.document["hash"]
    cm = desired_config_map(POLICY, result.document)
    assert cm["metadata"]["name"] == "tierwise-triage"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-triage"
    assert "blockOwnerDeletion" not in cm["metadata"]["ownerReferences"][0]
    assert config_map_up_to_date(cm, cm) and not config_map_up_to_date(None, cm)


def test_missing_tier_is_a_condition_with_its_reason():
    result = render(POLICY, [HAIKU])
    status = policy_status(POLICY, result, None, "2026-01-01T00:00:00Z")
    assert conditions(status)[RESOLVED_REFS] | {"lastTransitionTime": None} == {
        "type": RESOLVED_REFS,
        "status": "False",
        "reason": "TierNotFound",
        "message": "ModelTier 'sonnet' not found in namespace 'ns'",
        "observedGeneration": 1,
        "lastTransitionTime": None,
    }
    assert "configHash" not in status
    # Nothing was ever rendered: no ConfigMap is named, and no "last config" is kept.
    assert "configMap" not in status
    assert conditions(status)[READY]["message"].startswith("no router config yet: ")
    kept = policy_status(POLICY, result, None, "t", has_config=True)
    assert kept["configMap"] == "tierwise-triage"
    assert conditions(kept)[READY]["message"].startswith("keeping the last rendered config: ")


def test_transition_time_moves_only_when_status_changes():
    first = merge_conditions(None, [Condition(READY, True, "A", "m")], 1, "t1")
    same = merge_conditions(first, [Condition(READY, True, "B", "m2")], 2, "t2")
    flipped = merge_conditions(same, [Condition(READY, False, "C", "m3")], 3, "t3")
    assert [c["lastTransitionTime"] for c in (first[0], same[0], flipped[0])] == ["t1", "t1", "t3"]
    assert [c["type"] for c in transitions(same, flipped)] == [READY]
    assert transitions(first, first) == []


def test_status_keeps_fields_it_does_not_own():
    policy = body("CascadePolicy", "triage", POLICY_SPEC, {"lastEval": {"quality": "0.97"}})
    status = policy_status(policy, render(policy, [HAIKU, SONNET]), None, "t")
    assert status["lastEval"] == {"quality": "0.97"}


def test_pod_counts_and_selectors():
    pods = [{"spec": {"initContainers": [{"name": "tierwise-router"}]}}, {"spec": {}}]
    assert count_pods(view_pods(pods)).to_dict() == {
        "matching": 2,
        "injected": 1,
        "withoutSidecar": 1,
    }
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "t", "operator": "In", "values": ["x", "y"]},
            {"key": "o", "operator": "DoesNotExist"},
        ],
    }
    typed = parse(LabelSelector, selector, "podSelector")
    assert label_selector_string(typed) == "a=1,b=2,t in (x,y),!o"
    assert label_selector_string(None) is None
    assert label_selector_string(LabelSelector()) == ""


def test_tier_status_reports_prices_or_why_not():
    ready = tier_status(HAIKU, 2, "t")
    assert (
        ready["usedBy"] == 2
        and ready["pricing"]["input"] == "1"
        and conditions(ready)[READY]["status"] == "True"
    )
    unpriced = tier_status(body("ModelTier", "x", {"model": "claude-unknown"}), 0, "t")
    assert conditions(unpriced)[READY]["reason"] == "PricingUnknown" and "pricing" not in unpriced


def test_cache_profile_status():
    profile = body("CacheProfile", "c", {"responseCache": {"enabled": True, "backend": "memory"}})
    assert cache_profile_status(profile, 1, "t")["responseCache"] == "memory"


def test_policies_using_a_tier_or_profile():
    other = body(
        "CascadePolicy",
        "other",
        {
            "cacheProfileRef": {"name": "c"},
            "routes": [{"name": "a", "steps": [{"tier": "opus"}]}],
            "fallback": {"tier": "sonnet"},
        },
    )
    assert [p.name for p in policies_using([POLICY, other], tiers=["sonnet"])] == [
        "triage",
        "other",
    ]
    assert [p.name for p in policies_using([POLICY, other], profiles=["c"])] == ["other"]


def test_config_document_is_the_cli_render():
    result = render(POLICY, [HAIKU, SONNET])
    cm = desired_config_map(POLICY, result.document)
    assert (
        cm["data"][CONFIG_KEY].endswith("}\n") and result.document["hash"] in cm["data"][CONFIG_KEY]
    )


def test_a_live_higher_priority_peer_outranks_this_replica():
    from datetime import UTC, datetime, timedelta

    from tierwise.controller.peering import outranked

    now = datetime(2026, 1, 1, tzinfo=UTC)
    fresh = (now - timedelta(seconds=10)).isoformat()
    stale = (now - timedelta(seconds=120)).isoformat()
    assert outranked({"a": {"priority": 20, "lifetime": 60, "lastseen": fresh}}, 10, now)
    assert not outranked({"a": {"priority": 20, "lifetime": 60, "lastseen": stale}}, 10, now)
    assert not outranked(
        {
            "a": {"priority": 5, "lifetime": 60, "lastseen": fresh},
            "me": {"priority": 10, "lifetime": 60, "lastseen": fresh},
        },
        10,
        now,
    )


def test_tier_of_a_retiring_model_gets_a_warning_condition():
    from datetime import date

    from tierwise.controller.reconcile import MODEL_SUPPORTED

    old = body("ModelTier", "old", {"model": "claude-sonnet-4-5-20250929"})
    status = tier_status(old, 1, "t", today=date(2026, 11, 20))
    retiring = conditions(status)[MODEL_SUPPORTED]
    assert retiring["status"] == "False" and retiring["reason"] == "RetiresSoon"
    assert "2026-11-30" in retiring["message"] and "10 days" in retiring["message"]
    assert conditions(status)[READY]["status"] == "True"  # still priced and usable
    after = tier_status(old, 1, "t", today=date(2026, 12, 1))
    assert conditions(after)[MODEL_SUPPORTED]["reason"] == "Retired"
    early = tier_status(old, 1, "t", today=date(2026, 10, 1))
    assert conditions(early)[MODEL_SUPPORTED]["status"] == "True"
    assert conditions(early)[MODEL_SUPPORTED]["reason"] == "RetiresLater"
    current = tier_status(SONNET, 1, "t", today=date(2026, 11, 20))
    assert conditions(current)[MODEL_SUPPORTED]["reason"] == "NoRetirementScheduled"


def test_tier_with_an_ambiguous_override_names_the_missing_field():
    tier = body("ModelTier", "x", {"model": "claude-opus-5-5", "pricing": {"input": 3}})
    status = tier_status(tier, 0, "t")
    ready = conditions(status)[READY]
    assert ready["status"] == "False" and ready["reason"] == "PricingAmbiguous"
    assert "spec.pricing.cacheRead" in ready["message"] and "pricing" not in status


def test_tier_status_prices_from_the_catalog_it_is_given():
    from tierwise.pricing import BUILTIN, parse_catalog

    rates = {"input": 1, "output": 2, "cacheWrite5m": 3, "cacheWrite1h": 4, "cacheRead": 0.5}
    catalog = BUILTIN.overlay(
        parse_catalog({"date": "2026-12-01", "models": {"claude-sonnet-5-5": rates}}, source="cm")
    )
    status = tier_status(SONNET, 1, "t", catalog=catalog)
    assert status["pricing"]["input"] == "1" and status["pricing"]["source"] == "cm:2026-12-01"
    result = render_policy(POLICY.resource, by_name([HAIKU, SONNET]), {}, catalog=catalog)
    assert result.document["tiers"]["sonnet"]["pricing"]["cacheRead"] == "0.5"


def test_the_parse_cache_keeps_the_latest_generation_only():
    raw = {
        "apiVersion": API_VERSION,
        "kind": "ModelTier",
        "metadata": {"name": "haiku", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {"model": "claude-haiku-4-5"},
    }
    cache: dict = {}
    first = observe(raw, cache=cache)
    assert observe(raw, cache=cache).resource is first.resource  # not parsed again
    raw["metadata"]["generation"] = 2
    raw["spec"]["model"] = "claude-sonnet-4-5"
    second = observe(raw, cache=cache)
    assert second.resource.spec.model == "claude-sonnet-4-5"
    assert list(cache) == ["u1"] and cache["u1"][0] == 2


def undeclared(value, schema, path="status"):
    """Fields of ``value`` the structural schema does not declare: the API server would
    silently drop them from the stored status."""
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is None:
            return []  # a map (additionalProperties) or preserve-unknown-fields
        return [
            problem
            for key, item in value.items()
            for problem in (
                [f"{path}.{key}"]
                if key not in props
                else undeclared(item, props[key], f"{path}.{key}")
            )
        ]
    if isinstance(value, list):
        return [p for item in value for p in undeclared(item, schema.get("items", {}), path)]
    return []


def test_policy_status_with_pod_check_fits_the_crd():
    from pathlib import Path

    import yaml

    from tierwise.controller.pods import LiveConfig, pods_condition

    crd = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "crds/tierwise.dev_cascadepolicies.yaml").read_text()
    )
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    result = render(POLICY, [HAIKU, SONNET])
    live = LiveConfig(result.document["hash"], "tierwise-triage", frozenset({"K"}))
    old = {
        "metadata": {"name": "old"},
        "spec": {"initContainers": [{"name": "tierwise-router", "env": []}]},
    }
    counts = count_pods(view_pods([old]), live)
    status = policy_status(
        POLICY,
        result,
        counts,
        "t",
        has_config=True,
        extra_conditions=[pods_condition(counts, live)],
    )
    assert status["pods"] == {"matching": 1, "injected": 1, "withoutSidecar": 0, "cannotServe": 0}
    assert conditions(status)["PodsCurrent"]["status"] == "True"
    assert undeclared(status, schema) == []
    assert undeclared({"pods": {"surprise": 1}}, schema) == ["status.pods.surprise"]


def test_point_11_a_live_config_map_holds_a_config_only_byte_for_byte():
    document = render(POLICY, [HAIKU, SONNET]).document
    written = desired_config_map(POLICY, document)
    assert holds_config(written, document["hash"]) == json.loads(written["data"][CONFIG_KEY])
    edited = json.loads(written["data"][CONFIG_KEY])
    edited["routes"][0]["steps"] = edited["routes"][0]["steps"][:1]
    for data in (
        {CONFIG_KEY: json.dumps(edited, sort_keys=True, indent=2) + "\n"},  # edited, same claim
        {CONFIG_KEY: "{not json"},  # invalid
        {CONFIG_KEY: written["data"][CONFIG_KEY], "extra": "x"},  # another key
        {CONFIG_KEY: written["data"][CONFIG_KEY].replace("\n", "")},  # reformatted
    ):
        assert holds_config({**written, "data": data}, document["hash"]) is None, data
    assert holds_config(written, "sha256:" + "0" * 64) is None
    assert holds_config(None, document["hash"]) is None


def test_point_14_a_route_on_a_retired_model_makes_the_policy_condition_false():
    retired = body("ModelTier", "sonnet", {"model": "claude-sonnet-4"})
    document = render(POLICY, [HAIKU, retired]).document
    condition = models_condition(document, BUILTIN, date(2026, 12, 6))
    assert (condition.type, condition.status, condition.reason) == (
        "ModelSupported", False, "Retired",
    )  # fmt: skip
    assert condition.message.startswith("route t (tier sonnet): model 'claude-sonnet-4' retired")
    fine = models_condition(render(POLICY, [HAIKU, SONNET]).document, BUILTIN, date(2026, 12, 6))
    assert fine.status and fine.reason == "AllModelsSupported"


LOCAL = body(
    "ModelTier",
    "local",
    {
        "provider": "openai",
        "model": "smollm2",
        "endpoint": "http://llama:8000",
        "pricing": {"input": 0, "output": 0},
    },
)


def test_a_self_hosted_tier_is_priced_by_its_spec_alone():
    status = tier_status(LOCAL, 1, "t")
    assert conditions(status)[READY]["status"] == "True"
    assert status["pricing"]["input"] == status["pricing"]["cacheRead"] == "0"
    assert status["pricing"]["source"] == "spec"


def test_token_probabilities_on_an_anthropic_tier_are_a_condition_naming_the_step():
    signal = {"signal": "answerProbabilityBelow", "field": "label", "threshold": 0.5}
    spec = {
        "podSelector": {"matchLabels": {"app": "inbox"}},
        "routes": [
            {
                "name": "t",
                "steps": [{"tier": "haiku", "escalateWhen": [signal]}, {"tier": "sonnet"}],
            }
        ],
    }
    policy = body("CascadePolicy", "triage", spec)
    status = policy_status(policy, render(policy, [HAIKU, SONNET]), None, "t")
    ready = conditions(status)[READY]
    assert (ready["status"], ready["reason"]) == ("False", "SignalUnsupported")
    assert "ModelTier 'haiku' has provider anthropic, which returns no token" in ready["message"]
    spec["routes"][0]["steps"][0]["tier"] = "local"
    local_policy = body("CascadePolicy", "triage", spec)
    ok = policy_status(local_policy, render(local_policy, [LOCAL, SONNET]), None, "t")
    assert conditions(ok)[READY]["status"] == "True"

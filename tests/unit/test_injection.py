"""Sidecar injection: selection, the mutation, idempotency, and the webhook registration."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonpatch
import kopf
import pytest

from tierwise.api.models import LabelSelector, LabelSelectorRequirement
from tierwise.controller.injection import (
    BASE_URL_ENV,
    DEFAULT_RESOURCES,
    InjectionPlan,
    choose_policy,
    inject,
    matching_policies,
    plan_for,
    router_container,
    selects,
    webhook_configuration,
)
from tierwise.controller.names import (
    CONFIG_VOLUME,
    DEFAULT_ROUTER_IMAGE,
    SIDECAR_NAME,
    WEBHOOK_PATH,
    config_map_name,
)
from tierwise.controller.objects import observe
from tierwise.controller.settings import OperatorOptions, WebhookOptions
from tierwise.render import SecretKeyEnv
from tierwise.routerconfig import sidecar

BASE_URL = {"name": BASE_URL_ENV, "value": "http://127.0.0.1:8787"}


def pod(labels=None, annotations=None, containers=None, init=None, volumes=None):
    spec: dict[str, Any] = {"containers": containers or [{"name": "app", "image": "app:1"}]}
    if init is not None:
        spec["initContainers"] = init
    if volumes is not None:
        spec["volumes"] = volumes
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
    name,
    selector,
    created="2026-01-01T00:00:00Z",
    tiers=("haiku", "sonnet"),
    fallback=None,
    config_hash="sha256:abc",
    capture=None,
    evaluation=None,
    **meta,
):
    spec = {"routes": [{"name": "r", "steps": [{"tier": t} for t in tiers]}]}
    if capture is not None:
        spec["capture"] = capture
    if evaluation is not None:
        spec["evaluation"] = evaluation
    if selector is not None:
        spec["podSelector"] = selector
    if fallback:
        spec["fallback"] = {"tier": fallback}
    status = {"configHash": config_hash} if config_hash else {}
    return observe(
        {
            "apiVersion": "tierwise.dev/v1alpha1",
            "kind": "CascadePolicy",
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created, **meta},
            "spec": spec,
            "status": status,
        }
    )


def tier(name, secret=None):
    spec: dict[str, Any] = {"model": "m"}
    if secret:
        spec["apiKeySecretRef"] = secret
    return observe(
        {
            "apiVersion": "tierwise.dev/v1alpha1",
            "kind": "ModelTier",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": spec,
        }
    )


PLAN = InjectionPlan(
    policy="triage",
    image="tierwise:test",
    keys=(SecretKeyEnv("TIERWISE_TIER_HAIKU_API_KEY", "anthropic", "api-key"),),
    config_hash="sha256:abc",
)


def routers(p):
    spec = p["spec"]
    return [
        c
        for c in (spec.get("initContainers") or []) + spec["containers"]
        if c["name"] == SIDECAR_NAME
    ]


def env_names(container):
    return [e["name"] for e in container.get("env") or []]


# -- selectors ------------------------------------------------------------------------------


def expr(key, operator, *values):
    return {"key": key, "operator": operator, **({"values": list(values)} if values else {})}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        pytest.param(None, {"app": "x"}, False, id="no selector selects nothing"),
        pytest.param({}, {"app": "x"}, True, id="empty selector selects everything"),
        pytest.param({}, {}, True, id="empty selector, unlabelled pod"),
        pytest.param({"matchLabels": {"app": "x"}}, {"app": "x", "t": "w"}, True, id="subset"),
        pytest.param({"matchLabels": {"app": "x"}}, {"app": "y"}, False, id="other value"),
        pytest.param({"matchLabels": {"app": "x"}}, {}, False, id="label missing"),
        pytest.param(
            {"matchLabels": {"app": "x", "tier": "web"}}, {"app": "x"}, False, id="all labels"
        ),
        pytest.param({"matchExpressions": [expr("app", "In", "x", "y")]}, {"app": "y"}, True),
        pytest.param({"matchExpressions": [expr("app", "In", "x")]}, {}, False, id="In absent"),
        pytest.param({"matchExpressions": [expr("app", "NotIn", "x")]}, {}, True),
        pytest.param({"matchExpressions": [expr("app", "NotIn", "x")]}, {"app": "x"}, False),
        pytest.param({"matchExpressions": [expr("app", "NotIn", "x")]}, {"app": "z"}, True),
        pytest.param({"matchExpressions": [expr("canary", "Exists")]}, {"canary": ""}, True),
        pytest.param({"matchExpressions": [expr("canary", "Exists")]}, {}, False),
        pytest.param({"matchExpressions": [expr("canary", "DoesNotExist")]}, {}, True),
        pytest.param(
            {"matchExpressions": [expr("canary", "DoesNotExist")]}, {"canary": "1"}, False
        ),
        pytest.param(
            {"matchLabels": {"app": "x"}, "matchExpressions": [expr("env", "In", "prod")]},
            {"app": "x", "env": "dev"},
            False,
            id="labels and expressions must all hold",
        ),
        pytest.param(
            {"matchExpressions": [expr("app", "Exists"), expr("env", "NotIn", "dev")]},
            {"app": "x", "env": "prod"},
            True,
        ),
        pytest.param(
            {"matchExpressions": [expr("app", "Matches", "x")]},
            {"app": "x"},
            False,
            id="unknown operator selects nothing",
        ),
    ],
)
def test_label_selector_semantics(selector, labels, expected):
    assert selects(typed_selector(selector), labels) is expected


def typed_selector(selector):
    """The typed LabelSelector (built directly: one case uses an operator the schema refuses)."""
    if selector is None:
        return None
    return LabelSelector(
        match_labels=selector.get("matchLabels"),
        match_expressions=tuple(
            LabelSelectorRequirement(e["key"], e["operator"], tuple(e.get("values") or ()) or None)
            for e in selector.get("matchExpressions") or ()
        ),
    )


# -- choosing the policy ----------------------------------------------------------------------


def test_the_oldest_matching_policy_wins():
    newer = policy("b", {}, created="2026-02-01T00:00:00Z")
    older = policy("z", {}, created="2026-01-01T00:00:00Z")
    other = policy("a", {"matchLabels": {"app": "other"}}, created="2025-01-01T00:00:00Z")
    inbox = pod({"app": "inbox"})
    assert choose_policy(inbox, [newer, other, older]).name == "z"
    assert [p.name for p in matching_policies(inbox, [newer, other, older])] == [
        "z",
        "b",
    ]


def test_policies_created_in_the_same_second_are_ordered_by_name():
    same = "2026-01-01T00:00:00Z"
    chosen = choose_policy(pod(), [policy("zeta", {}, same), policy("alpha", {}, same)])
    assert chosen.name == "alpha"
    # The choice does not depend on the order the index returns the policies in.
    chosen = choose_policy(pod(), [policy("alpha", {}, same), policy("zeta", {}, same)])
    assert chosen.name == "alpha"


def test_no_policy_for_unmatched_pods_or_policies_without_selector():
    assert (
        choose_policy(pod({"app": "inbox"}), [policy("a", {"matchLabels": {"app": "x"}})]) is None
    )
    assert choose_policy(pod({"app": "inbox"}), [policy("a", None)]) is None
    assert choose_policy(pod({"app": "inbox"}), []) is None


def test_a_policy_being_deleted_no_longer_claims_pods():
    going = policy(
        "old", {}, created="2025-01-01T00:00:00Z", deletionTimestamp="2026-03-01T00:00:00Z"
    )
    staying = policy("new", {}, created="2026-01-01T00:00:00Z")
    assert choose_policy(pod(), [going, staying]).name == "new"


# -- the plan ---------------------------------------------------------------------------------


def test_plan_maps_used_tiers_to_their_secrets_only():
    tiers = [
        tier("sonnet"),
        tier("unused", {"name": "x"}),
        tier("opus", {"name": "k2"}),
        tier("haiku", {"name": "k", "key": "token"}),
    ]
    plan = plan_for(policy("triage", {}, fallback="opus"), tiers, "img")
    # Sorted by tier name; the fallback tier counts; a tier without a Secret has no key;
    # `key` defaults to the CRD's default.
    assert plan.keys == (
        SecretKeyEnv("TIERWISE_TIER_HAIKU_API_KEY", "k", "token"),
        SecretKeyEnv("TIERWISE_TIER_OPUS_API_KEY", "k2", "api-key"),
    )
    assert (plan.policy, plan.image, plan.config_hash) == ("triage", "img", "sha256:abc")


def test_the_shadow_stages_judge_tier_key_reaches_the_sidecar():
    judged = {
        "routes": [{"name": "r", "dataset": {"configMapRef": {"name": "ds"}}}],
        "gate": {"minQuality": 0.9},
        "shadow": {
            "minAgreement": 0.9,
            "spendLimitPerHourUSD": 1,
            "comparison": {"type": "judge", "tier": "opus"},
        },
    }
    tiers = [tier("haiku", {"name": "k"}), tier("opus", {"name": "k2"})]
    p = policy("triage", {}, tiers=("haiku",), evaluation=judged)
    assert p.error is None, p.error
    plan = plan_for(p, tiers, "img")
    assert SecretKeyEnv("TIERWISE_TIER_OPUS_API_KEY", "k2", "api-key") in plan.keys


def test_plan_of_a_policy_that_never_rendered_has_no_hash():
    plan = plan_for(policy("triage", {}, config_hash=None), [], "img")
    assert plan.config_hash is None and plan.keys == ()
    mutated = inject(pod(), plan)
    assert "tierwise.dev/config-hash" not in mutated["metadata"]["annotations"]


def test_configured_sidecar_resources_replace_the_defaults():
    wanted = {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    plan = plan_for(policy("triage", {}), [], "img", wanted)
    mutated = inject(pod(), plan)
    (router,) = [c for c in mutated["spec"]["initContainers"] if c["name"] == SIDECAR_NAME]
    assert router["resources"] == wanted
    assert plan_for(policy("triage", {}), [], "img").resources == DEFAULT_RESOURCES


def test_tier_names_become_valid_env_names():
    plan = plan_for(
        policy("p", {}, tiers=("fast-tier.v2",)), [tier("fast-tier.v2", {"name": "s"})], "i"
    )
    # '.' is kept (Kubernetes accepts it in variable names): '-' alone becomes '_'.
    assert plan.keys[0].env == "TIERWISE_TIER_FAST_TIER.V2_API_KEY"
    assert re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", plan.keys[0].env)


def test_point1_tiers_whose_names_differ_only_in_dot_or_dash_get_their_own_keys():
    names = ("haiku-v2", "haiku.v2")
    tiers = [tier(n, {"name": f"secret-{n}"}) for n in names]
    plan = plan_for(policy("p", {}, tiers=names), tiers, "i")
    by_secret = {k.secret_name: k.env for k in plan.keys}
    assert by_secret == {
        "secret-haiku-v2": "TIERWISE_TIER_HAIKU_V2_API_KEY",
        "secret-haiku.v2": "TIERWISE_TIER_HAIKU.V2_API_KEY",
    }


def test_point1_a_key_variable_two_tiers_would_share_goes_to_neither():
    # Not a valid Kubernetes name, but local manifests may hold one: no key is sent then.
    names = ("haiku-v2", "haiku_v2")
    tiers = [tier(n, {"name": f"secret-{n}"}) for n in names]
    assert plan_for(policy("p", {}, tiers=names), tiers, "i").keys == ()


# -- the mutation -----------------------------------------------------------------------------


def test_the_router_is_a_native_sidecar_before_the_init_containers():
    mutated = inject(pod(init=[{"name": "migrate", "image": "m"}]), PLAN)
    init = mutated["spec"]["initContainers"]
    assert [c["name"] for c in init] == [SIDECAR_NAME, "migrate"]
    router = init[0]
    assert router["restartPolicy"] == "Always" and router["image"] == "tierwise:test"
    assert router["command"] == [
        "tierwise",
        "router",
        "--config",
        "/etc/tierwise/router-config.json",
        "--host",
        "127.0.0.1",
        "--port",
        "8787",
        "--metrics-host",
        "0.0.0.0",
        "--metrics-port",
        "9787",
        "--max-body-bytes",
        str(sidecar.MAX_BODY_BYTES),
        "--batch-state-dir",
        "/var/lib/tierwise/batches",
    ]
    assert "restartPolicy" not in init[1]


def test_the_router_is_probed_on_its_metrics_port():
    router = router_container(PLAN)
    assert router["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9787}
    assert router["startupProbe"]["httpGet"] == {"path": "/readyz", "port": 9787}
    assert router["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9787}
    assert router["ports"][0]["containerPort"] == 9787
    assert all(len(port["name"]) <= 15 for port in router["ports"])  # the API server's limit


def test_the_router_runs_restricted_with_small_resources():
    router = router_container(PLAN)
    assert router["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert router["resources"] == DEFAULT_RESOURCES
    assert set(router["resources"]["limits"]) == {"cpu", "memory"}  # quota-friendly
    # Each container gets its own copy: mutating one pod never changes the plan's defaults.
    router["resources"]["limits"]["cpu"] = "9"
    assert router_container(PLAN)["resources"]["limits"]["cpu"] == "500m"


def test_tier_keys_come_from_secrets_by_reference():
    plan = InjectionPlan(
        policy="triage",
        image="i",
        keys=(
            SecretKeyEnv("TIERWISE_TIER_HAIKU_API_KEY", "anthropic", "api-key"),
            SecretKeyEnv("TIERWISE_TIER_OPUS_API_KEY", "opus-key", "token"),
        ),
    )
    [router] = routers(inject(pod(), plan))
    assert router["env"] == [
        {
            "name": "TIERWISE_TIER_HAIKU_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "anthropic", "key": "api-key"}},
        },
        {
            "name": "TIERWISE_TIER_OPUS_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "opus-key", "key": "token"}},
        },
    ]
    assert all("value" not in e for e in router["env"])  # never a key in the pod spec


def test_the_policy_config_map_is_mounted_read_only_and_batch_state_writable():
    mutated = inject(pod(volumes=[{"name": "data", "emptyDir": {}}]), PLAN)
    [router] = routers(mutated)
    assert router["volumeMounts"] == [
        {"name": CONFIG_VOLUME, "mountPath": "/etc/tierwise", "readOnly": True},
        {"name": "tierwise-batch-state", "mountPath": "/var/lib/tierwise/batches"},
    ]
    assert mutated["spec"]["volumes"] == [
        {"name": "data", "emptyDir": {}},
        {"name": CONFIG_VOLUME, "configMap": {"name": "tierwise-triage"}},
        {"name": "tierwise-batch-state", "emptyDir": {"sizeLimit": "2Gi"}},
    ]
    assert config_map_name("triage") == "tierwise-triage"


def test_a_volume_already_named_like_ours_is_replaced():
    stale = {"name": CONFIG_VOLUME, "configMap": {"name": "something-else"}}
    mutated = inject(pod(volumes=[stale]), PLAN)
    assert mutated["spec"]["volumes"] == [
        {"name": CONFIG_VOLUME, "configMap": {"name": "tierwise-triage"}},
        {"name": "tierwise-batch-state", "emptyDir": {"sizeLimit": "2Gi"}},
    ]


def test_app_containers_and_init_containers_get_the_base_url():
    containers = [{"name": "app", "image": "a"}, {"name": "worker", "image": "w", "env": []}]
    init = [
        {"name": "migrate", "image": "m", "env": [{"name": "X", "value": "1"}]},
        {"name": "mesh-proxy", "image": "p", "restartPolicy": "Always"},
    ]
    mutated = inject(pod(containers=containers, init=init), PLAN)
    spec = mutated["spec"]
    for c in spec["containers"]:
        assert BASE_URL in c["env"], c["name"]
    migrate = spec["initContainers"][1]
    assert migrate["env"] == [{"name": "X", "value": "1"}, BASE_URL]  # appended, order kept
    # Neither the router itself nor another native sidecar is an app.
    assert BASE_URL_ENV not in env_names(spec["initContainers"][0])
    assert "env" not in spec["initContainers"][2]


def test_an_explicit_base_url_is_kept():
    explicit = {"name": BASE_URL_ENV, "value": "https://gateway"}
    from_secret = {"name": BASE_URL_ENV, "valueFrom": {"secretKeyRef": {"name": "s", "key": "u"}}}
    containers = [
        {"name": "a", "image": "a", "env": [explicit]},
        {"name": "b", "image": "b", "env": [from_secret]},
        {"name": "c", "image": "c"},
    ]
    mutated = inject(pod(containers=containers), PLAN)
    a, b, c = mutated["spec"]["containers"]
    assert a["env"] == [explicit] and b["env"] == [from_secret] and c["env"] == [BASE_URL]


def test_the_injection_is_recorded_on_the_pod():
    mutated = inject(pod(annotations={"team": "support"}), PLAN)
    assert mutated["metadata"]["annotations"] == {
        "team": "support",
        "tierwise.dev/injected-by": "triage",
        "tierwise.dev/config-hash": "sha256:abc",
    }


def test_a_pod_without_annotations_or_metadata_fields_is_injected():
    bare = {"metadata": {"namespace": "ns"}, "spec": {"containers": [{"name": "a", "image": "a"}]}}
    mutated = inject(bare, PLAN)
    assert mutated["metadata"]["annotations"]["tierwise.dev/injected-by"] == "triage"
    assert len(routers(mutated)) == 1


@pytest.mark.parametrize("value", ["false", "False", "FALSE", " false "])
def test_opted_out_pods_are_untouched(value):
    assert inject(pod(annotations={"tierwise.dev/inject": value}), PLAN) is None


@pytest.mark.parametrize("value", ["true", "", "no", "0"])
def test_only_false_opts_out(value):
    assert inject(pod(annotations={"tierwise.dev/inject": value}), PLAN) is not None


# -- idempotency ------------------------------------------------------------------------------


def test_injecting_twice_changes_nothing_the_second_time():
    once = inject(pod(init=[{"name": "migrate", "image": "m"}]), PLAN)
    assert inject(once, PLAN) is None
    assert inject(copy.deepcopy(once), PLAN) is None
    assert len(routers(once)) == 1
    for c in [*once["spec"]["initContainers"][1:], *once["spec"]["containers"]]:
        assert env_names(c).count(BASE_URL_ENV) == 1
    assert [v["name"] for v in once["spec"]["volumes"]].count(CONFIG_VOLUME) == 1


def test_a_reinvocation_points_containers_added_since_at_the_router():
    once = inject(pod(), PLAN)
    # Another mutating webhook, called after this one, added a container.
    once["spec"]["containers"].append({"name": "added-later", "image": "x"})
    again = inject(once, PLAN)
    assert again is not None and len(routers(again)) == 1
    assert again["spec"]["containers"][1]["env"] == [BASE_URL]
    assert again["spec"]["containers"][0] == once["spec"]["containers"][0]
    assert inject(again, PLAN) is None


def test_a_reinvocation_with_another_plan_keeps_the_first_injection():
    once = inject(pod(), PLAN)
    other = InjectionPlan(policy="other", image="other:1")
    assert inject(once, other) is None


def test_a_pod_that_brings_its_own_router_is_left_alone():
    own = {"name": SIDECAR_NAME, "image": "tierwise:custom", "restartPolicy": "Always"}
    assert inject(pod(init=[own]), PLAN) is None
    # Also as a regular container (an older, non-native way of running it).
    assert inject(pod(containers=[{"name": "app", "image": "a"}, own]), PLAN) is None


def test_the_original_pod_is_not_mutated():
    original = pod(init=[{"name": "migrate", "image": "m"}])
    snapshot = copy.deepcopy(original)
    inject(original, PLAN)
    assert original == snapshot


# -- the kopf handler (called directly, as kopf would) ----------------------------------------


def call_handler(
    p: dict[str, Any], policies: list[dict[str, Any]], tiers=()
) -> tuple[dict[str, Any], list[str]]:
    """The pod after the JSON patch the handler's admission response would carry."""
    from tierwise.controller.webhook import inject_router

    patch = kopf.Patch(body=kopf.Body(p))
    warnings: list[str] = []
    inject_router(
        body=kopf.Body(p),
        patch=patch,
        warnings=warnings,
        policies_by_namespace={"ns": policies},
        tiers_by_namespace={"ns": list(tiers)},
        cache_profiles_by_namespace={},
    )
    ops = patch.as_json_patch()
    return jsonpatch.apply_patch(p, ops) if ops else p, warnings


def test_the_handler_patch_yields_the_injected_pod_with_the_default_image():
    tiers = [tier("haiku", {"name": "anthropic"})]
    result, warnings = call_handler(pod({"app": "inbox"}), [policy("triage", {})], tiers)
    expected = inject(
        pod({"app": "inbox"}),
        plan_for(policy("triage", {}), tiers, DEFAULT_ROUTER_IMAGE),
    )
    assert result == expected and warnings == []
    assert routers(result)[0]["image"].startswith("ghcr.io/tierwise/tierwise:")


def test_the_handler_warns_when_several_policies_select_the_pod():
    policies = [
        policy("newer", {}, created="2026-02-01T00:00:00Z"),
        policy("older", {}, created="2026-01-01T00:00:00Z"),
    ]
    result, warnings = call_handler(pod(), policies)
    assert result["metadata"]["annotations"]["tierwise.dev/injected-by"] == "older"
    assert (
        len(warnings) == 1 and "older, newer" in warnings[0] and "older (the oldest)" in warnings[0]
    )


def test_the_handler_leaves_unmatched_and_opted_out_pods_alone():
    unmatched = pod({"app": "billing"})
    assert call_handler(unmatched, [policy("t", {"matchLabels": {"app": "inbox"}})]) == (
        unmatched,
        [],
    )
    opted_out = pod(annotations={"tierwise.dev/inject": "false"})
    assert call_handler(opted_out, [policy("t", {})]) == (opted_out, [])
    elsewhere = pod()
    elsewhere["metadata"]["namespace"] = "other"
    assert call_handler(elsewhere, [policy("t", {})]) == (elsewhere, [])


# -- registration -----------------------------------------------------------------------------


def test_the_registration_selects_opted_in_namespaces_and_fails_open():
    config = webhook_configuration(
        {"url": "https://127.0.0.1:9443", "caBundle": "Q0E="}, name="tierwise.dev"
    )
    assert config["kind"] == "MutatingWebhookConfiguration"
    assert config["metadata"]["name"] == "tierwise.dev"
    [webhook] = config["webhooks"]
    assert webhook["namespaceSelector"] == {"matchLabels": {"tierwise.dev/injection": "enabled"}}
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["sideEffects"] == "None"
    assert 1 <= webhook["timeoutSeconds"] <= 10  # short: pods wait this long when we hang
    assert webhook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE"],
            "scope": "Namespaced",
        }
    ]
    assert webhook["clientConfig"] == {
        "url": f"https://127.0.0.1:9443{WEBHOOK_PATH}",
        "caBundle": "Q0E=",
    }


def test_a_static_registration_points_at_the_service_path():
    service = {"service": {"name": "tierwise-webhook", "namespace": "tierwise", "port": 443}}
    config = webhook_configuration(service, name="tierwise")
    assert config["webhooks"][0]["clientConfig"]["service"] == {
        "name": "tierwise-webhook",
        "namespace": "tierwise",
        "port": 443,
        "path": WEBHOOK_PATH,
    }
    assert "path" not in service["service"]  # the argument is not mutated


def test_serve_admission_never_uses_kopfs_managed_registration(tmp_path):
    from tierwise.controller import webhook

    (tmp_path / "tls.crt").write_text("c")
    (tmp_path / "tls.key").write_text("k")
    settings = kopf.OperatorSettings()
    options = WebhookOptions(cert_dir=str(tmp_path), manage=True, host="h")
    webhook.serve_admission(settings, options, None)
    assert isinstance(settings.admission.server, webhook.RegisteringWebhookServer)
    assert settings.admission.managed is None
    assert settings.admission.server.host == "h" and settings.admission.server.cafile is None

    settings = kopf.OperatorSettings()
    webhook.serve_admission(settings, WebhookOptions(cert_dir=str(tmp_path)), None)
    server = settings.admission.server
    assert type(server) is kopf.WebhookServer and server.host == "127.0.0.1"


def test_a_missing_certificate_directory_is_a_clear_error(tmp_path):
    from tierwise.controller import webhook

    with pytest.raises(kopf.PermanentError, match=r"tls\.crt does not exist"):
        webhook.serve_admission(
            kopf.OperatorSettings(), WebhookOptions(cert_dir=str(tmp_path)), None
        )


def test_serve_admission_generates_a_certificate_for_the_host_and_sans():
    from cryptography import x509

    from tierwise.controller import webhook

    settings = kopf.OperatorSettings()
    options = WebhookOptions(
        address="0.0.0.0", host="127.0.0.1", sans=("tierwise-webhook.tierwise-system.svc",)
    )
    webhook.serve_admission(settings, options, None)
    server = settings.admission.server
    cert = x509.load_pem_x509_certificate(Path(server.certfile).read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["tierwise-webhook.tierwise-system.svc"]
    ca = x509.load_pem_x509_certificate(Path(server.cafile).read_bytes())
    assert cert.issuer == ca.subject


def test_sidecar_limits_probes_and_body_limit_agree() -> None:
    """Repro: a 32 MiB body did not fit a 192Mi sidecar and probes had no timeout."""
    from tierwise.controller.injection import InjectionPlan, router_container

    container = router_container(InjectionPlan(policy="p", image="img"))
    command = container["command"]
    max_body = int(command[command.index("--max-body-bytes") + 1])
    assert max_body == sidecar.MAX_BODY_BYTES
    limit_mib = int(container["resources"]["limits"]["memory"].removesuffix("Mi"))
    # Measured (docs/benchmarks.md): ~40 MiB idle plus ~6x the largest body in flight.
    assert limit_mib * 2**20 >= 40 * 2**20 + 6 * max_body
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["timeoutSeconds"] == sidecar.PROBE_TIMEOUT_SECONDS >= 2


def test_the_admission_handler_uses_the_router_image_from_the_options():
    from tierwise.controller.webhook import inject_router

    p = pod({"app": "inbox"})
    patch = kopf.Patch(body=kopf.Body(p))
    inject_router(
        body=kopf.Body(p),
        patch=patch,
        warnings=[],
        policies_by_namespace={"ns": [policy("triage", {})]},
        tiers_by_namespace={"ns": []},
        cache_profiles_by_namespace={},
        memo=kopf.Memo(options=OperatorOptions(router_image="registry.example/router:2")),
    )
    result = jsonpatch.apply_patch(p, patch.as_json_patch())
    assert routers(result)[0]["image"] == "registry.example/router:2"


def test_spec_capture_reaches_the_sidecar_as_flags_and_a_claim_volume():
    """The rendered pod patch: the router is started with the --capture-* flags the policy
    asks for, and the platform team's claim is mounted where --capture-dir points; the
    router's own argument parser reads them back as the same settings."""
    import argparse

    from tierwise.controller.webhook import inject_router
    from tierwise.router import command

    capture = {
        "claimName": "support-captures",
        "rate": 0.05,
        "maxBytesPerDay": 1048576,
        "redact": [
            {"name": "account", "pattern": "ACC-[0-9]{6}"},
            {"name": "quoted", "pattern": "'[^']*' and \\$HOME"},  # no shell reads it
        ],
    }
    captured = policy("triage", {}, capture=capture)
    assert captured.error is None
    p = pod({"app": "inbox"}, volumes=[{"name": "tierwise-capture", "emptyDir": {}}])
    patch = kopf.Patch(body=kopf.Body(p))
    inject_router(
        body=kopf.Body(p),
        patch=patch,
        warnings=[],
        policies_by_namespace={"ns": [captured]},
        tiers_by_namespace={"ns": []},
        cache_profiles_by_namespace={},
        memo=kopf.Memo(options=OperatorOptions()),
    )
    result = jsonpatch.apply_patch(p, patch.as_json_patch())
    [router] = routers(result)
    assert {"name": "tierwise-capture", "mountPath": "/var/lib/tierwise/capture"} in router[
        "volumeMounts"
    ]
    # The claim replaces a volume of our name: the pod's own would not be the team's sink.
    volumes = {v["name"]: v for v in result["spec"]["volumes"]}
    assert volumes["tierwise-capture"] == {
        "name": "tierwise-capture",
        "persistentVolumeClaim": {"claimName": "support-captures"},
    }
    assert len(result["spec"]["volumes"]) == len(volumes)
    parser = argparse.ArgumentParser()
    command.configure(parser)
    args = parser.parse_args(router["command"][2:])
    settings = command._capture_settings(args)
    assert settings is not None
    assert str(settings.directory) == "/var/lib/tierwise/capture"
    assert settings.rate == 0.05 and settings.max_bytes_per_day == 1048576
    assert settings.redactions["account"] == "ACC-[0-9]{6}"
    assert settings.redactions["quoted"] == "'[^']*' and \\$HOME"
    assert {"email", "phone", "key"} <= set(settings.redactions)  # the defaults stay


def test_without_spec_capture_the_sidecar_captures_nothing():
    mutated = inject(pod(), PLAN)
    [router] = routers(mutated)
    assert not any(a.startswith("--capture") for a in router["command"])
    assert all(v["name"] != "tierwise-capture" for v in mutated["spec"]["volumes"])

"""What the operator must never do, on the real API server with its webhook called by it.

Each test is named after the point of the operator-safety issue it proves: a key reaches
only its own tier (1), what is not the operator's is left alone (2), no secret lands in a
ConfigMap (3), one bad value cannot block every pod (4), names that cannot work are refused
up front (5).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from operator_process import (
    OperatorProcess,
    bind_operator_identity,
    eventually,
    free_port,
    injecting_operator_args,
)

from harness.kubectl import Kubectl
from tierwise.evals.job import job_name

pytestmark = pytest.mark.controlplane

ROUTER_IMAGE = "example.com/tierwise:under-test"
APP = {"app": "safety"}


@pytest.fixture(scope="module")
def injecting_operator(
    controlplane, kubectl: Kubectl, user_kubeconfig, tmp_path_factory
) -> Iterator[OperatorProcess]:
    kubeconfig = bind_operator_identity(
        kubectl,
        user_kubeconfig,
        "tierwise-operator-safety-tests",
        ["tierwise-operator", "tierwise-operator-webhook-manager"],
    )
    configuration = "tierwise.dev"
    args = injecting_operator_args(ROUTER_IMAGE)
    process = OperatorProcess(
        kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log", args
    )
    process.start()
    yield process
    process.stop()
    kubectl("delete", "mutatingwebhookconfiguration", configuration, check=False)


@pytest.fixture(scope="module")
def operator_kubeconfig_for_start(injecting_operator) -> Any:
    return injecting_operator.kubeconfig


@pytest.fixture
def opted_in(injecting_operator, kubectl: Kubectl, namespace: str) -> str:
    kubectl("label", "namespace", namespace, "tierwise.dev/injection=enabled")
    return namespace


# -- helpers ----------------------------------------------------------------------------------


def apply(kubectl: Kubectl, namespace: str, *docs: dict[str, Any]) -> None:
    kubectl.apply(yaml.safe_dump_all(docs), namespace=namespace)


def secret(name: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"api-key": value},
    }


def tier(name: str, *, endpoint: str | None = None, key_secret: str | None = None) -> dict:
    spec: dict[str, Any] = {"model": "claude-haiku-4-5"}
    if endpoint:
        spec["endpoint"] = endpoint
    if key_secret:
        spec["apiKeySecretRef"] = {"name": key_secret, "key": "api-key"}
    return {
        "apiVersion": "tierwise.dev/v1alpha1",
        "kind": "ModelTier",
        "metadata": {"name": name},
        "spec": spec,
    }


def policy(name: str, tiers: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tierwise.dev/v1alpha1",
        "kind": "CascadePolicy",
        "metadata": {"name": name},
        "spec": {
            "podSelector": {"matchLabels": APP},
            "routes": [{"name": "main", "steps": [{"tier": t} for t in tiers]}],
            **spec,
        },
    }


def get(kubectl: Kubectl, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = kubectl("get", kind, name, "-o", "json", namespace=namespace, check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or ():
        if c["type"] == kind:
            return c
    return None


def policy_condition(
    kubectl: Kubectl, namespace: str, name: str, kind: str, **expected: str
) -> dict[str, Any]:
    """Wait until the policy's condition ``kind`` has the ``expected`` fields; return it."""

    def matches() -> dict[str, Any] | None:
        found = condition(get(kubectl, "cascadepolicy", name, namespace), kind)
        return found if found and all(found[k] == v for k, v in expected.items()) else None

    return eventually(matches, f"{kind} {expected} on {name}")


def create_pod(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": APP},
        "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]},
    }
    kubectl("create", "-f", "-", input=json.dumps(pod), namespace=namespace)
    return kubectl.get_json("pod", name, namespace=namespace)


def sidecar(pod: dict[str, Any]) -> dict[str, Any] | None:
    for c in pod["spec"].get("initContainers") or ():
        if c["name"] == "tierwise-router":
            return c
    return None


def injected_pod(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    """A pod the webhook injected (the API server learns of the registration through an
    informer, the operator of the policy through a watch: retry with fresh pods)."""
    attempt = 0

    def one() -> dict[str, Any] | None:
        nonlocal attempt
        attempt += 1
        pod = create_pod(kubectl, namespace, f"app-{attempt}")
        return pod if sidecar(pod) else None

    return eventually(one, "an injected pod")


def events_for(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    return kubectl.get_json(
        "events", "--field-selector", f"involvedObject.name={name}", namespace=namespace
    )["items"]


# -- 1. a key goes only to its own tier ------------------------------------------------------


def test_point1_a_key_goes_only_to_its_own_tier(opted_in: str, kubectl: Kubectl):
    namespace = opted_in
    apply(
        kubectl,
        namespace,
        secret("dash-key", "anthropic-key"),
        secret("dot-key", "third-party-key"),
        tier("haiku-v2", key_secret="dash-key"),
        tier("haiku.v2", endpoint="https://llm.example.com", key_secret="dot-key"),
        policy("keys", ["haiku-v2", "haiku.v2"]),
    )
    ready = policy_condition(kubectl, namespace, "keys", "Ready", status="True")
    assert ready["reason"] == "Rendered"
    config_map = get(kubectl, "configmap", "tierwise-keys", namespace)
    assert config_map is not None
    tiers = json.loads(config_map["data"]["router-config.json"])["tiers"]
    env_of_tier = {name: t["apiKeyEnv"] for name, t in tiers.items()}
    assert len(set(env_of_tier.values())) == 2, env_of_tier

    router = sidecar(injected_pod(kubectl, namespace))
    assert router is not None
    names = [e["name"] for e in router["env"]]
    assert len(names) == len(set(names)), f"a variable is set twice: {names}"
    secret_of = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in router["env"]}
    # Each tier's variable, as its config names it, carries that tier's own Secret.
    assert secret_of[env_of_tier["haiku-v2"]] == "dash-key"
    assert secret_of[env_of_tier["haiku.v2"]] == "dot-key"


# -- 2. what is not ours is left alone -------------------------------------------------------


def test_point2_a_teams_configmap_with_the_policys_name_is_left_alone(
    opted_in: str, kubectl: Kubectl
):
    namespace = opted_in
    theirs = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "tierwise-team", "labels": {"team": "payments"}},
        "data": {"settings.ini": "owned by the payments team"},
    }
    kubectl("create", "-f", "-", input=json.dumps(theirs), namespace=namespace)
    before = get(kubectl, "configmap", "tierwise-team", namespace)
    assert before is not None
    apply(kubectl, namespace, tier("haiku"), policy("team", ["haiku"]))

    stalled = policy_condition(kubectl, namespace, "team", "Stalled", status="True")
    assert stalled["reason"] == "ConfigMapConflict"
    assert "ConfigMap tierwise-team" in stalled["message"]
    status = get(kubectl, "cascadepolicy", "team", namespace)
    ready = condition(status, "Ready")
    assert ready is not None and ready["status"] == "False"
    assert ready["reason"] == "ConfigMapConflict"
    assert "configMap" not in status["status"]
    eventually(
        lambda: any(
            e["reason"] == "ConfigMapConflict" and e["type"] == "Warning"
            for e in events_for(kubectl, namespace, "team")
        ),
        "a ConfigMapConflict Event",
    )
    # Several resyncs later, the team's ConfigMap is exactly as it was.
    injected = injected_pod_or_none(kubectl, namespace)
    after = get(kubectl, "configmap", "tierwise-team", namespace)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["metadata"].get("ownerReferences") is None
    assert after["metadata"]["labels"] == {"team": "payments"}
    assert after["data"] == theirs["data"]
    # A pod is not given someone else's ConfigMap as its router config.
    assert injected is None or sidecar(injected) is None

    # Once the team's ConfigMap is gone, the policy gets its own and the conflict is over.
    kubectl("delete", "configmap", "tierwise-team", namespace=namespace)
    policy_condition(kubectl, namespace, "team", "Ready", status="True")
    assert condition(get(kubectl, "cascadepolicy", "team", namespace), "Stalled") is None
    ours = get(kubectl, "configmap", "tierwise-team", namespace)
    assert ours is not None and ours["metadata"]["ownerReferences"][0]["kind"] == "CascadePolicy"


def injected_pod_or_none(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    import time

    time.sleep(5)  # more than two resyncs (--resync-seconds=2)
    return create_pod(kubectl, namespace, "conflicted")


def _evaluated_policy(name: str) -> dict[str, Any]:
    return policy(
        name,
        ["haiku"],
        evaluation={
            "dataset": {"configMapRef": {"name": "dataset", "key": "items.jsonl"}},
            "grader": {"type": "exact"},
            "routes": [{"name": "main"}],
            "gate": {"minQuality": 0.8, "minItems": 1},
            "onNewPolicy": "Evaluate",
        },
    )


def _dataset() -> dict[str, Any]:
    item = {"id": "1", "messages": [{"role": "user", "content": "hi"}], "expected": "hi"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "dataset"},
        "data": {"items.jsonl": json.dumps(item) + "\n"},
    }


def test_point2_an_eval_serviceaccount_tierwise_did_not_make_is_not_used(
    opted_in: str, kubectl: Kubectl
):
    namespace = opted_in
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "tierwise-eval", "labels": {"team": "payments"}},
    }
    kubectl("create", "-f", "-", input=json.dumps(account), namespace=namespace)
    before = get(kubectl, "serviceaccount", "tierwise-eval", namespace)
    apply(kubectl, namespace, _dataset(), tier("haiku"), _evaluated_policy("gated"))

    progressing = policy_condition(
        kubectl, namespace, "gated", "Progressing", reason="EvalNotStarted"
    )
    assert "ServiceAccount tierwise-eval" in progressing["message"]
    assert kubectl.get_json("jobs", namespace=namespace)["items"] == []
    after = get(kubectl, "serviceaccount", "tierwise-eval", namespace)
    assert after is not None and before is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_point2_a_configmap_with_the_eval_jobs_name_is_not_mounted_as_its_inputs(
    opted_in: str, kubectl: Kubectl
):
    namespace = opted_in
    apply(kubectl, namespace, _dataset(), tier("haiku"), _evaluated_policy("gated"))
    # The candidate's hash names the Job: learn it, then take the Job's name away.
    candidate = eventually(
        lambda: (
            (get(kubectl, "cascadepolicy", "gated", namespace) or {})
            .get("status", {})
            .get("candidateHash")
        ),
        "the candidate hash",
    )
    name = job_name("gated", candidate)
    inputs = eventually(lambda: get(kubectl, "configmap", name, namespace), "the eval's inputs")
    assert inputs["metadata"]["ownerReferences"][0]["kind"] == "Job"
    # Deleting the Job but orphaning its dependents leaves a ConfigMap of the Job's name that
    # no Job owns (as a team's own would be); the operator then starts the candidate's eval
    # again, and must not mount that ConfigMap as its inputs.
    kubectl("delete", "job", name, "--cascade=orphan", namespace=namespace)
    kubectl("label", "configmap", name, "team=payments", "--overwrite", namespace=namespace)
    before = get(kubectl, "configmap", name, namespace)
    assert before is not None and not before["metadata"].get("ownerReferences")

    rollout = eventually(
        lambda: (
            (r := get(kubectl, "cascadepolicy", "gated", namespace)["status"]["rollout"])
            and r["reason"] == "EvalNotStarted"
            and r
        ),
        "EvalNotStarted",
    )
    assert f"ConfigMap {name}" in rollout["message"]
    assert get(kubectl, "job", name, namespace) is None
    after = get(kubectl, "configmap", name, namespace)
    assert after is not None and not after["metadata"].get("ownerReferences")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


# -- 3. no secret in git or a ConfigMap ------------------------------------------------------


def cache_profile(name: str, redis: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "tierwise.dev/v1alpha1",
        "kind": "CacheProfile",
        "metadata": {"name": name},
        "spec": {"responseCache": {"enabled": True, "backend": "redis", "redis": redis}},
    }


def test_point3_a_redis_url_with_a_password_is_refused_pointing_at_the_secret_field(
    controlplane, kubectl: Kubectl, namespace: str
):
    for url in ("redis://:hunter2@redis.cache:6379/0", "rediss://app:hunter2@redis.cache:6380"):
        result = kubectl(
            "create",
            "-f",
            "-",
            input=json.dumps(cache_profile("inline", {"url": url})),
            namespace=namespace,
            check=False,
        )
        assert result.returncode != 0
        assert "redis.url must not hold a password" in result.stderr
        assert "redis.passwordSecretRef" in result.stderr and "redis.urlSecretRef" in result.stderr
    # A user name alone is no secret.
    kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps(cache_profile("user", {"url": "redis://app@redis.cache:6379"})),
        namespace=namespace,
    )


def test_point3_redis_credentials_reach_the_sidecar_from_secrets_not_the_configmap(
    opted_in: str, kubectl: Kubectl
):
    namespace = opted_in
    redis = {
        "url": "rediss://redis.cache:6380/0",
        "passwordSecretRef": {"name": "redis-auth", "key": "password"},
        "clientCertSecretRef": {"name": "redis-client-tls"},
    }
    apply(
        kubectl,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis-auth"},
            "stringData": {"password": "hunter2"},
        },
        tier("haiku"),
        cache_profile("shared-cache", redis),
        policy("cached", ["haiku"], cacheProfileRef={"name": "shared-cache"}),
    )
    config_map = eventually(
        lambda: get(kubectl, "configmap", "tierwise-cached", namespace), "the ConfigMap"
    )
    document = config_map["data"]["router-config.json"]
    assert "hunter2" not in document
    response_cache = json.loads(document)["cache"]["responseCache"]
    assert response_cache["redisURL"] == "rediss://redis.cache:6380/0"
    assert response_cache["redisPasswordEnv"] == "TIERWISE_REDIS_PASSWORD"
    assert response_cache["redisTLSDir"] == "/var/run/tierwise/redis-tls"

    pod = injected_pod(kubectl, namespace)
    router = sidecar(pod)
    assert router is not None
    env = {e["name"]: e.get("valueFrom") for e in router["env"]}
    assert env["TIERWISE_REDIS_PASSWORD"] == {
        "secretKeyRef": {"name": "redis-auth", "key": "password"}
    }
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "tierwise-redis-tls"]
    assert volume["secret"]["secretName"] == "redis-client-tls"
    assert {
        "name": "tierwise-redis-tls",
        "mountPath": "/var/run/tierwise/redis-tls",
        "readOnly": True,
    } in router["volumeMounts"]

    # The whole URL from a Secret: nothing of it in the ConfigMap either.
    redis = {"urlSecretRef": {"name": "redis-auth", "key": "url"}}
    apply(kubectl, namespace, cache_profile("shared-cache", redis))
    response_cache = eventually(
        lambda: (
            (
                rc := json.loads(
                    get(kubectl, "configmap", "tierwise-cached", namespace)["data"][
                        "router-config.json"
                    ]
                )["cache"]["responseCache"]
            ).get("redisURLEnv")
            and rc
        ),
        "the URL from its Secret",
    )
    assert response_cache["redisURL"] is None
    assert response_cache["redisURLEnv"] == "TIERWISE_REDIS_URL"


# -- 5. names that cannot work are refused up front ------------------------------------------


def test_point5_a_policy_name_over_63_characters_is_refused_by_the_api_server(
    controlplane, kubectl: Kubectl, namespace: str
):
    long_name = "p" * 64
    result = kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps(policy(long_name, ["haiku"])),
        namespace=namespace,
        check=False,
    )
    assert result.returncode != 0
    assert "metadata.name" in result.stderr and "63 characters" in result.stderr
    # 63 is fine.
    kubectl("create", "-f", "-", input=json.dumps(policy("p" * 63, ["haiku"])), namespace=namespace)


# -- 4. one bad value cannot block every pod -------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "named"),
    [
        (
            '--router-resources={"requests": {"memory": "512Mi"}, "limits": {"memory": "256Mi"}}',
            "requests.memory 512Mi is more than limits.memory 256Mi",
        ),
        ('--router-resources={"requests": {"cpu": "half"}}', "requests.cpu: 'half'"),
        ("--eval-pod-label=bad key=x", "'bad key' is not a label key"),
        ("--eval-pod-label=mesh=not a value", "mesh='not a value': not a label value"),
        ("--eval-service-account=Eval_Runner", "--eval-service-account='Eval_Runner'"),
    ],
)
def test_point4_a_value_the_api_server_would_refuse_stops_the_operator_naming_the_flag(
    injecting_operator, operator_kubeconfig_for_start, tmp_path, flag: str, named: str
):
    process = OperatorProcess(
        operator_kubeconfig_for_start, tmp_path / "operator.log", ["--webhook-port=0", flag]
    )
    with pytest.raises(RuntimeError, match=r"operator exited with [12]") as refused:
        process.start()
    process.stop()
    assert flag.split("=", 1)[0] in str(refused.value)
    assert named in str(refused.value)


def test_point4_the_webhook_injects_pods_the_api_server_accepts_with_chosen_resources(
    controlplane, kubectl: Kubectl, user_kubeconfig, namespace: str, tmp_path, injecting_operator
):
    # The running operator (default resources) steps aside for one with chosen resources.
    resources = {"requests": {"cpu": "20m", "memory": "100Mi"}, "limits": {"memory": "200M"}}
    injecting_operator.stop()
    args = [a for a in injecting_operator.extra_args if not a.startswith("--webhook-port")]
    process = OperatorProcess(
        injecting_operator.kubeconfig,
        tmp_path / "operator.log",
        [*args, f"--webhook-port={free_port()}", f"--router-resources={json.dumps(resources)}"],
    )
    process.start()
    try:
        kubectl("label", "namespace", namespace, "tierwise.dev/injection=enabled")
        apply(kubectl, namespace, tier("haiku"), policy("sized", ["haiku"]))
        router = sidecar(injected_pod(kubectl, namespace))
        assert router is not None
        assert router["resources"] == resources
    finally:
        process.stop()
        injecting_operator.start()


def namespaced_pod_lists(kubectl: Kubectl) -> float:
    """Namespaced LISTs of pods the API server has served (its own request counter)."""
    total = 0.0
    for line in kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if (
            line.startswith("apiserver_request_total{")
            and 'resource="pods"' in line
            and 'verb="LIST"' in line
            and 'scope="namespace"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def pods_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return ((get(kubectl, "cascadepolicy", name, namespace) or {}).get("status") or {}).get(
        "pods"
    ) or {}


def test_point10_pods_are_counted_from_a_watch_not_listed_on_every_resync(
    injecting_operator, kubectl: Kubectl, namespace: str
):
    apply(kubectl, namespace, tier("haiku"), policy("counted", ["haiku"]))
    for name in ("app-1", "app-2"):
        create_pod(kubectl, namespace, name)
    eventually(
        lambda: pods_status(kubectl, namespace, "counted").get("matching") == 2, "2 pods counted"
    )
    # The operator resyncs every 2 s here: 6 s is at least two resyncs, none lists a pod.
    # (The namespace controller lists the pods of a namespace it deletes: an earlier test's
    # namespace must be gone first.)
    eventually(
        lambda: (
            not any(
                n["status"].get("phase") == "Terminating"
                for n in kubectl.get_json("namespaces")["items"]
            )
        ),
        "earlier tests' namespaces deleted",
        timeout=120,
    )
    before = namespaced_pod_lists(kubectl)
    time.sleep(6)
    assert namespaced_pod_lists(kubectl) - before == 0
    # The counts still follow the pods (from the watch, at the next resync at the latest).
    create_pod(kubectl, namespace, "app-3")
    kubectl("delete", "pod", "app-1", "--wait=false", namespace=namespace)
    create_pod(kubectl, namespace, "app-4")
    eventually(
        lambda: pods_status(kubectl, namespace, "counted").get("matching") == 3,
        "the counts to follow the pods",
    )

"""The eval Job manifest."""

from __future__ import annotations

from tierwise.api import load_manifests
from tierwise.evals.job import JobSettings, job_manifests, job_name, owned_by
from tierwise.evals.plan import plan_for_policy, strongest_tier_config
from tierwise.render import Workspace


def test_job_name_fits_a_label_value():
    name = job_name("p" * 100, "sha256:0123456789abcdef")
    assert len(name) <= 63 and name.endswith("-eval-01234567")
    assert job_name("email-triage", "sha256:deadbeef00") == "email-triage-eval-deadbeef"


def test_job_manifest(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    workspace = Workspace.of(load_manifests([root / "examples" / "support-triage"]))
    policy = workspace.policies()[0]
    result = workspace.render(policy)
    plan = plan_for_policy(policy, {}, lambda ref: f"{ref.name}/{ref.key}").plan
    body = {
        "apiVersion": "tierwise.dev/v1alpha1",
        "kind": "CascadePolicy",
        "metadata": {"name": policy.name, "namespace": "team", "uid": "u-1"},
    }
    baseline = strongest_tier_config(result.document)
    settings = JobSettings(image="img:1", pod_labels={"mesh": "off"})
    job, inputs = job_manifests(
        body, plan, result.document, baseline, "strongest", result.key_envs,
        [("ds", "dataset.jsonl"), ("ds", "dataset.jsonl")], settings,
    )  # fmt: skip
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["activeDeadlineSeconds"] == 900 + 120
    assert job["spec"]["template"]["metadata"]["labels"]["mesh"] == "off"
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["image"] == "img:1" and container["command"] == ["tierwise", "eval"]
    assert all("secretKeyRef" in e["valueFrom"] for e in container["env"])
    assert len({e["name"] for e in container["env"]}) == len(container["env"])
    # A writable /tmp on the read-only root filesystem, for the batch cascade's files.
    (scratch,) = [v for v in pod["volumes"] if v["name"] == "scratch"]
    assert "emptyDir" in scratch and container["securityContext"]["readOnlyRootFilesystem"]
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]
    (projected,) = [v for v in pod["volumes"] if v["name"] == "datasets"]
    assert projected["projected"]["sources"] == [
        {
            "configMap": {
                "name": "ds",
                "items": [{"key": "dataset.jsonl", "path": "ds/dataset.jsonl"}],
            }
        }
    ]
    assert set(inputs["data"]) == {"plan.json", "candidate.json", "baseline.json"}
    owned = owned_by(inputs, {"metadata": {"name": job["metadata"]["name"], "uid": "j-1"}})
    assert owned["metadata"]["ownerReferences"][0]["uid"] == "j-1"


def test_eval_options_reach_the_reconciler_through_the_memo():
    import argparse

    import kopf

    from tierwise.controller import command, rollout
    from tierwise.controller.runtime import reconciler_of

    parser = argparse.ArgumentParser()
    command.configure(parser, environ={})
    args = parser.parse_args(
        ["--eval-image=registry.example/tierwise:9", "--eval-service-account=evals-only"]
    )
    memo = kopf.Memo(options=command.options_from(args))
    settings = reconciler_of(memo).evals
    assert settings.image == "registry.example/tierwise:9"
    assert settings.service_account == "evals-only"
    # Two operators in one process keep their own settings: nothing is module-global.
    assert reconciler_of(kopf.Memo()).evals == JobSettings()
    assert not hasattr(rollout, "configure")


def test_the_hash_label_is_the_config_hash_whatever_the_key_references():
    """`kubectl get jobs -l tierwise.dev/candidate-hash=<hash16>` finds the eval of the hash
    `kubectl get cascadepolicy` shows; the key references change the Job's name only."""
    from pathlib import Path

    from tierwise.controller.rollout_state import candidate_identity
    from tierwise.evals.job import HASH_LABEL, hash_hex

    root = Path(__file__).resolve().parents[2]
    workspace = Workspace.of(load_manifests([root / "examples" / "support-triage"]))
    policy = workspace.policies()[0]
    result = workspace.render(policy)
    plan = plan_for_policy(policy, {}, lambda ref: f"{ref.name}/{ref.key}").plan
    body = {
        "apiVersion": "tierwise.dev/v1alpha1",
        "kind": "CascadePolicy",
        "metadata": {"name": policy.name, "namespace": "team", "uid": "u-1"},
    }
    baseline = strongest_tier_config(result.document)
    config_hash = result.document["hash"]
    names = set()
    for keys in ("", "sha256:" + "ab" * 32):
        job, _ = job_manifests(
            body, plan, result.document, baseline, "strongest", result.key_envs, [],
            JobSettings(), identity=candidate_identity(config_hash, keys),
        )  # fmt: skip
        assert job["metadata"]["labels"][HASH_LABEL] == hash_hex(config_hash)[:16]
        names.add(job["metadata"]["name"])
    assert len(names) == 2

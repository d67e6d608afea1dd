import json
import shutil
from decimal import Decimal
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tierwise import API_VERSION
from tierwise.api import load_manifests, parse_resource
from tierwise.cli import main
from tierwise.pricing import Prices, Usage, cost_usd
from tierwise.render import (
    CACHE_PROFILE_NOT_FOUND,
    KEY_ENV_CONFLICT,
    PRICING_UNKNOWN,
    SCHEMA_VERSION,
    SIGNAL_UNSUPPORTED,
    TIER_NOT_FOUND,
    api_key_env,
    content_hash,
    dump_document,
    render_all,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "support-triage"


def tier(name, model="claude-haiku-4-5", **spec):
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelTier",
        "metadata": {"name": name},
        "spec": {"model": model, **spec},
    }


def policy(name="p", routes=None, **spec):
    routes = routes or [{"name": "triage", "steps": [{"tier": "haiku"}, {"tier": "sonnet"}]}]
    return {
        "apiVersion": API_VERSION,
        "kind": "CascadePolicy",
        "metadata": {"name": name},
        "spec": {"routes": routes, **spec},
    }


def render(*docs):
    return render_all(parse_resource(d) for d in docs)


def test_examples_render_one_document_per_policy(capsys):
    assert main(["render", "-f", str(EXAMPLES)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["schemaVersion"] == SCHEMA_VERSION
    assert [r["name"] for r in document["routes"]] == ["triage", "chat"]
    assert document["hash"] == content_hash(document)
    triage = document["routes"][0]
    assert [s["tier"] for s in triage["steps"]] == ["haiku", "sonnet"]
    assert {s["signal"] for s in triage["steps"][0]["escalateWhen"]} == {
        "stopReason",
        "invalidJSON",
        "jsonFieldBelow",
        "jsonFieldNotIn",
    }
    assert document["tiers"]["haiku"]["model"] == "claude-haiku-5-5"
    assert document["tiers"]["haiku"]["pricing"]["input"] == "0.1"
    assert document["fallback"] == {"tier": "opus", "on": ["overloaded"]}


def test_two_policies_print_two_documents(tmp_path, capsys):
    shutil.copytree(EXAMPLES, tmp_path / "ex" / "support-triage")
    second = (
        (tmp_path / "ex/support-triage/policy.yaml")
        .read_text()
        .replace("name: email-triage", "name: second")
    )
    (tmp_path / "ex/second.yaml").write_text(second)
    assert main(["render", "-f", str(tmp_path / "ex")]) == 0
    documents = json.loads(capsys.readouterr().out)
    assert sorted(d["policy"]["name"] for d in documents) == ["email-triage", "second"]


def test_missing_tier_exits_1_naming_policy_and_tier(tmp_path, capsys):
    shutil.copytree(EXAMPLES, tmp_path / "ex" / "support-triage")
    tiers = tmp_path / "ex/support-triage/tiers.yaml"
    tiers.write_text(tiers.read_text().split("---")[0])  # keep only haiku
    assert main(["render", "-f", str(tmp_path / "ex")]) == 1
    err = capsys.readouterr().err
    assert "CascadePolicy default/email-triage" in err
    assert "TierNotFound" in err and "'sonnet'" in err and "'opus'" in err


def test_render_ignores_other_kinds_and_reports_bad_files(tmp_path, capsys):
    (tmp_path / "deploy.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
    )
    assert main(["render", "-f", str(tmp_path)]) == 1
    assert "no CascadePolicy found" in capsys.readouterr().err
    assert main(["render", "-f", str(tmp_path / "missing.yaml")]) == 1
    assert "no such file or directory" in capsys.readouterr().err


def test_namespace_flag_places_objects_like_kubectl_apply(capsys):
    assert main(["render", "-f", str(EXAMPLES), "-n", "support"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"] == {
        "namespace": "support",
        "name": "email-triage",
    }


def test_problems_come_back_as_values():
    [(_, result)] = render(
        tier("haiku"),
        tier("mystery", model="claude-unknown-1"),
        policy(
            routes=[
                {"name": "a", "steps": [{"tier": "haiku"}, {"tier": "mystery"}, {"tier": "gone"}]}
            ],
            cacheProfileRef={"name": "nope"},
        ),
    )
    assert result.document is None
    assert {(p.reason, p.ref) for p in result.problems} == {
        (PRICING_UNKNOWN, "mystery"),
        (TIER_NOT_FOUND, "gone"),
        (CACHE_PROFILE_NOT_FOUND, "nope"),
    }


def test_no_key_ever_reaches_the_document_only_the_env_var_name():
    secret = {"name": "anthropic-key", "key": "token"}
    [(_, result)] = render(
        tier("haiku", apiKeySecretRef=secret), tier("sonnet", "claude-sonnet-5-5"), policy()
    )
    doc = result.document
    assert doc["tiers"]["haiku"]["apiKeyEnv"] == "TIERWISE_TIER_HAIKU_API_KEY"
    assert doc["tiers"]["sonnet"]["apiKeyEnv"] is None
    assert "anthropic-key" not in json.dumps(doc)
    assert [(k.env, k.secret_name, k.secret_key) for k in result.key_envs] == [
        ("TIERWISE_TIER_HAIKU_API_KEY", "anthropic-key", "token")
    ]


def test_api_key_env_names():
    assert api_key_env("claude-haiku-v2") == "TIERWISE_TIER_CLAUDE_HAIKU_V2_API_KEY"
    assert api_key_env("claude-haiku.v2") == "TIERWISE_TIER_CLAUDE_HAIKU.V2_API_KEY"


@given(st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?", fullmatch=True), st.data())
@settings(max_examples=300, deadline=None)
def test_point1_key_variables_are_unique_per_valid_tier_name(name, data):
    other = data.draw(st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?", fullmatch=True))
    assert (api_key_env(name) == api_key_env(other)) == (name == other)


def test_point1_tiers_sharing_a_key_variable_are_refused_naming_both():
    key = {"name": "k", "key": "api-key"}
    routes = [{"name": "r", "steps": [{"tier": "haiku_v2"}, {"tier": "haiku-v2"}]}]
    [(_, result)] = render(
        tier("haiku_v2", apiKeySecretRef=key),
        tier("haiku-v2", apiKeySecretRef=key),
        policy(routes=routes),
    )
    assert result.document is None
    [problem] = result.problems
    assert problem.reason == KEY_ENV_CONFLICT
    assert "'haiku_v2'" in problem.message and "'haiku-v2'" in problem.message


def test_hash_changes_with_what_moves_cost_and_only_with_it():
    base = render(tier("haiku"), tier("sonnet", "claude-sonnet-5-5"), policy())[0][1].document
    again = render(tier("sonnet", "claude-sonnet-5-5"), tier("haiku"), policy())[0][1].document
    assert base["hash"] == again["hash"]
    swapped = render(tier("haiku"), tier("sonnet", "claude-opus-5-5"), policy())[0][1].document
    repriced = render(
        tier(
            "haiku",
            pricing={"input": 0.9, "cacheWrite5m": 1.1, "cacheWrite1h": 1.8, "cacheRead": 0.09},
        ),
        tier("sonnet", "claude-sonnet-5-5"),
        policy(),
    )[0][1].document
    assert len({base["hash"], swapped["hash"], repriced["hash"]}) == 3


def test_counterfactual_tier_is_the_most_expensive_step():
    routes = [{"name": "a", "steps": [{"tier": "opus"}, {"tier": "haiku"}]}]
    [(_, result)] = render(tier("haiku"), tier("opus", "claude-opus-5-5"), policy(routes=routes))
    assert result.document["routes"][0]["counterfactualTier"] == "opus"


def test_prices_in_the_document_reprice_usage_exactly():
    [(_, result)] = render(tier("haiku"), tier("sonnet", "claude-sonnet-5-5"), policy())
    prices = Prices.from_document(
        json.loads(dump_document(result.document))["tiers"]["haiku"]["pricing"]
    )
    assert cost_usd(Usage(1_000_000, 1_000_000), prices) == Decimal("6.00")


def test_rendered_example_equals_cli_output(capsys):
    [(_, result)] = render_all(load_manifests([EXAMPLES]))
    main(["render", "-f", str(EXAMPLES)])
    assert capsys.readouterr().out == dump_document(result.document)


names = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
models = st.sampled_from(
    ["claude-haiku-4-5", "claude-sonnet-5-5", "claude-opus-5-5", "claude-sonnet-5-5"]
)
signals = st.one_of(
    st.just({"signal": "invalidJSON"}),
    st.builds(
        lambda v: {"signal": "stopReason", "values": v},
        st.lists(st.sampled_from(["max_tokens", "refusal"]), min_size=1, unique=True),
    ),
    st.builds(
        lambda t: {"signal": "jsonFieldBelow", "field": "confidence", "threshold": t},
        st.floats(0, 1).map(lambda f: round(f, 3)),
    ),
    st.builds(
        lambda p: {"signal": "regex", "pattern": p},
        st.sampled_from(["sorry", "(?i)unsure", r"\bdon't know\b"]),
    ),
)


@st.composite
def workspaces(draw):
    tier_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    tiers = [
        tier(n, draw(models), limits={"timeoutSeconds": draw(st.integers(1, 3600))})
        for n in tier_names
    ]
    route_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    routes = []
    for r in route_names:
        # A cascade uses each tier once, and its last step does not escalate.
        ladder = draw(st.lists(st.sampled_from(tier_names), min_size=1, max_size=3, unique=True))
        steps = [
            {
                "tier": t,
                "maxTokens": draw(st.integers(1, 4096)),
                "escalateWhen": draw(st.lists(signals, max_size=3)) if i < len(ladder) - 1 else [],
            }
            for i, t in enumerate(ladder)
        ]
        routes.append({"name": r, "steps": steps})
    return tiers, policy(routes=routes, defaultRoute=draw(st.sampled_from(route_names)))


@settings(max_examples=60, deadline=None)
@given(workspaces(), st.randoms())
def test_rendering_is_deterministic_complete_and_order_independent(workspace, random):
    tiers, pol = workspace
    [(_, first)] = render(*tiers, pol)
    shuffled = list(tiers)
    random.shuffle(shuffled)
    [(_, second)] = render(pol, *shuffled)
    assert first.ok and first.document == second.document
    doc = json.loads(dump_document(first.document))
    assert doc["hash"] == content_hash(doc)
    used = {s["tier"] for r in doc["routes"] for s in r["steps"]}
    assert used == set(doc["tiers"])
    for route in doc["routes"]:
        assert route["counterfactualTier"] in {s["tier"] for s in route["steps"]}
        assert f"tierwise/{route['name']}" in route["models"]


def test_render_warns_about_a_retiring_model_and_still_renders(tmp_path, capsys):
    shutil.copytree(EXAMPLES, tmp_path / "ex" / "support-triage")
    tiers = tmp_path / "ex/support-triage/tiers.yaml"
    tiers.write_text(tiers.read_text().replace("claude-sonnet-5-5", "claude-opus-4-1"))
    assert main(["render", "-f", str(tmp_path / "ex")]) == 0
    captured = capsys.readouterr()
    assert "warning: CascadePolicy default/email-triage: ModelTier 'sonnet'" in captured.err
    assert "'claude-opus-4-1' retired" in captured.err
    assert json.loads(captured.out)["tiers"]["sonnet"]["model"] == "claude-opus-4-1"


def test_render_with_a_price_catalog_file_and_a_bad_one(tmp_path, capsys):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "date: '2026-12-01'\nmodels:\n  claude-sonnet-5-5: {input: 1, output: 5,"
        " cacheWrite5m: 1.25, cacheWrite1h: 2, cacheRead: 0.05}\n"
    )
    assert main(["render", "-f", str(EXAMPLES), "--price-catalog", str(catalog)]) == 0
    pricing = json.loads(capsys.readouterr().out)["tiers"]["sonnet"]["pricing"]
    assert pricing["input"] == "1" and pricing["source"] == "file:catalog.yaml:2026-12-01"
    catalog.write_text("date: '2026-12-01'\nmodels:\n  claude-sonnet-5-5: {input: 1}\n")
    assert main(["render", "-f", str(EXAMPLES), "--price-catalog", str(catalog)]) == 1
    assert "models.claude-sonnet-5-5.output: required" in capsys.readouterr().err


def test_ambiguous_override_is_an_error_naming_the_field(tmp_path, capsys):
    shutil.copytree(EXAMPLES, tmp_path / "ex" / "support-triage")
    tiers = tmp_path / "ex/support-triage/tiers.yaml"
    text = tiers.read_text().replace(
        "  model: claude-opus-5-5\n", "  model: claude-opus-5-5\n  pricing:\n    input: 3\n"
    )
    tiers.write_text(text)
    assert main(["render", "-f", str(tmp_path / "ex")]) == 1
    err = capsys.readouterr().err
    assert "PricingAmbiguous" in err and "spec.pricing.cacheWrite5m" in err and "'opus'" in err


def test_endpoint_flag_and_env_point_every_tier_at_one_url_and_rehash(monkeypatch, capsys):
    assert main(["render", "-f", str(EXAMPLES)]) == 0
    original = json.loads(capsys.readouterr().out)
    assert main(["render", "-f", str(EXAMPLES), "--endpoint", "http://127.0.0.1:8100/"]) == 0
    moved = json.loads(capsys.readouterr().out)
    assert {t["endpoint"] for t in moved["tiers"].values()} == {"http://127.0.0.1:8100"}
    assert moved["hash"] != original["hash"] and moved["hash"] == content_hash(moved)
    assert {k: v for k, v in moved.items() if k not in ("tiers", "hash")} == {
        k: v for k, v in original.items() if k not in ("tiers", "hash")
    }
    monkeypatch.setenv("TIERWISE_ENDPOINT", "http://emulator:8090")
    assert main(["render", "-f", str(EXAMPLES), "-o", "hash"]) == 0
    by_env = capsys.readouterr().out.split("\t")[1].strip()
    assert by_env != original["hash"]
    monkeypatch.setenv("TIERWISE_ENDPOINT", "emulator:8090")
    assert main(["render", "-f", str(EXAMPLES)]) == 1
    assert "--endpoint: endpoint must be an http:// or https:// URL" in capsys.readouterr().err


def test_token_probability_signal_on_an_anthropic_tier_is_a_problem_naming_the_step():
    signal = {"signal": "answerProbabilityBelow", "field": "label", "threshold": 0.6}
    local = tier(
        "local",
        model="smollm2",
        provider="openai",
        endpoint="http://llama:8000",
        pricing={"input": 0, "output": 0},
    )
    on_anthropic = policy(
        routes=[
            {
                "name": "triage",
                "steps": [{"tier": "haiku", "escalateWhen": [signal]}, {"tier": "sonnet"}],
            }
        ]
    )
    [(_, refused)] = render(tier("haiku"), tier("sonnet", "claude-sonnet-4-6"), on_anthropic)
    assert refused.document is None
    [problem] = refused.problems
    assert (problem.reason, problem.ref) == (SIGNAL_UNSUPPORTED, "haiku")
    assert "route 'triage' step 0 escalates on answerProbabilityBelow" in problem.message
    on_local = policy(
        routes=[
            {
                "name": "triage",
                "steps": [{"tier": "local", "escalateWhen": [signal]}, {"tier": "sonnet"}],
            }
        ]
    )
    [(_, result)] = render(local, tier("sonnet", "claude-sonnet-4-6"), on_local)
    assert result.ok, result.problems
    rendered_tier = result.document["tiers"]["local"]
    assert rendered_tier["provider"] == "openai"
    assert rendered_tier["pricing"]["input"] == rendered_tier["pricing"]["cacheRead"] == "0"
    # The counterfactual is still the route's strongest tier.
    assert result.document["routes"][0]["counterfactualTier"] == "sonnet"

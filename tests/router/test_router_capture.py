"""Opt-in capture of live requests for datasets: redacted, sampled, in the eval's format."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from router_builder import SONNET_MODEL, config, route, step
from router_helpers import metric, metrics, sdk, user, wait_for

from tierwise.evals.dataset import parse_dataset
from tierwise.router.capture import CaptureSettings, parse_redactions

pytestmark = pytest.mark.timeout(60)

EMAILS = ["jane.doe@example.com", "billing+refunds@sub.acme.co.uk", "X_Y@corp-mail.io"]
PHONES = ["+44 20 7946 0958", "(555) 867-5309", "555.123.4567", "+1-202-555-0143"]
KEYS = [
    "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx",
    "sk-proj-0123456789abcdefghijkl",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "xoxb-123456789012-abcdefghijkl",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV",
    "b3f1c2d4e5a6978812ab34cd56ef7890aa11bb22",
]
PLANTED = EMAILS + PHONES + KEYS


def router_with_capture(make_router: Any, emu: Any, directory: Path, **settings: Any) -> Any:
    doc = config(emu.base_url, routes=[route("triage", [step("sonnet", 200)])])
    return make_router(doc, capture=CaptureSettings(directory, **{"rate": 1.0, **settings}))


def captured_text(directory: Path) -> str:
    return "".join(p.read_text() for p in sorted(directory.glob("capture-*.jsonl")))


def test_planted_emails_phones_and_keys_never_reach_the_capture_file(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    body_text = "Contact: " + "; ".join(PLANTED) + ". My invoice is wrong."
    answer = json.dumps({"label": "billing", "echo": " ".join(PLANTED)})
    emu.script(SONNET_MODEL, [{"text": answer}] * 2)
    router = router_with_capture(make_router, emu, tmp_path)
    client = sdk(router)
    client.messages.create(
        model="tierwise/triage",
        max_tokens=100,
        system=f"Customer record: {EMAILS[0]}, {PHONES[0]}, token {KEYS[0]}",
        messages=user(body_text),
    )
    with client.messages.stream(
        model="tierwise/triage", max_tokens=100, messages=user(f"again {body_text}")
    ) as stream:
        stream.until_done()
    wait_for(lambda: captured_text(tmp_path).count("\n") == 4)  # two requests, two lines each
    text = captured_text(tmp_path)
    for secret in PLANTED:
        assert secret not in text, secret
    for kind in ("email", "phone", "key"):
        assert f"[REDACTED:{kind}]" in text
    assert "My invoice is wrong." in text  # prose is kept
    # The items are the eval's format: they parse as a dataset (labels come later).
    dataset = parse_dataset(text, "capture")
    assert len(dataset.items) == 2 and dataset.items[0].system is not None
    assert (
        metric(metrics(router.metrics_url), "tierwise_capture_items_total", result="written") == 2
    )


def test_capture_is_sampled_honours_its_opt_out_header_and_stops_at_the_day_limit(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    router = router_with_capture(make_router, emu, tmp_path, max_bytes_per_day=1500)
    client = sdk(router)
    client.messages.create(
        model="tierwise/triage",
        max_tokens=50,
        messages=user("keep me out"),
        extra_headers={"x-tierwise-no-capture": "1"},
    )
    time.sleep(0.3)
    assert "keep me out" not in captured_text(tmp_path)
    for n in range(8):
        client.messages.create(model="tierwise/triage", max_tokens=50, messages=user(f"n{n}"))
    wait_for(
        lambda: (
            metric(metrics(router.metrics_url), "tierwise_capture_items_total", result="full") > 0
        )
    )
    assert sum(p.stat().st_size for p in tmp_path.glob("capture-*.jsonl")) <= 1500


def test_a_bad_redaction_rule_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="--capture-redact account: not a valid regular"):
        parse_redactions(["account=ACC-[0-9"])
    assert parse_redactions(["account=ACC-[0-9]{6}"])["account"] == "ACC-[0-9]{6}"


def test_captured_items_become_a_dataset_draft(emu: Any, make_router: Any, tmp_path: Path) -> None:
    labels = ["billing", "bug", "billing", "other"]
    mails = ["charged twice", "the app crashes", "invoice address wrong", "are you hiring"]
    emu.script(SONNET_MODEL, [{"text": json.dumps({"label": lab})} for lab in labels])
    capture_dir = tmp_path / "capture"
    router = router_with_capture(make_router, emu, capture_dir)
    client = sdk(router)
    for mail in mails:
        client.messages.create(model="tierwise/triage", max_tokens=50, messages=user(mail))
    # A repeat of the first request: one item in the draft.
    emu.script(SONNET_MODEL, [{"text": json.dumps({"label": "billing"})}])
    client.messages.create(model="tierwise/triage", max_tokens=50, messages=user(mails[0]))
    wait_for(lambda: captured_text(capture_dir).count("\n") == 10)
    out = tmp_path / "draft.jsonl"
    result = subprocess.run(
        [
            sys.executable, "-m", "tierwise.cli", "dataset", "draft",
            *map(str, capture_dir.glob("capture-*.jsonl")),
            "--route", "triage", "--label-from-answer", "label", "--out", str(out),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    dataset = parse_dataset(out.read_text(), "draft")
    found = {item.messages[0]["content"]: item.label for item in dataset.items}  # type: ignore[index]
    assert found == dict(zip(mails, labels, strict=True))
    empty = subprocess.run(
        [sys.executable, "-m", "tierwise.cli", "dataset", "draft", str(out), "--route", "chat"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert empty.returncode == 1 and "no captured items of route chat" in empty.stderr

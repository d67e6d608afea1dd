"""Point 16: the router's fast path (orjson, uvloop) ships, and the plain path still works.

Both variants run as real ``tierwise router`` processes in front of the emulator and serve
the same requests through the official SDK, buffered and streamed; each says at startup
which event loop and JSON library it runs on.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path
from typing import Any

import anthropic
import pytest
from router_builder import config, tier_env, triage_route
from router_helpers import CLIENT_KEY, router_process, user

pytestmark = pytest.mark.timeout(90)


def test_point16_the_fast_path_is_installed_with_the_package() -> None:
    # Default dependencies (no extra needed): a plain `pip install tierwise` and the image,
    # which installs the package's dependencies, have both.
    required = [
        re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]
        for line in importlib.metadata.requires("tierwise") or []
        if "extra ==" not in line
    ]
    assert {"orjson", "uvloop"} <= set(required), required
    assert importlib.util.find_spec("orjson") is not None
    assert importlib.util.find_spec("uvloop") is not None


@pytest.mark.parametrize(
    ("plain", "loop", "json_library"), [(False, "uvloop", "orjson"), (True, "asyncio", "json")]
)
def test_point16_both_paths_serve_the_same_answers(
    emu: Any, tmp_path: Path, plain: bool, loop: str, json_library: str
) -> None:
    doc = config(emu.base_url, [triage_route()])
    with router_process(doc, tmp_path, tier_env(), plain=plain) as router:
        client = anthropic.Anthropic(
            base_url=router.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=15
        )
        message = client.messages.create(
            model="tierwise/triage", max_tokens=50, messages=user("ünïcødé ✓ billing")
        )
        assert message.type == "message" and message.content
        with client.messages.stream(
            model="tierwise/triage", max_tokens=50, messages=user("stream this")
        ) as stream:
            final = stream.get_final_message()
        assert final.stop_reason is not None and final.usage.output_tokens > 0
        sent = [r.body for r in emu.recorded_requests() if r.path == "/v1/messages"]
        assert sent[0]["messages"] == user("ünïcødé ✓ billing")  # the same bytes either way
        log = router.log.read_text()
    assert f"event loop {loop}, json {json_library}" in log, log

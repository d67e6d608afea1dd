"""Run an Argo CD health.lua on an object, the way Argo CD does: ``obj`` global, returned table.

Argo CD embeds gopher-lua (Lua 5.1); the tests use Debian's reference ``lua5.1``
(``hack/install-lua.sh``). Named uniquely: test directories are not packages.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CUSTOMIZATIONS = REPO_ROOT / "argocd" / "resource_customizations" / "tierwise.dev"
KINDS = ("ModelTier", "CacheProfile", "CascadePolicy")


def lua_binary() -> str:
    found = shutil.which("lua5.1")
    if found is None:
        subprocess.run([str(REPO_ROOT / "hack/install-lua.sh")], check=True)
        found = shutil.which("lua5.1")
    assert found, "lua5.1 is not installed (hack/install-lua.sh)"
    return found


def to_lua(value: Any) -> str:
    """A Lua literal of a decoded JSON/YAML value (arrays 1-based, as Argo CD converts them)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON escapes are valid Lua 5.1 escapes for these strings
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, Mapping):
        return (
            "{" + ", ".join(f"[{json.dumps(str(k))}] = {to_lua(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"cannot convert {type(value).__name__} to Lua")


def health(script: Path, obj: Mapping[str, Any]) -> dict[str, str]:
    """{status, message} as Argo CD would read them from the script's result."""
    program = (
        f"obj = {to_lua(obj)}\n"
        f"local check = assert(loadfile({json.dumps(str(script))}))\n"
        "local hs = check()\n"
        'io.write(tostring(hs.status), "\\0", tostring(hs.message or ""))\n'
    )
    out = subprocess.run(
        [lua_binary(), "-"], input=program, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    status, message = out.stdout.split("\0", 1)
    return {"status": status, "message": message}

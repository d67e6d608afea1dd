#!/usr/bin/env python3
"""Regenerate the values table of charts/tierwise/README.md from values.yaml.

Each value is documented by a ``# -- text`` comment (continued on following ``#`` lines) right
above its key; the table lists key path, type, default and that text. ``--check`` exits 1 when
the README is out of date (the chart tests run it), without writing.

    hack/chart-readme.py [--check] [CHART_DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

START, END = "<!-- values:start -->", "<!-- values:end -->"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):")


def documented_keys(values_text: str) -> dict[str, str]:
    """Key path -> description, for every key preceded by a ``# --`` comment."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        match = _KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        if pending is not None:
            docs[".".join(k for _, k in stack)] = " ".join(pending)
            pending = None
    return docs


def _lookup(values: dict, path: str) -> object:
    node: object = values
    for part in path.split("."):
        assert isinstance(node, dict)
        node = node[part]
    return node


def _type(value: object) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}[
        type(value)
    ]


def table(chart: Path) -> str:
    text = (chart / "values.yaml").read_text()
    values = yaml.safe_load(text)
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for path, description in documented_keys(text).items():
        value = _lookup(values, path)
        default = json.dumps(value, separators=(",", ":"))
        text = description.replace("|", "\\|")
        rows.append(f"| `{path}` | {_type(value)} | `{default}` | {text} |")
    return "\n".join(rows)


def undocumented(chart: Path) -> list[str]:
    """Leaf keys of values.yaml without a description (every value must have one)."""
    text = (chart / "values.yaml").read_text()
    docs = documented_keys(text)
    missing: list[str] = []

    def walk(node: object, prefix: str) -> None:
        if prefix in docs:
            return
        if isinstance(node, dict) and node:
            for key, child in node.items():
                walk(child, f"{prefix}.{key}" if prefix else key)
        else:
            missing.append(prefix)

    walk(yaml.safe_load(text), "")
    return missing


def render(readme: str, chart: Path) -> str:
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table(chart)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    parser.add_argument(
        "chart", nargs="?", default=str(Path(__file__).parent.parent / "charts/tierwise")
    )
    args = parser.parse_args(argv)
    chart = Path(args.chart)
    readme_path = chart / "README.md"
    readme = readme_path.read_text()
    if START not in readme or END not in readme:
        print(f"{readme_path}: missing {START} / {END} markers", file=sys.stderr)
        return 1
    missing = undocumented(chart)
    if missing:
        print(f"values without a '# --' description: {', '.join(missing)}", file=sys.stderr)
        return 1
    updated = render(readme, chart)
    if args.check:
        if updated != readme:
            print(f"{readme_path} is stale: run hack/chart-readme.py", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())

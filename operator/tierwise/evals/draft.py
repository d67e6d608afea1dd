"""`tierwise dataset draft`: turn captured live requests into a dataset to label.

Reads the files the router's capture writes (``router.capture``: a ``# tierwise-capture``
comment with the route and production's answer, then the eval item), keeps one route's
items, drops duplicates (``Dataset.distinct``), takes a deterministic sample
(``Dataset.sample``) and writes a JSONL draft in the eval's item format. With
``--label-from-answer FIELD`` each item's ``label`` is proposed from production's answer
(the JSON field), to be checked by a person: production is what the candidate is compared
with, not the truth. Items stay unlabelled otherwise; ``tierwise eval`` needs labels.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from tierwise.evals.dataset import DatasetError, Item, parse_dataset
from tierwise.evals.graders import json_field

COMMENT_PREFIX = "# tierwise-capture "  # as router.capture writes it


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else ""
    sub = parser.add_subparsers(dest="action", required=True)
    draft = sub.add_parser("draft", help="captured requests -> a dataset draft (JSONL)")
    draft.add_argument("captures", nargs="+", type=Path, help="capture files (capture-*.jsonl)")
    draft.add_argument("--route", required=True, help="the route whose requests to keep")
    draft.add_argument("--sample", type=int, metavar="N", help="at most N items (deterministic)")
    draft.add_argument(
        "--label-from-answer",
        metavar="FIELD",
        help="propose each label from production's answer (a dot path of its JSON)",
    )
    draft.add_argument("--out", type=Path, help="write here (default: standard output)")


def captured(lines: Iterable[str], route: str) -> Iterator[tuple[dict[str, Any], str]]:
    """(item, production's answer) of ``route`` from a capture file's lines."""
    note: dict[str, Any] | None = None
    for line in lines:
        if line.startswith(COMMENT_PREFIX):
            try:
                note = json.loads(line[len(COMMENT_PREFIX) :])
            except ValueError:
                note = None
            continue
        if not line.strip() or line.startswith("#"):
            continue
        if note is not None and note.get("route") == route:
            try:
                item = json.loads(line)
            except ValueError:
                note = None
                continue
            if isinstance(item, dict):
                yield item, str(note.get("answer") or "")
        note = None


def draft(paths: Iterable[Path], route: str, sample: int | None, field: str | None) -> str:
    items: list[dict[str, Any]] = []
    answers: dict[str, str] = {}
    for path in paths:
        for item, answer in captured(path.read_text(encoding="utf-8").splitlines(), route):
            key = str(item.get("id"))
            if key in answers:  # the same request again (its id is its content's digest)
                continue
            items.append(item)
            answers[key] = answer
    text = "\n".join(json.dumps(i, ensure_ascii=False) for i in items)
    dataset = parse_dataset(text, f"captured items of route {route}") if items else None
    if dataset is None:
        return ""
    distinct, _ = dataset.distinct()
    chosen = distinct.sample(sample)
    lines = []
    for item in chosen.items:
        if field is not None:
            proposed = json_field(answers.get(item.id, ""), field)
            if isinstance(proposed, (str, int, float)) and not isinstance(proposed, bool):
                item = replace(item, label=str(proposed))
        lines.append(json.dumps(_document(item), ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


def _document(item: Item) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": item.id}
    if item.messages is not None:
        doc["messages"] = list(item.messages)
    else:
        doc["input"] = item.input
    if item.system is not None:
        doc["system"] = item.system
    if item.label is not None:
        doc["label"] = item.label
    doc["maxTokens"] = item.max_tokens
    return doc


def run(args: argparse.Namespace) -> int:
    try:
        text = draft(args.captures, args.route, args.sample, args.label_from_answer)
    except (OSError, DatasetError) as exc:
        print(f"tierwise dataset draft: {exc}", file=sys.stderr)
        return 2
    if not text:
        print(f"tierwise dataset draft: no captured items of route {args.route}", file=sys.stderr)
        return 1
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"{text.count(chr(10))} items written to {args.out}", file=sys.stderr)
    return 0

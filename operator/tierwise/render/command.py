"""`tierwise render`: print router configs from local manifests, no cluster needed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path

import yaml

from tierwise.api import SpecError, load_manifests
from tierwise.pricing import BUILTIN, CatalogError, PriceCatalog, parse_catalog
from tierwise.render.document import with_endpoint
from tierwise.render.workspace import render_all
from tierwise.routerconfig import dump_document


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Read ModelTier, CacheProfile and CascadePolicy manifests and print the router config "
        "document of each CascadePolicy, exactly as the operator would write it to the "
        "policy's ConfigMap. Exits 1, naming the policy and the missing reference, when a "
        "policy does not resolve. Other kinds in the files are ignored, so a whole GitOps "
        "directory can be given."
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="paths",
        action="append",
        required=True,
        metavar="PATH",
        help="manifest file or directory (recursive, multi-document YAML); repeatable",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default="default",
        help="namespace of objects that set none, as with kubectl apply -n (default: default)",
    )
    parser.add_argument(
        "--policy",
        metavar="[NAMESPACE/]NAME",
        help="render only this CascadePolicy",
    )
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        default=os.environ.get("TIERWISE_ENDPOINT") or None,
        help="send every tier to this Messages API base URL instead of its own, e.g. a local "
        "`tierwise emulator` (default: $TIERWISE_ENDPOINT); the hash is recomputed",
    )
    parser.add_argument(
        "--price-catalog",
        metavar="FILE",
        help="YAML/JSON price catalog over the built-in one, in the format of the operator's "
        "price-catalog ConfigMap (see docs/pricing.md)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=["json", "hash"],
        default="json",
        help="json: the documents (one JSON object per policy, in a list when several); "
        "hash: one line per policy with its config hash",
    )


def load_catalog_file(path: str | None) -> PriceCatalog:
    """The built-in catalog, overlaid with a price-catalog file when one is given."""
    if not path:
        return BUILTIN
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return BUILTIN.overlay(parse_catalog(doc, source=f"file:{Path(path).name}"))


def run(args: argparse.Namespace) -> int:
    try:
        catalog = load_catalog_file(args.price_catalog)
        resources = load_manifests(args.paths, default_namespace=args.namespace)
        results = render_all(resources, catalog=catalog, today=date.today())
    except (SpecError, CatalogError, OSError, ValueError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.policy:
        results = [(p, r) for p, r in results if args.policy in (p.name, f"{p.namespace}/{p.name}")]
    if not results:
        what = f"CascadePolicy {args.policy!r}" if args.policy else "CascadePolicy"
        print(f"error: no {what} found in {', '.join(args.paths)}", file=sys.stderr)
        return 1
    failed = False
    for policy, result in results:
        for warning in result.warnings:
            print(
                f"warning: CascadePolicy {policy.namespace}/{policy.name}: {warning}",
                file=sys.stderr,
            )
        for problem in result.problems:
            failed = True
            print(
                f"error: CascadePolicy {policy.namespace}/{policy.name}: {problem.reason}: {problem.message}",
                file=sys.stderr,
            )
    if failed:
        return 1
    try:
        documents = [
            with_endpoint(r.config, args.endpoint).to_document()  # type: ignore[arg-type]
            if args.endpoint
            else r.document
            for _, r in results
        ]
    except ValueError as exc:
        print(f"error: --endpoint: {exc}", file=sys.stderr)
        return 1
    if args.output == "hash":
        for (policy, _), document in zip(results, documents, strict=True):
            print(f"{policy.namespace}/{policy.name}\t{document['hash']}")  # type: ignore[index]
    elif len(documents) == 1:
        sys.stdout.write(dump_document(documents[0]))  # type: ignore[arg-type]
    else:
        sys.stdout.write(json.dumps(documents, sort_keys=True, indent=2, ensure_ascii=False) + "\n")
    return 0

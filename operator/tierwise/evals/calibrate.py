"""`tierwise calibrate`: sweep a route's confidence thresholds, propose the cheapest safe one.

Items are split (stably, by id) into a tuning part and a held-out part. Every threshold of
the sweep runs the route's real cascade on the tuning items; the proposal is the cheapest
setting whose quality interval's lower bound meets ``--target`` there, and it is then
confirmed on the held-out items, which played no part in choosing it, so the reported
figure is not fitted to itself. It is also measured on a fresh resample (another random
half of the items, drawn with ``--resample-seed``), to show how much the figure moves with
the draw. The patch is offered only when the held-out check meets the target.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from tierwise.evals.command import EXIT_BAD_INPUT
from tierwise.render import content_hash

DEFAULT_THRESHOLDS = [round(i * 0.05, 2) for i in range(21)]
# The signals with a threshold to sweep: the answer's self-reported confidence, and the
# model's own token probability (a tier with provider openai).
THRESHOLD_SIGNALS = ("jsonFieldBelow", "answerProbabilityBelow")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Sweep the jsonFieldBelow (e.g. confidence) or answerProbabilityBelow (token "
        "probability) thresholds of one route over a labelled "
        "dataset, print the cost/quality frontier, and propose the cheapest threshold whose "
        "95%% quality interval meets --target on held-out items, with the patch to apply. "
        "Exit status: 0 a threshold was found and confirmed, 1 none meets the target, 2 bad input."
    )
    parser.add_argument("-f", "--filename", action="append", metavar="PATH", required=True,
                        help="manifest file or directory, repeatable")  # fmt: skip
    parser.add_argument(
        "--policy", metavar="NAME", help="the CascadePolicy (default: the only one)"
    )
    parser.add_argument("--route", metavar="NAME", help="the route (default: the first evaluated)")
    parser.add_argument("--dataset", metavar="FILE", help="JSONL dataset (default: the policy's)")
    parser.add_argument("--target", type=float, default=0.85,
                        help="lowest acceptable lower bound of the quality interval (default 0.85)")  # fmt: skip
    parser.add_argument("--held-out", type=float, default=0.5, metavar="FRACTION",
                        help="share of items kept out of the sweep to confirm it (default 0.5)")  # fmt: skip
    parser.add_argument("--signal", choices=THRESHOLD_SIGNALS,
                        help="sweep only this signal's thresholds (default: every threshold signal)")  # fmt: skip
    parser.add_argument("--resample-seed", default="resample-1", metavar="SEED",
                        help="seed of the fresh resample the proposal is also measured on")  # fmt: skip
    parser.add_argument("--thresholds", metavar="LIST",
                        help="comma-separated thresholds to try (default 0, 0.05, ..., 1)")  # fmt: skip
    parser.add_argument(
        "--emulator", action="store_true", help="answer from the in-process emulator"
    )
    parser.add_argument("--seed", type=int, default=0, help="emulator seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


@dataclass(frozen=True)
class Point:
    threshold: float
    quality: Any  # Interval | None
    cost_per_item: Decimal | None
    escalation_rate: float | None
    items: int


def run(args: argparse.Namespace) -> int:
    from tierwise.api import SpecError
    from tierwise.evals.dataset import DatasetError
    from tierwise.evals.local import InputError

    try:
        return _run(args)
    except (InputError, DatasetError, SpecError, ValueError) as exc:
        print(f"tierwise calibrate: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _thresholds(text: str | None) -> list[float]:
    if not text:
        return DEFAULT_THRESHOLDS
    values = sorted({float(v) for v in text.split(",") if v.strip()})
    if not values or any(not 0 <= v <= 1 for v in values):
        raise ValueError("--thresholds must be numbers between 0 and 1")
    return values


def _run(args: argparse.Namespace) -> int:
    from tierwise.evals.local import InputError, check_paths, local_evals

    if not 0 < args.held_out < 1:
        raise InputError("--held-out must be between 0 and 1")
    check_paths(args.filename)
    routes = [args.route] if args.route else None
    evals = local_evals(args.filename, policy=args.policy, routes=routes, dataset_file=args.dataset)
    if len(evals) > 1:
        names = ", ".join(e.policy.name for e in evals)
        raise InputError(f"several policies have spec.evaluation ({names}); pick one with --policy")
    (found,) = evals
    route = found.plan.routes[0]
    kinds = (args.signal,) if getattr(args, "signal", None) else THRESHOLD_SIGNALS
    positions = threshold_positions(found.candidate, route.name, kinds)
    if not positions:
        names = " or ".join(kinds)
        raise InputError(f"route {route.name!r} has no {names} signal to calibrate")
    # One copy of each item: a duplicate on both sides of the split would leak the tuning
    # items into the held-out check.
    dataset, _ = found.datasets[route.name].distinct()
    tuning, held_out = dataset.split(args.held_out)
    if not tuning.items or not held_out.items:
        raise InputError("the dataset is too small to split into tuning and held-out items")
    thresholds = _thresholds(args.thresholds)
    plan = replace(found.plan, routes=(route,))
    _, resample = dataset.split(args.held_out, seed=f"resample:{args.resample_seed}")
    points, confirmed = asyncio.run(
        _sweep(
            args,
            plan,
            found.candidate,
            route.name,
            positions,
            tuning,
            {"heldOut": held_out, "resample": resample},
            thresholds,
        )
    )
    choice = choose(points, args.target)
    spec_paths = [f"/spec/routes/{r}/steps/{s}/escalateWhen/{k}/threshold" for r, s, k in positions]
    result = {
        "policy": found.policy.name,
        "route": route.name,
        "target": args.target,
        "tuningItems": len(tuning.items),
        "heldOutItems": len(held_out.items),
        "frontier": [_point_json(p) for p in points],
        "choice": None if choice is None else _point_json(choice),
        "resampleItems": len(resample.items),
        "heldOut": None,
        "resample": None,
        "patch": None,
    }
    held = fresh = None
    if choice is not None:
        held, fresh = confirmed["heldOut"], confirmed["resample"]
        result["heldOut"], result["resample"] = _point_json(held), _point_json(fresh)
    meets = held is not None and held.quality is not None and held.quality.low >= args.target
    result["meetsTarget"] = meets
    result["resampleMeetsTarget"] = (
        fresh is not None and fresh.quality is not None and fresh.quality.low >= args.target
    )
    if meets and choice is not None:  # never a patch the held-out items did not confirm
        result["patch"] = [
            {"op": "replace", "path": path, "value": choice.threshold} for path in spec_paths
        ]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_text(result, points, choice, held, fresh, found.policy))
    return 0 if meets else 1


def threshold_positions(
    document: Mapping[str, Any], route: str, kinds: Sequence[str] = THRESHOLD_SIGNALS
) -> list[tuple[int, int, int]]:
    """(route, step, signal) indexes of the route's threshold signals of ``kinds``."""
    found = []
    for r, doc_route in enumerate(document["routes"]):
        if doc_route["name"] != route:
            continue
        for s, step in enumerate(doc_route["steps"]):
            for k, signal in enumerate(step.get("escalateWhen") or []):
                if signal.get("signal") in kinds:
                    found.append((r, s, k))
    return found


def with_threshold(
    document: Mapping[str, Any], positions: Sequence[tuple[int, int, int]], value: float
) -> dict[str, Any]:
    doc = copy.deepcopy(dict(document))
    for r, s, k in positions:
        doc["routes"][r]["steps"][s]["escalateWhen"][k]["threshold"] = str(value)
    doc["hash"] = content_hash(doc)
    return doc


def choose(points: Sequence[Point], target: float) -> Point | None:
    """The cheapest point whose lower bound meets ``target`` (ties: the higher threshold)."""
    good = [p for p in points if p.quality is not None and p.quality.low >= target]
    good = [p for p in good if p.cost_per_item is not None]
    if not good:
        return None
    return min(good, key=lambda p: (p.cost_per_item, -p.threshold))


async def _sweep(
    args: argparse.Namespace,
    plan: Any,
    candidate: Mapping[str, Any],
    route: str,
    positions: Sequence[tuple[int, int, int]],
    tuning: Any,
    checks: Mapping[str, Any],
    thresholds: Sequence[float],
) -> tuple[list[Point], dict[str, Point]]:
    """The sweep on ``tuning``, and the chosen threshold measured on each of ``checks``."""
    from tierwise.evals.local import (
        emulator_env,
        maybe_emulator,
        plan_with_endpoint,
        point_at,
        route_task,
    )
    from tierwise.evals.runner import run_eval

    tasks = [route_task(plan, candidate, route, d) for d in (tuning, *checks.values())]
    async with maybe_emulator(args.emulator, tasks, 0.0, args.seed) as url:
        if url is not None:
            candidate = point_at(candidate, url)
            plan = plan_with_endpoint(plan, url)
        env = emulator_env(candidate, {"tiers": plan.judge_tiers}) if url else dict(os.environ)

        async def measure(value: float, dataset: Any) -> Point:
            doc = with_threshold(candidate, positions, value)
            report = await run_eval(plan, doc, None, {route: dataset}, env, baseline_kind="none")
            route_report = report.routes[0]
            measured, run = route_report.measured(), route_report.candidate_set
            return Point(
                value, measured.quality, run.cost_per_item, run.escalation_rate, measured.counted
            )

        points = [await measure(value, tuning) for value in thresholds]
        choice = choose(points, args.target)
        confirmed = {}
        if choice is not None:
            for name, items in checks.items():
                confirmed[name] = await measure(choice.threshold, items)
    return points, confirmed


def _point_json(point: Point) -> dict[str, Any]:
    q = point.quality
    return {
        "threshold": point.threshold,
        "quality": None if q is None else [round(q.estimate, 4), round(q.low, 4), round(q.high, 4)],
        "costPerItem": None if point.cost_per_item is None else f"{point.cost_per_item:.6f}",
        "escalationRate": None
        if point.escalation_rate is None
        else round(point.escalation_rate, 4),
        "items": point.items,
    }


def pareto(points: Sequence[Point]) -> set[float]:
    """Thresholds no other point beats on both cost (lower) and quality (higher mean)."""
    frontier = set()
    for p in points:
        if p.quality is None or p.cost_per_item is None:
            continue
        dominated = any(
            o is not p
            and o.quality is not None
            and o.cost_per_item is not None
            and o.cost_per_item <= p.cost_per_item
            and o.quality.estimate >= p.quality.estimate
            and (o.cost_per_item < p.cost_per_item or o.quality.estimate > p.quality.estimate)
            for o in points
        )
        if not dominated:
            frontier.add(p.threshold)
    return frontier


def _text(result: Mapping[str, Any], points: Sequence[Point], choice: Point | None,
          held: Point | None, fresh: Point | None, policy: Any) -> str:  # fmt: skip
    lines = [
        f"calibrating route {result['route']} of CascadePolicy {policy.name}: "
        f"{result['tuningItems']} tuning items, {result['heldOutItems']} held out, "
        f"target: quality lower bound >= {result['target']:.3f}",
        "",
        f"  {'threshold':>9}  {'quality [95% interval]':<24}{'cost/item':>11}  {'escalated':>9}",
    ]
    on_frontier = pareto(points)
    for p in points:
        q = "-" if p.quality is None else p.quality.format()
        cost = "-" if p.cost_per_item is None else f"${p.cost_per_item:.6f}"
        esc = "-" if p.escalation_rate is None else f"{p.escalation_rate:.1%}"
        marks = ("*" if p.threshold in on_frontier else " ") + (
            "<" if choice is not None and p is choice else " "
        )
        lines.append(f"{marks}{p.threshold:>9.2f}  {q:<24}{cost:>11}  {esc:>9}")
    lines += ["", "  * on the cost/quality frontier   < proposed", ""]
    if choice is None or held is None or fresh is None:
        lines.append(
            f"no threshold reaches a quality lower bound of {result['target']:.3f} on the tuning items"
        )
        return "\n".join(lines)
    lines.append(f"proposed threshold {choice.threshold:.2f}:")
    for label, point, meets in (
        (f"held-out ({result['heldOutItems']} items)", held, result["meetsTarget"]),
        (f"fresh resample ({result['resampleItems']} items)", fresh, result["resampleMeetsTarget"]),
    ):
        quality = point.quality.format() if point.quality else "-"
        cost = "-" if point.cost_per_item is None else f"${point.cost_per_item:.6f}"
        verdict = "meets" if meets else "does NOT meet"
        lines.append(f"  {label:<30} quality {quality} {verdict} the target; cost {cost} per item")
    if not result["meetsTarget"]:
        lines += [
            "",
            "not confirmed: the held-out items do not meet the target, so no patch is proposed "
            "(more items, or a higher --target on the tuning items, give a safer proposal)",
        ]
        return "\n".join(lines)
    patch = json.dumps(result["patch"])
    lines += [
        "",
        "apply with:",
        f"  kubectl -n {policy.namespace} patch cascadepolicy {policy.name} --type=json -p '{patch}'",
    ]
    return "\n".join(lines)

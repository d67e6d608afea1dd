"""`tierwise eval`: gate a change on quality, on a laptop, in CI, or in the eval Job.

Exit status: 0 the gate passes (Promoted), 1 it fails (Rejected), 2 bad input (nothing could
be read or graded: the dataset, grader or manifests are wrong, not the config), 3
inconclusive. Several policies: bad input, then fail, then inconclusive wins. In the Job (``--plan``) the decision goes to the termination message and
the exit status is 0 whenever a decision was made, so a failed Job always means "the eval
could not run".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

EXIT = {"Promoted": 0, "Rejected": 1, "Inconclusive": 3}
EXIT_BAD_INPUT = 2
# Which exit status wins over several policies: the most actionable first.
_PRECEDENCE = (EXIT_BAD_INPUT, EXIT["Rejected"], EXIT["Inconclusive"], EXIT["Promoted"])


def exit_status(decision: Any) -> int:
    """The exit status of one decision (``gate.Decision``)."""
    return EXIT_BAD_INPUT if decision.bad_input else EXIT[decision.outcome]


def worst(statuses: list[int]) -> int:
    return min(statuses, key=_PRECEDENCE.index)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Replay each evaluated route's labelled dataset through the candidate config (the "
        "manifests as they are now) and a baseline (--baseline manifests, else each route's "
        "strongest tier), grade the answers, and apply the policy's spec.evaluation gate. "
        "Prints quality with its 95%% interval, cost per item and saving, escalation rate, "
        "latency and a confusion table per route. Exit status: 0 the gate passes, 1 it fails, "
        "2 bad input (nothing could be read or graded), 3 inconclusive."
    )
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        metavar="PATH",
        help="manifest file or directory (recursive), repeatable; ConfigMaps in them hold datasets",
    )
    parser.add_argument("--policy", metavar="NAME", help="only this CascadePolicy")
    parser.add_argument(
        "--route", action="append", metavar="NAME", help="only this evaluated route, repeatable"
    )
    parser.add_argument(
        "--dataset",
        metavar="FILE",
        help="JSONL dataset for every evaluated route (instead of the ConfigMap)",
    )
    parser.add_argument(
        "--baseline",
        action="append",
        metavar="PATH",
        help="manifests of the baseline (e.g. the main branch's), repeatable; default: each route's strongest tier",
    )
    parser.add_argument(
        "--emulator",
        action="store_true",
        help="answer from an in-process model emulator loaded with the datasets (no API key, no network)",
    )
    parser.add_argument(
        "--emulator-latency",
        type=float,
        default=0.0,
        metavar="SCALE",
        help="emulator latency as a multiple of the models' realistic latency (default 0: instant)",
    )
    parser.add_argument("--seed", type=int, default=0, help="emulator seed (default 0)")
    parser.add_argument("--concurrency", type=int, help="override spec.evaluation.concurrency")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    job = parser.add_argument_group("in the eval Job (arguments written by the operator)")
    job.add_argument("--plan", metavar="FILE", help="eval plan JSON")
    job.add_argument("--candidate", metavar="FILE", help="candidate router config JSON")
    job.add_argument("--baseline-config", metavar="FILE", help="baseline router config JSON")
    job.add_argument(
        "--baseline-kind",
        choices=["promoted", "strongest"],
        default="promoted",
        help="what the baseline config is (for the report)",
    )
    job.add_argument(
        "--datasets-dir",
        metavar="DIR",
        default=".",
        help="where relative dataset paths of the plan are resolved (the mounted ConfigMaps)",
    )
    job.add_argument(
        "--termination-log",
        metavar="FILE",
        default=None,
        help="write the summary JSON here (the container's terminationMessagePath)",
    )


def run(args: argparse.Namespace) -> int:
    from tierwise.api import SpecError
    from tierwise.evals.dataset import DatasetError
    from tierwise.evals.local import InputError
    from tierwise.routerconfig import ConfigError

    if args.concurrency is not None and args.concurrency < 1:
        return _bad("--concurrency must be at least 1")
    try:
        if args.plan:
            return _run_job(args)
        if not args.filename:
            return _bad("give manifests with -f DIR (or --plan in the eval Job)")
        return _run_local(args)
    except (InputError, DatasetError, SpecError, ConfigError) as exc:
        if args.plan and args.termination_log:
            _write_termination(
                args.termination_log,
                {"decision": "Inconclusive", "badInput": True, "error": str(exc)},
            )
        return _bad(str(exc))


def _bad(message: str) -> int:
    print(f"tierwise eval: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None
    state = {"last": 0.0}

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - state["last"] >= 2.0:
            state["last"] = now
            print(f"  {done}/{total} answers", file=sys.stderr, flush=True)

    return report


def _run_local(args: argparse.Namespace) -> int:
    from tierwise.evals.local import check_paths, local_evals

    check_paths(args.filename + (args.baseline or []))
    if args.dataset and not Path(args.dataset).is_file():
        return _bad(f"no such dataset file: {args.dataset}")
    evals = local_evals(
        args.filename, policy=args.policy, routes=args.route, dataset_file=args.dataset
    )
    reports = asyncio.run(_local_reports(args, evals))
    from tierwise.evals.report import full_json, text_report

    if args.json:
        print(json.dumps([full_json(r) for r in reports], indent=2))
    else:
        print("\n".join(text_report(r) for r in reports), end="")
    return worst([exit_status(r.decision) for r in reports])


async def _local_reports(args: argparse.Namespace, evals: list[Any]) -> list[Any]:
    from dataclasses import replace

    from tierwise.evals.local import (
        baseline_document,
        emulator_env,
        emulator_tasks,
        maybe_emulator,
        plan_with_endpoint,
        point_at,
    )
    from tierwise.evals.plan import strongest_tier_config
    from tierwise.evals.runner import run_eval

    reports = []
    notes: list[str] = []  # what the emulator could not follow, said beside the verdict
    async with maybe_emulator(
        args.emulator, emulator_tasks(evals), args.emulator_latency, args.seed, notes=notes
    ) as url:
        for item in evals:
            plan = item.plan
            if args.concurrency:
                plan = replace(plan, concurrency=args.concurrency)
            candidate = item.candidate
            if args.baseline:
                baseline, kind = baseline_document(args.baseline, item.policy), "promoted"
            else:
                baseline, kind = strongest_tier_config(candidate), "strongest"
            original_baseline = baseline
            if url is not None:
                candidate, baseline = point_at(candidate, url), point_at(baseline, url)
                plan = plan_with_endpoint(plan, url)
            env = (
                emulator_env(candidate, baseline, {"tiers": plan.judge_tiers})
                if url
                else dict(os.environ)
            )
            if not args.quiet:
                total = sum(len(d.items) for d in item.datasets.values())
                print(
                    f"evaluating CascadePolicy {item.policy.name}: {total} items, candidate and "
                    f"baseline, concurrency {plan.concurrency}",
                    file=sys.stderr,
                )
            report = await run_eval(
                plan,
                candidate,
                baseline,
                item.datasets,
                env,
                baseline_kind=kind,
                progress=_progress(not args.quiet),
            )
            if url is not None:  # report the manifests' hashes, not the emulator-pointed ones
                report.candidate_hash = item.candidate["hash"]
                report.baseline_hash = original_baseline["hash"]
            reports.append(report)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for report in reports:
        report.notes.extend(notes)
    return reports


def _run_job(args: argparse.Namespace) -> int:
    from tierwise.evals.dataset import load_dataset
    from tierwise.evals.local import InputError
    from tierwise.evals.plan import EvalPlan, strongest_tier_config
    from tierwise.evals.report import dump_summary, full_json, summary, text_report
    from tierwise.evals.runner import run_eval

    if not args.candidate:
        raise InputError("--plan needs --candidate")
    plan = EvalPlan.from_document(_read_json(args.plan))
    candidate = _read_json(args.candidate)
    if args.baseline_config:
        baseline, kind = _read_json(args.baseline_config), args.baseline_kind
    else:
        baseline, kind = strongest_tier_config(candidate), "strongest"
    root = Path(args.datasets_dir)
    datasets = {r.name: load_dataset(root / r.dataset).sample(r.sample_size) for r in plan.routes}
    print(
        f"eval of {plan.policy}: candidate {candidate.get('hash')}, baseline ({kind}) "
        f"{baseline.get('hash')}, {sum(len(d.items) for d in datasets.values())} items",
        flush=True,
    )
    report = asyncio.run(
        run_eval(
            plan,
            candidate,
            baseline,
            datasets,
            os.environ,
            baseline_kind=kind,
            progress=_progress(not args.quiet),
        )
    )
    print(text_report(report), flush=True)
    print("full report: " + json.dumps(full_json(report), separators=(",", ":")), flush=True)
    short = summary(report)
    print("summary: " + dump_summary(short), flush=True)
    if args.termination_log:
        _write_termination(args.termination_log, short)
    return 0


def _read_json(path: str) -> Any:
    from tierwise.evals.local import InputError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc


def _write_termination(path: str, doc: dict[str, Any]) -> None:
    from tierwise.evals.report import dump_summary, fit

    Path(path).write_text(dump_summary(fit(dict(doc))), encoding="utf-8")

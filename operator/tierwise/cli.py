"""The `tierwise` command: one entry point, one subcommand per component.

Each subcommand lives next to the code it drives, in a ``command`` module exposing
``configure(parser)`` and ``run(args) -> int``; this file only wires them together, so
``tierwise --help`` stays fast (modules are imported only for the command that runs).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tierwise import __version__

# name -> (module with configure/run, one-line help shown by `tierwise --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "operator": (
        "tierwise.controller.command",
        "run the Kubernetes operator (reconciles policies, injects the router sidecar)",
    ),
    "router": (
        "tierwise.router.command",
        "run the router sidecar: Anthropic Messages API on 127.0.0.1, routing and cascades",
    ),
    "emulator": (
        "tierwise.emulator.command",
        "run an Anthropic-compatible model emulator for tests, demos and benchmarks",
    ),
    "dataset": (
        "tierwise.evals.draft",
        "turn live requests captured by the router (--capture-dir) into a dataset draft",
    ),
    "render": (
        "tierwise.render.command",
        "print the router config of each CascadePolicy in local manifests (no cluster needed)",
    ),
    "estimate": (
        "tierwise.pricing.command",
        "estimate all-strong vs cascade cost, the saving and the break-even escalation rate",
    ),
    "report": (
        "tierwise.router.report",
        "print a running router's cost report (cost vs all-strong, saving, cache, latency)",
    ),
    "eval": (
        "tierwise.evals.command",
        "replay a labelled dataset through a candidate and a baseline config and gate the change",
    ),
    "calibrate": (
        "tierwise.evals.calibrate",
        "sweep a route's escalation thresholds and propose the cheapest one meeting a target",
    ),
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tierwise",
        description=(
            "Tierwise puts every LLM call at the right point of the quality/cost/latency "
            "triangle: model tiers, cheap-first cascades, prompt and response caching, "
            "measured in tokens, dollars and seconds."
        ),
        epilog="Run `tierwise COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"tierwise {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    selected = _selected_command(argv)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        # Import only the module of the command being run; `--help` lists all cheaply.
        if name == selected:
            module = importlib.import_module(module_name)
            module.configure(sub)
            sub.set_defaults(_run=module.run)
    return parser


def _selected_command(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

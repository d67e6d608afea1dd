"""`tierwise estimate`: what a cascade saves compared with sending everything to the strong tier."""

from __future__ import annotations

import argparse
import sys
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from tierwise.pricing.catalog import PricingProblem, catalog_prices, resolve_prices
from tierwise.pricing.estimate import CascadeEstimate, estimate_cascade
from tierwise.pricing.model import Prices, Usage, cost_usd


class EstimateError(Exception):
    pass


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Compare sending every request to the strongest tier with a cheap-first cascade. "
        "Relative units: give --cheap-cost and --strong-cost. Dollars: give models (--cheap-model "
        "and --strong-model) or a route from manifests (-f with --route), plus token counts per "
        "request. Prints both totals, the saving, and the break-even escalation rate above which "
        "the cascade costs more than all-strong."
    )
    parser.epilog = (
        "examples:\n"
        "  tierwise estimate --requests 100000 --cheap-cost 1 --strong-cost 5 --resolved 0.9\n"
        "  tierwise estimate --cheap-model claude-haiku-5-5 --strong-model claude-sonnet-5-5 \\\n"
        "      --input-tokens 1200 --output-tokens 80 --escalation-rate 0.15\n"
        "  tierwise estimate -f examples/ --route triage --input-tokens 1200 --output-tokens 80"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--requests", type=int, default=100_000, help="number of requests (default 100000)"
    )
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument(
        "--resolved", type=Decimal, help="share of requests the first step resolves, 0..1"
    )
    rate.add_argument(
        "--escalation-rate",
        type=Decimal,
        help="share of requests each step escalates, 0..1 (default 0.1)",
    )
    units = parser.add_argument_group("relative units")
    units.add_argument("--cheap-cost", type=Decimal, help="cost of one request on the cheap tier")
    units.add_argument("--strong-cost", type=Decimal, help="cost of one request on the strong tier")
    dollars = parser.add_argument_group("dollars")
    dollars.add_argument("--cheap-model", help="model of the first step, e.g. claude-haiku-5-5")
    dollars.add_argument("--strong-model", help="model of the last step, e.g. claude-sonnet-5-5")
    dollars.add_argument(
        "-f",
        "--filename",
        dest="paths",
        action="append",
        metavar="PATH",
        help="manifests to read the route's tiers from; repeatable",
    )
    dollars.add_argument(
        "--policy", metavar="[NAMESPACE/]NAME", help="CascadePolicy holding --route (when several)"
    )
    dollars.add_argument("--route", help="route whose steps make the cascade (with -f)")
    dollars.add_argument(
        "--input-tokens", type=int, default=1000, help="prompt tokens per request (default 1000)"
    )
    dollars.add_argument(
        "--output-tokens", type=int, default=200, help="output tokens per request (default 200)"
    )
    dollars.add_argument(
        "--batch",
        action="store_true",
        help="price the cascade as Message Batches (half price) and show its combined saving "
        "against every request synchronous on the strongest tier",
    )


def run(args: argparse.Namespace) -> int:
    try:
        rate = _escalation_rate(args)
        if args.cheap_cost is not None or args.strong_cost is not None:
            print(_relative(args, rate))
        else:
            print(_dollars(args, rate))
    except (EstimateError, ValueError, InvalidOperation) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _escalation_rate(args: argparse.Namespace) -> Decimal:
    if args.resolved is not None:
        return Decimal(1) - args.resolved
    return args.escalation_rate if args.escalation_rate is not None else Decimal("0.1")


def _relative(args: argparse.Namespace, rate: Decimal) -> str:
    if args.cheap_cost is None or args.strong_cost is None:
        raise EstimateError("relative units need both --cheap-cost and --strong-cost")
    result = estimate_cascade(args.requests, [args.cheap_cost, args.strong_cost], rate)
    return _report(result, ["cheap", "strong"], lambda v: f"{_number(v)} units")


def _dollars(args: argparse.Namespace, rate: Decimal) -> str:
    names, prices = _step_prices(args)
    usage = Usage(input_tokens=args.input_tokens, output_tokens=args.output_tokens)
    step_costs = [cost_usd(usage, p, batch=args.batch) for p in prices]
    strongest = max(step_costs)
    result = estimate_cascade(args.requests, step_costs, rate, strong_cost=strongest)
    header = f"per request: {args.input_tokens} input + {args.output_tokens} output tokens" + (
        " (batch)" if args.batch else ""
    )
    report = _report(result, names, _usd)
    if args.batch:
        report += "\n" + _combined(args, prices, result.cascade)
    return header + "\n" + report


def _combined(args: argparse.Namespace, prices: list[Prices], cascade: Decimal) -> str:
    """The batch cascade against the usual baseline: every request synchronous on the
    strongest tier. The two levers multiply: the cascade's share times batch's half."""
    usage = Usage(input_tokens=args.input_tokens, output_tokens=args.output_tokens)
    baseline = args.requests * max(cost_usd(usage, p) for p in prices)
    saving = baseline - cascade
    fraction = saving / baseline if baseline else Decimal(0)
    return "\n".join(
        [
            f"all-strong (sync): {_usd(baseline)} (every request synchronous on the strongest tier)",
            f"batch cascade:     {_usd(cascade)}",
            f"combined saving:   {_usd(saving)} ({_percent(fraction)} cut: cascade x batch)",
        ]
    )


def _step_prices(args: argparse.Namespace) -> tuple[list[str], list[Prices]]:
    if args.paths:
        return _route_prices(args)
    if not args.cheap_model or not args.strong_model:
        raise EstimateError(
            "give --cheap-cost/--strong-cost, --cheap-model/--strong-model, or -f with --route"
        )
    prices = []
    for model in (args.cheap_model, args.strong_model):
        found = catalog_prices(model)
        if isinstance(found, PricingProblem):
            raise EstimateError(found.message)
        prices.append(found)
    return [args.cheap_model, args.strong_model], prices


def _route_prices(args: argparse.Namespace) -> tuple[list[str], list[Prices]]:
    from tierwise.api import CASCADE_POLICY, MODEL_TIER, load_manifests

    resources = load_manifests(args.paths)
    policies = [
        r
        for r in resources
        if r.kind == CASCADE_POLICY
        and (not args.policy or args.policy in (r.name, f"{r.namespace}/{r.name}"))
    ]
    routes = [(p, route) for p in policies for route in p.spec.routes if route.name == args.route]
    if len(routes) != 1:
        found = "no" if not routes else "several"
        raise EstimateError(
            f"{found} route {args.route!r} in {', '.join(args.paths)} (use --route, and --policy when several)"
        )
    policy, route = routes[0]
    tiers = {
        r.name: r for r in resources if r.kind == MODEL_TIER and r.namespace == policy.namespace
    }
    names, prices = [], []
    for step in route.steps:
        tier = tiers.get(step.tier)
        if tier is None:
            raise EstimateError(f"CascadePolicy {policy.name}: ModelTier {step.tier!r} not found")
        resolved = resolve_prices(tier.spec.model, tier.spec.price_overrides())
        if isinstance(resolved, PricingProblem):
            raise EstimateError(f"ModelTier {step.tier!r}: {resolved.message}")
        names.append(f"{step.tier} ({tier.spec.model})")
        prices.append(resolved)
    return names, prices


def _report(result: CascadeEstimate, names: list[str], money) -> str:
    lines = [
        f"requests:          {result.requests:,}",
        f"escalation rate:   {_percent(result.escalation_rate)} per step",
        f"all-strong:        {money(result.all_strong)}",
        f"cascade:           {money(result.cascade)}",
    ]
    for name, spent in zip(names, result.per_step, strict=True):
        lines.append(f"  on {name}: {money(spent)}")
    lines.append(
        f"saving:            {money(result.saving)} ({_percent(result.saving_fraction)} cut)"
    )
    if result.break_even_rate is None:
        lines.append("break-even:        none, the cascade is cheaper at any escalation rate")
    else:
        lines.append(
            f"break-even:        {_percent(result.break_even_rate)} escalation (above it the cascade costs more)"
        )
    return "\n".join(lines)


def _number(value: Decimal) -> str:
    rounded = (
        value.quantize(Decimal(1), rounding=ROUND_HALF_UP)
        if value == value.to_integral()
        else value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    )
    return f"{rounded:,}"


def _usd(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


def _percent(fraction: Decimal) -> str:
    value = (fraction * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return f"{value.normalize():f}%" if value == value.to_integral() else f"{value}%"

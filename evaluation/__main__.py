"""Command line: ``python -m evaluation report|stats RATINGS.csv ...``, ``python -m evaluation plan ...``
and one command per other paradigm (``abx``, ``preference``, ``bs1116``, ``acr``, ``dcr``, ``ranking``).

Exit status 0 on success, 2 on bad input (one line on stderr naming the problem).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from .errors import EvaluationError
from .io import read_metrics, read_ratings
from .paradigms import PARADIGMS
from .paradigms import cli as paradigm_cli
from .settings import Settings


class ProgressLine:
    """One status line on a stream, rewritten in place as the steps go by."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.width = 0

    def __call__(self, message: str, fraction: float) -> None:
        text = f"[{100 * fraction:3.0f}%] {message}"
        self.stream.write("\r" + text.ljust(self.width))
        self.width = max(self.width, len(text))
        self.stream.flush()

    def close(self) -> None:
        if self.width:
            self.stream.write("\n")
            self.stream.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation", description="Statistics and reports for MUSHRA tests (ITU-R BS.1534-3)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("report", "write the report bundle into a directory"), ("stats", "print the statistics")):
        command = sub.add_parser(name, help=text)
        command.add_argument("ratings", type=Path, help="ratings CSV (ours or webMUSHRA's mushra.csv)")
        command.add_argument("--metrics", type=Path, help="metrics CSV: condition, item, metric, value")
        command.add_argument("--settings", type=Path, help="settings JSON object (see docs/statistics.md)")
        command.add_argument("--quiet", action="store_true", help="no progress line")
        if name == "report":
            command.add_argument("--out", type=Path, required=True, help="output directory")
            command.add_argument(
                "--paradigm",
                action="append",
                default=[],
                metavar="NAME=FILE",
                help="add another paradigm's table to the report, e.g. abx=abx.csv (repeatable)",
            )
        else:
            command.add_argument("--json", action="store_true", help="print stats.json instead of a summary")
    _plan_parser(sub)
    paradigm_cli.add_parsers(sub)
    return parser


def _counts(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None


def _plan_parser(sub: Any) -> None:
    from .power import COMPONENT_LABELS, DEFAULT_COMPONENTS, DEFAULT_EXCERPTS, DEFAULT_LISTENERS, TESTS

    plan = sub.add_parser(
        "plan",
        help="power and sample size by simulation",
        description="Simulated power of one planned comparison for a grid of listeners x excerpts "
        "(see docs/statistics.md, 'Planning the sample size').",
    )
    plan.add_argument("--difference", type=float, required=True, help="difference to detect, in rating points")
    plan.add_argument("--pilot", type=Path, help="pilot ratings CSV: the SDs are estimated from it")
    plan.add_argument("--pilot-conditions", help="conditions of the pilot to estimate from, comma-separated")
    for name, label in COMPONENT_LABELS.items():
        plan.add_argument(
            f"--{name.replace('_', '-')}-sd",
            type=float,
            help=f"{label} SD in rating points (overrides the pilot; default {DEFAULT_COMPONENTS[name]:g})",
        )
    plan.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    plan.add_argument("--power", type=float, default=0.8, help="target power (default 0.8)")
    plan.add_argument("--comparisons", type=int, default=1, help="comparisons Holm corrects over (default 1)")
    plan.add_argument(
        "--listeners",
        type=_counts,
        default=list(DEFAULT_LISTENERS),
        help=f"listener counts, comma-separated (default {','.join(map(str, DEFAULT_LISTENERS))})",
    )
    plan.add_argument(
        "--excerpts",
        type=_counts,
        default=list(DEFAULT_EXCERPTS),
        help=f"excerpt counts, comma-separated (default {','.join(map(str, DEFAULT_EXCERPTS))})",
    )
    plan.add_argument("--replicates", type=int, default=2000, help="simulated tests per design (default 2000)")
    plan.add_argument("--seed", type=int, default=1534, help="random seed (default 1534)")
    plan.add_argument("--test", choices=tuple(TESTS), default="wilcoxon", help="test applied (default: the report's)")
    plan.add_argument("--level", type=float, help="mean rating of the lower condition: clip ratings to 0..100")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument("--quiet", action="store_true", help="no progress line")


def _plan(args: argparse.Namespace, stdout: TextIO, progress: ProgressLine) -> None:
    from .power import COMPONENTS, VarianceComponents, components_from_pilot, describe, format_table, plan_sample_size

    estimate = None
    values = VarianceComponents().as_dict()
    if args.pilot:
        conditions = [c.strip() for c in args.pilot_conditions.split(",")] if args.pilot_conditions else None
        estimate = components_from_pilot(read_ratings(args.pilot), conditions)
        values = estimate.components.as_dict()
    for name in COMPONENTS:
        given = getattr(args, f"{name}_sd")
        if given is not None:
            values[name] = given
    plan = plan_sample_size(
        args.difference,
        VarianceComponents(**values),
        alpha=args.alpha,
        power=args.power,
        comparisons=args.comparisons,
        listeners=args.listeners,
        excerpts=args.excerpts,
        replicates=args.replicates,
        seed=args.seed,
        test=args.test,
        level=args.level,
        progress=None if args.quiet else progress,
    )
    progress.close()
    if args.json:
        out = plan.as_dict() | {"pilot": estimate.as_dict() if estimate else None}
        stdout.write(json.dumps(out, indent=2) + "\n")
        return
    source = f"estimated from {args.pilot}" if estimate else "stated"
    sds = ", ".join(f"{k} {v:.1f}" for k, v in plan.components.as_dict().items())
    lines = [f"SDs ({source}; rating points): {sds}"]
    if estimate:
        lines.append(
            f"pilot: {estimate.listeners} listeners x {estimate.items} excerpts x "
            f"{len(estimate.conditions)} conditions ({', '.join(estimate.conditions)})"
        )
        lines += [f"note: {n}" for n in estimate.notes]
    lines += ["power (Monte Carlo SE):", format_table(plan), describe(plan)]
    stdout.write("\n".join(lines) + "\n")


def _summary(stats: dict[str, Any]) -> str:
    lines = [
        f"participants: {stats['participants']['retained']} retained of {stats['participants']['total']} "
        f"(excluded: {', '.join(stats['screening']['excluded']) or 'none'})"
    ]
    for name, c in stats["conditions"].items():
        lo, hi = c["ci95"]
        interval = f"[{lo:.1f}, {hi:.1f}]" if lo is not None else "[-, -]"
        lines.append(f"  {name:<24} {c['kind']:<17} n={c['n']:<4} mean={c['mean']:.1f} 95% CI {interval}")
    f = stats["friedman"]
    if f.get("statistic") is not None:
        lines.append(
            f"Friedman chi2({f['df']}) = {f['statistic']:.2f}, p = {f['pvalue']:.3g}, W = {f['kendall_w']:.2f}"
        )
    for p in stats["pairwise"]:
        lines.append(
            f"  {p['a']} vs {p['b']}: W = {p['statistic']}, p_holm = {p['pvalue_holm']:.3g}, r = {p['effect_size']:.2f}"
        )
    for w in stats["warnings"]:
        lines.append(f"warning: {w['message']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the command line; returns the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = _parser().parse_args(argv)
    progress = ProgressLine(stderr)
    if args.command == "plan":
        try:
            _plan(args, stdout, progress)
        except EvaluationError as exc:
            progress.close()
            stderr.write(f"error: {exc}\n")
            return 2
        return 0
    if args.command in PARADIGMS:
        try:
            text = paradigm_cli.run(args, None if args.quiet else progress)
        except EvaluationError as exc:
            progress.close()
            stderr.write(f"error: {exc}\n")
            return 2
        progress.close()
        stdout.write(text)
        return 0
    try:
        settings = Settings.from_json(args.settings) if args.settings else Settings()
        ratings = read_ratings(args.ratings, kinds=settings.kinds)
        metrics = read_metrics(args.metrics) if args.metrics else None
        callback = None if args.quiet else progress
        if args.command == "report":
            from .report import build_report

            sources = {"ratings": args.ratings}
            if args.metrics:
                sources["metrics"] = args.metrics
            if args.settings:
                sources["settings"] = args.settings
            inputs = paradigm_cli.parse_paradigm_inputs(args.paradigm)
            sources |= {f"paradigm_{name}": path for name, path in inputs.items()}
            paradigms = paradigm_cli.analyse_inputs(inputs, settings.alpha, settings.confidence_level)
            result = build_report(
                ratings, metrics, settings, args.out, progress=callback, sources=sources, paradigms=paradigms
            )
            progress.close()
            stdout.write(f"wrote {len(result['files'])} files to {result['out_dir']}\n")
        else:
            from .analysis import analyse

            stats = analyse(ratings, metrics, settings, progress=callback).stats()
            progress.close()
            stdout.write((json.dumps(stats, indent=2) if args.json else _summary(stats)) + "\n")
    except EvaluationError as exc:
        progress.close()
        stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m evaluation report|stats RATINGS.csv ...``.

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
        else:
            command.add_argument("--json", action="store_true", help="print stats.json instead of a summary")
    return parser


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
            result = build_report(ratings, metrics, settings, args.out, progress=callback, sources=sources)
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

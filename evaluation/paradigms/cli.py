"""Command line of the paradigms: ``python -m evaluation abx|preference|bs1116|acr|dcr|ranking TABLE.csv``.

Each prints a summary (or ``--json``) and with ``--out DIR`` writes the paradigm's bundle;
``report --paradigm NAME=TABLE.csv`` adds a paradigm to the MUSHRA report. Bad input raises
``EvaluationError``, which ``evaluation.__main__`` turns into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import EvaluationError
from . import PARADIGMS

Progress = Callable[[str, float], None]


def add_parsers(sub: Any) -> None:
    """One subcommand per paradigm on the ``python -m evaluation`` parser."""
    for name, entry in PARADIGMS.items():
        command = sub.add_parser(name, help=entry[4], description=f"{entry[4]} (columns: see docs/statistics.md).")
        command.add_argument("table", type=Path, help=f"{name} long table, CSV")
        command.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
        command.add_argument(
            "--confidence-level", type=float, default=0.95, help="level of every interval (default 0.95)"
        )
        command.add_argument("--json", action="store_true", help="print the result as JSON")
        command.add_argument("--out", type=Path, help="also write HTML, JSON and CSV files into this directory")
        command.add_argument("--quiet", action="store_true", help="no progress line")
        if name == "abx":
            command.add_argument("--model", choices=("differencing", "independent"), default="differencing")
            command.add_argument(
                "--plan",
                type=float,
                action="append",
                default=[],
                metavar="P",
                help="true proportion correct to plan for: trials needed at --power (repeatable)",
            )
            command.add_argument("--power", type=float, default=0.8, help="target power of --plan (default 0.8)")
        if name == "preference":
            command.add_argument("--reference", help="condition whose score is fixed at 0 (default: sum to zero)")
        if name in ("bs1116", "acr", "dcr"):
            command.add_argument("--keep-all", action="store_true", help="flag failed screening, exclude nobody")
        if name == "acr":
            command.add_argument(
                "--points", type=int, default=5, help="categories of the scale (default 5, ITU-T P.800; 2 to 11)"
            )


def paradigm_options(args: argparse.Namespace) -> dict[str, Any]:
    """The analysis options a parsed subcommand asks for."""
    options: dict[str, Any] = {"alpha": args.alpha, "confidence_level": args.confidence_level}
    if args.command == "abx":
        options |= {"model": args.model, "plan": args.plan, "power": args.power}
    if args.command == "preference":
        options["reference"] = args.reference
    if args.command in ("bs1116", "acr", "dcr"):
        options["apply_screening"] = not args.keep_all
    if args.command == "acr":
        options["points"] = args.points
    return options


def run(args: argparse.Namespace, progress: Progress | None) -> str:
    """Read, analyse and optionally write one paradigm's table; returns the text to print."""
    from . import analyse, read
    from .bundle import write_bundle
    from .common import format_text

    report = progress or (lambda message, fraction: None)
    report(f"reading {args.table}", 0.1)
    frame = read(args.command, args.table, **({"points": args.points} if args.command == "acr" else {}))
    report("analysing", 0.4)
    result = analyse(args.command, frame, **paradigm_options(args))
    written: list[str] = []
    if args.out:
        report("writing files", 0.9)
        written = write_bundle(result, args.out)
    report("done", 1.0)
    if args.json:
        text = json.dumps(result.as_dict(), indent=2, ensure_ascii=False, allow_nan=False)
    else:
        text = format_text(result)
    return text + (f"\nwrote {len(written)} files to {args.out}" if written else "") + "\n"


def parse_paradigm_inputs(values: Sequence[str]) -> dict[str, Path]:
    """``["abx=abx.csv", ...]`` from ``report --paradigm`` as ``{"abx": Path("abx.csv")}``."""
    out: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        name = name.strip().lower()
        if not sep or not path.strip():
            raise EvaluationError(f"--paradigm expects NAME=FILE (e.g. abx=abx.csv), got {value!r}")
        if name not in PARADIGMS:
            raise EvaluationError(f"--paradigm: unknown paradigm {name!r}; expected one of {', '.join(PARADIGMS)}")
        if name in out:
            raise EvaluationError(f"--paradigm {name} is given more than once")
        out[name] = Path(path.strip())
    return out


def analyse_inputs(inputs: dict[str, Path], alpha: float, confidence_level: float) -> dict[str, Any]:
    """Read and analyse each ``--paradigm`` table with the report's alpha and confidence level."""
    from . import analyse, read

    return {
        name: analyse(name, read(name, path), alpha=alpha, confidence_level=confidence_level)
        for name, path in inputs.items()
    }

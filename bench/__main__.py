"""Run every benchmark in ``bench/``, one after another, each in its own interpreter.

``python -m bench`` runs the full set (about 10 minutes on the 2-core development machine,
most of it the two load runs); ``python -m bench --quick`` runs every benchmark on small
inputs and short loads (under 3 minutes), to see that they all work and what the ratios
look like. ``--only NAME`` (repeatable) picks benchmarks by name. Each benchmark prints its
own table with ratios against the baseline it measures in the same run (see
``bench/README.md``); a summary of exit statuses and wall times comes last. The exit status
is 1 when any benchmark failed or reported a missed target.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: name -> (full-run arguments, quick-run arguments), in the order they run.
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "bench_render": ([], ["--quick"]),
    "bench_paths": ([], ["--quick"]),
    "bench_job": ([], ["--quick"]),
    # Without a CUDA device it says so and measures nothing (exit status 0).
    "bench_gpu": ([], ["--quick"]),
    "bench_papers": ([], ["--quick"]),
    "bench_evaluation": ([], []),
    "bench_power": ([], []),
    "bench_mixed_type1": ([], ["--quick"]),
    "bench_participant": ([], ["--runs", "3", "--users", "20", "--spawn-rate", "10", "--seconds", "10"]),
    "bench_load": ([], ["--users", "20", "--spawn-rate", "10", "--seconds", "20"]),
    "bench_render_priority": ([], ["--users", "20", "--seconds", "10"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs and short loads (under 3 minutes)")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS), metavar="NAME", help="repeatable")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, (full, quick) in BENCHMARKS.items():
            print(f"{name:<18} full: {' '.join(full) or '(defaults)'}   quick: {' '.join(quick) or '(defaults)'}")
        return 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    results: list[tuple[str, int, float]] = []
    for name, (full, quick) in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        cmd = [sys.executable, "-m", f"bench.{name}", *(quick if args.quick else full)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.perf_counter()
        code = subprocess.run(cmd, cwd=REPO, env=env).returncode
        results.append((name, code, time.perf_counter() - started))
    print("\n=== summary" + (" (quick)" if args.quick else ""))
    for name, code, seconds in results:
        print(f"{name:<18} {'ok' if code == 0 else f'exit {code}':>8}  {seconds:7.1f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())

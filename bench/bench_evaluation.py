"""Benchmark of the evaluation package: 200 participants x 12 items x 10 conditions.

Targets (one core): statistics under 2 s, the whole report with plots under 15 s, and under
10 s in a fresh process with its imports (what one command-line call costs). The baseline,
measured in the same run, is the per-cell route through
``scipy.stats.bootstrap(method='BCa')`` and ``scipy.stats.permutation_test`` that the
package's batched bootstrap and shared sign-flip matrix replace; the ratio says how much
of the statistics budget the batching saves.

Run: ``python bench/bench_evaluation.py`` from the repository root.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation import analyse  # noqa: E402
from evaluation.analysis import Analysis  # noqa: E402
from evaluation.checks import run_checks  # noqa: E402
from evaluation.io import validate_ratings  # noqa: E402
from evaluation.report import build_report  # noqa: E402
from evaluation.simulate import simulate_metrics, simulate_ratings  # noqa: E402

MEANS = {"reference": 97.0, "anchor35": 20.0, "anchor70": 50.0}
MEANS.update({f"model_{k}": m for k, m in enumerate([85, 80, 75, 70, 65, 60, 55])})


def _timed(function) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def baseline(ratings, n_boot: int, n_perm: int) -> None:
    """Per-cell scipy bootstrap (BCa) and per-pair scipy permutation tests."""
    for _, frame in ratings.groupby(["condition", "item"]):
        stats.bootstrap(
            (frame["rating"].to_numpy(),), np.mean, n_resamples=n_boot, method="BCa", rng=np.random.default_rng(0)
        )
    wide = ratings.pivot_table(index="participant", columns="condition", values="rating")
    models = [c for c in wide.columns if c.startswith("model_")]
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            stats.permutation_test(
                (wide[a].to_numpy(), wide[b].to_numpy()),
                lambda x, y, axis: np.mean(x - y, axis=axis),
                permutation_type="samples",
                n_resamples=n_perm,
                vectorized=True,
                rng=np.random.default_rng(0),
            )


FRESH = """
import sys, tempfile
from pathlib import Path
sys.path.insert(0, {root!r})
from evaluation.io import validate_ratings
from evaluation.report import build_report
from evaluation.simulate import simulate_metrics, simulate_ratings
ratings = validate_ratings(simulate_ratings(200, 12, {means!r}, seed=1))
with tempfile.TemporaryDirectory() as out:
    build_report(ratings, simulate_metrics(ratings, seed=1), None, Path(out))
"""


def _fresh_report() -> tuple[float, float]:
    """Wall and CPU time of a whole report in a new interpreter, imports included (what a CLI call costs)."""
    code = FRESH.format(root=str(Path(__file__).resolve().parents[1]), means=MEANS)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ratings = validate_ratings(simulate_ratings(200, 12, MEANS, seed=1))
    metrics = simulate_metrics(ratings, seed=1)
    analyse(ratings.head(2400), metrics)  # warm imports and caches outside the timings
    base_wall, base_cpu, _ = _timed(lambda: baseline(ratings, 2000, 10_000))
    stats_wall, stats_cpu, result = _timed(lambda: analyse(ratings, metrics))
    assert isinstance(result, Analysis)
    # The bounded-scale, assumption and reliability checks alone (evaluation.checks), inside analyse.
    checks_wall, checks_cpu, _ = _timed(
        lambda: run_checks(
            result.used,
            result.used.iloc[:0],
            result.wide,
            result.conditions,
            result.models,
            result.mixed,
            result.settings,
        )
    )
    with tempfile.TemporaryDirectory() as out:
        report_wall, report_cpu, _ = _timed(lambda: build_report(ratings, metrics, None, Path(out)))
    fresh_wall, fresh_cpu = _fresh_report()
    print(f"data: 200 participants x 12 items x 10 conditions ({len(ratings)} ratings), 7 models, 1 metric")
    print(f"baseline (per-cell scipy BCa + per-pair scipy permutation): wall {base_wall:.2f} s, cpu {base_cpu:.2f} s")
    print(
        f"statistics (all of analyse): wall {stats_wall:.2f} s, cpu {stats_cpu:.2f} s, "
        f"target 2 s, ratio to baseline {stats_cpu / base_cpu:.2f}"
    )
    print(f"  of which checks (bounded, assumptions, reliability): cpu {checks_cpu:.2f} s")
    print(f"report with plots:           wall {report_wall:.2f} s, cpu {report_cpu:.2f} s, target 15 s")
    print(f"report in a fresh process, imports included: wall {fresh_wall:.2f} s, cpu {fresh_cpu:.2f} s, target 10 s")
    ok = stats_cpu < 2.0 and report_cpu < 15.0 and fresh_cpu < 10.0
    print("within targets (cpu time)" if ok else "OVER TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

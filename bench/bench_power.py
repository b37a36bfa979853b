"""Benchmark of the sample-size planner as the researcher page runs it.

The page's default grid (8 listener counts x 5 excerpt counts, up to 48 x 12), 400
simulated tests per design, the report's Wilcoxon test with Holm over 3 comparisons; and
the largest grid the page accepts (10 x 10 values, up to 200 listeners x 40 excerpts).
Target (one core): under 2 s each, so the page answers at once. The baseline, measured in
the same run on the default grid, is the plain route: one replicate at a time, one
``scipy.stats.wilcoxon`` call per replicate and design, fresh draws per design.

Run: ``python -m bench.bench_power`` from the repository root.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TypeVar  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.power import VarianceComponents, plan_sample_size  # noqa: E402

LISTENERS = (8, 12, 16, 20, 24, 32, 40, 48)
EXCERPTS = (3, 4, 6, 8, 12)
LARGEST = (tuple(range(20, 201, 20)), (1, 2, 4, 8, 12, 16, 20, 25, 30, 40))
REPLICATES = 400
COMPARISONS = 3
T = TypeVar("T")


def baseline(c: VarianceComponents, difference: float) -> np.ndarray:
    """One replicate, one design, one scipy call at a time."""
    rng = np.random.default_rng(0)
    power = np.zeros((len(LISTENERS), len(EXCERPTS)))
    for j, n in enumerate(LISTENERS):
        for k, items in enumerate(EXCERPTS):
            hits = 0
            for _ in range(REPLICATES):
                y = (
                    np.array([0.0, difference])
                    + rng.normal(0, c.listener, (n, 1, 1))
                    + rng.normal(0, c.item, (1, items, 1))
                    + rng.normal(0, c.listener_condition, (n, 1, 2))
                    + rng.normal(0, c.item_condition, (1, items, 2))
                    + rng.normal(0, c.residual, (n, items, 2))
                )
                d = (y[..., 1] - y[..., 0]).mean(axis=1)
                hits += int(stats.wilcoxon(d, zero_method="pratt").pvalue <= 0.05 / COMPARISONS)
            power[j, k] = hits / REPLICATES
    return power


def _timed(function: Callable[[], T]) -> tuple[float, float, T]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> int:
    c = VarianceComponents()
    plan_sample_size(8.0, c, listeners=(8,), excerpts=(4,), replicates=100)  # warm imports
    base_wall, base_cpu, base_power = _timed(lambda: baseline(c, 8.0))
    wall, cpu, plan = _timed(
        lambda: plan_sample_size(
            8.0, c, listeners=LISTENERS, excerpts=EXCERPTS, replicates=REPLICATES, comparisons=COMPARISONS
        )
    )
    big_wall, big_cpu, _ = _timed(
        lambda: plan_sample_size(
            8.0, c, listeners=LARGEST[0], excerpts=LARGEST[1], replicates=REPLICATES, comparisons=COMPARISONS
        )
    )
    ours = plan.table["power"].to_numpy().reshape(len(LISTENERS), len(EXCERPTS))
    # Independent draws: the two estimates differ by Monte Carlo error only.
    se = np.sqrt((ours * (1 - ours) + base_power * (1 - base_power)) / REPLICATES)
    gap = float(np.max(np.abs(ours - base_power) / np.maximum(se, 1e-3)))
    print(f"grid: {len(LISTENERS)} listener counts x {len(EXCERPTS)} excerpt counts, {REPLICATES} tests per design")
    print(f"baseline (a replicate at a time, scipy per test): wall {base_wall:.2f} s, cpu {base_cpu:.2f} s")
    ratio = cpu / base_cpu
    print(f"planner, default grid:  wall {wall:.2f} s, cpu {cpu:.2f} s, target 2 s, ratio to baseline {ratio:.3f}")
    print(f"planner, largest grid:  wall {big_wall:.2f} s, cpu {big_cpu:.2f} s, target 2 s")
    print(f"largest power gap to the baseline: {gap:.1f} Monte Carlo SEs (expect under 4)")
    ok = cpu < 2.0 and big_cpu < 2.0 and gap < 4.0
    print("within targets (cpu time)" if ok else "OVER TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

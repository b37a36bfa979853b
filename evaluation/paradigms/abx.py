"""ABX discrimination: A and B differ, X is one of them at random, the listener says which.

Per participant and pooled over participants (per pair of conditions): the exact one-sided
binomial test against guessing (p = 0.5), the proportion correct with its Clopper-Pearson
(1934) interval, and d' for the ABX paradigm (Macmillan & Creelman 2005, *Detection Theory*,
2nd ed., ch. 9) with an interval obtained by carrying the proportion's interval through the
monotone map from d' to the proportion correct. ``trials_needed`` answers how many trials a
test needs for a chosen power at a chosen true proportion correct (exact binomial power).

Input columns: participant, item, condition_a, condition_b, x_is (A or B), answer (A or B).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from ..errors import EvaluationError
from ..io import _rows
from ..nonparametric import holm
from .common import (
    ParadigmResult,
    check_levels,
    choice_column,
    read_table,
    start,
    text_columns,
)

COLUMNS = ("participant", "item", "condition_a", "condition_b", "x_is", "answer")
SIDES = {"a": "A", "b": "B"}
MODELS = ("differencing", "independent")
_ROOT2, _ROOT6 = math.sqrt(2.0), math.sqrt(6.0)


def exact_pvalue(correct: int, trials: int, chance: float = 0.5) -> float:
    """One-sided exact binomial p-value P(K >= correct | chance) (Clopper & Pearson 1934; scipy's binomtest)."""
    if trials <= 0:
        return float("nan")
    return float(min(1.0, stats.binom.sf(correct - 1, trials, chance)))


def clopper_pearson(correct: int, trials: int, confidence_level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (1934) exact interval of a binomial proportion, from beta quantiles."""
    if trials <= 0:
        return (float("nan"), float("nan"))
    tail = (1 - confidence_level) / 2
    low = 0.0 if correct == 0 else float(stats.beta.ppf(tail, correct, trials - correct + 1))
    high = 1.0 if correct == trials else float(stats.beta.ppf(1 - tail, correct + 1, trials - correct))
    return (low, high)


def proportion_correct(dprime: float, model: str = "differencing") -> float:
    """Proportion correct of an unbiased ABX observer with sensitivity d' (Macmillan & Creelman 2005, ch. 9).

    Differencing (X is called A when it lies nearer to A): Phi(d/sqrt2) Phi(d/sqrt6) + Phi(-d/sqrt2) Phi(-d/sqrt6).
    Independent observation: Phi(d/sqrt2) Phi(d/2) + Phi(-d/sqrt2) Phi(-d/2).
    """
    if model not in MODELS:
        raise EvaluationError(f"ABX model must be one of {', '.join(MODELS)}, got {model!r}")
    other = _ROOT6 if model == "differencing" else 2.0
    d = abs(float(dprime))
    if math.isinf(d):
        return 1.0
    right, wrong = special.ndtr(d / _ROOT2), special.ndtr(-d / _ROOT2)
    return float(right * special.ndtr(d / other) + wrong * special.ndtr(-d / other))


def dprime(pc: float, model: str = "differencing") -> float:
    """d' of an unbiased ABX observer from the proportion correct: the inverse of ``proportion_correct``.

    0 at or below chance (the ABX proportion correct is even in d', so d' is taken >= 0) and
    infinite at 1 (Macmillan & Creelman 2005, ch. 9).
    """
    proportion_correct(0.0, model)  # checks the model name
    if not np.isfinite(pc):
        return float("nan")
    if pc <= 0.5:
        return 0.0
    if pc >= 1.0:
        return float("inf")
    high = 1.0
    while proportion_correct(high, model) < pc and high < 80.0:
        high *= 2.0
    if proportion_correct(high, model) < pc:
        return float("inf")  # closer to 1 than double precision resolves
    return float(optimize.brentq(lambda d: proportion_correct(d, model) - pc, 0.0, high, xtol=1e-12, rtol=1e-12))


def dprime_with_interval(
    correct: int, trials: int, confidence_level: float = 0.95, model: str = "differencing"
) -> dict[str, Any]:
    """d' with its interval, the Clopper-Pearson limits carried through the monotone map p -> d'.

    A perfect score (p = 1) has no finite estimate: d' is then taken at 1 - 1/(2n)
    (Macmillan & Kaplan 1985) and ``boundary`` says so; the upper limit is infinite.
    At or below chance d' is 0 and the lower limit 0.
    """
    if trials <= 0:
        return {"dprime": float("nan"), "dprime_low": float("nan"), "dprime_high": float("nan"), "boundary": False}
    low, high = clopper_pearson(correct, trials, confidence_level)
    pc = correct / trials
    boundary = correct == trials
    point = dprime(1 - 1 / (2 * trials), model) if boundary else dprime(pc, model)
    return {
        "dprime": point,
        "dprime_low": dprime(max(low, 0.5), model),
        "dprime_high": dprime(high, model),
        "boundary": boundary,
    }


def exact_power(trials: int | np.ndarray, true_proportion: float, alpha: float = 0.05) -> tuple[Any, Any]:
    """Power of the one-sided exact binomial test at level alpha when the true proportion correct is given.

    Returns (power, critical count): the test declares discrimination when the count correct
    reaches the smallest k with P(K >= k | 0.5) <= alpha; the power is P(K >= k | true proportion).
    """
    n = np.atleast_1d(np.asarray(trials, dtype=np.int64))
    # isf gives the smallest k with P(K > k) <= alpha; nudge for rounding at the boundary.
    k = np.asarray(stats.binom.isf(alpha, n, 0.5), dtype=np.int64) + 1
    k = np.where(stats.binom.sf(k - 1, n, 0.5) > alpha * (1 + 1e-12), k + 1, k)
    k = np.where((k > 1) & (stats.binom.sf(k - 2, n, 0.5) <= alpha * (1 + 1e-12)), k - 1, k)
    power = np.where(k <= n, stats.binom.sf(k - 1, n, true_proportion), 0.0)
    if np.ndim(trials) == 0:
        return float(power[0]), int(k[0])
    return power, k


def trials_needed(
    true_proportion: float, power: float = 0.8, alpha: float = 0.05, max_trials: int = 10_000
) -> dict[str, Any]:
    """Fewest ABX trials for the exact one-sided binomial test to reach ``power`` at ``true_proportion``.

    Exact binomial power (e.g. Chernick & Liu 2002): because of the discreteness the power
    saw-tooths with n, so ``trials`` is the first n that reaches the target and
    ``trials_stable`` the first n from which every n up to ``max_trials`` does.
    """
    if not 0.5 < true_proportion < 1:
        raise EvaluationError(f"the true proportion correct must lie between 0.5 and 1, got {true_proportion!r}")
    if not 0 < power < 1:
        raise EvaluationError(f"power must lie strictly between 0 and 1, got {power!r}")
    check_levels(alpha, 0.95)
    n = np.arange(1, int(max_trials) + 1)
    values, critical = exact_power(n, true_proportion, alpha)
    reached = values >= power
    out: dict[str, Any] = {
        "true_proportion": float(true_proportion),
        "power_target": float(power),
        "alpha": float(alpha),
        "max_trials": int(max_trials),
        "trials": None,
        "critical": None,
        "power": None,
        "trials_stable": None,
    }
    if not reached.any():
        return out
    first = int(np.argmax(reached))
    failing = np.flatnonzero(~reached)
    stable = int(failing[-1]) + 1 if failing.size else 0
    out.update(
        trials=int(n[first]),
        critical=int(critical[first]),
        power=float(values[first]),
        trials_stable=int(n[stable]) if stable < n.size else None,
    )
    return out


def validate_abx(frame: pd.DataFrame, source: str = "(in memory)") -> pd.DataFrame:
    """Check an ABX table; returns it with ``x_is`` and ``answer`` as A / B and a boolean ``correct``."""
    what = "ABX"
    frame = start(frame, COLUMNS, what, source)
    text_columns(frame, ("participant", "item", "condition_a", "condition_b"), what, source)
    same = frame["condition_a"] == frame["condition_b"]
    if same.any():
        raise EvaluationError(f"{what} table {source}: condition_a equals condition_b at {_rows(frame.index[same])}")
    frame["x_is"] = choice_column(frame, "x_is", SIDES, what, source)
    frame["answer"] = choice_column(frame, "answer", SIDES, what, source)
    frame["correct"] = frame["x_is"] == frame["answer"]
    pair = [tuple(sorted(p)) for p in zip(frame["condition_a"], frame["condition_b"])]
    frame["comparison"] = [f"{a} vs {b}" for a, b in pair]
    return frame


def read_abx(path: str) -> pd.DataFrame:
    """Read and check an ABX CSV table."""
    return validate_abx(read_table(path), source=str(path))


def _row(correct: int, trials: int, confidence_level: float, model: str) -> dict[str, Any]:
    low, high = clopper_pearson(correct, trials, confidence_level)
    return {
        "trials": trials,
        "correct": correct,
        "proportion": correct / trials,
        "ci_low": low,
        "ci_high": high,
        "pvalue": exact_pvalue(correct, trials),
        **dprime_with_interval(correct, trials, confidence_level, model),
    }


def analyse_abx(
    frame: pd.DataFrame,
    *,
    alpha: float = 0.05,
    confidence_level: float = 0.95,
    model: str = "differencing",
    plan: Sequence[float] = (),
    power: float = 0.8,
) -> ParadigmResult:
    """ABX analysis per participant and pooled per pair of conditions (exact binomial; d' per Macmillan & Creelman).

    ``plan`` lists true proportions correct for which the trials needed at ``power`` are reported.
    """
    check_levels(alpha, confidence_level)
    if model not in MODELS:
        raise EvaluationError(f"ABX model must be one of {', '.join(MODELS)}, got {model!r}")
    if not {"correct", "comparison"} <= set(frame.columns):
        frame = validate_abx(frame)
    rows = []
    for (participant, comparison), group in frame.groupby(["participant", "comparison"], sort=True):
        rows.append(
            {"participant": participant, "comparison": comparison}
            | _row(int(group["correct"].sum()), len(group), confidence_level, model)
        )
    per_participant = pd.DataFrame(rows)
    per_participant["pvalue_holm"] = holm(per_participant["pvalue"].to_numpy())
    per_participant["discriminates"] = per_participant["pvalue_holm"] <= alpha
    pooled_rows = []
    for comparison, group in frame.groupby("comparison", sort=True):
        mine = per_participant[per_participant["comparison"] == comparison]
        pooled_rows.append(
            {"comparison": comparison, "participants": int(group["participant"].nunique())}
            | _row(int(group["correct"].sum()), len(group), confidence_level, model)
            | {"participants_discriminating": int(mine["discriminates"].sum())}
        )
    pooled = pd.DataFrame(pooled_rows)
    pooled["pvalue_holm"] = holm(pooled["pvalue"].to_numpy())
    pooled["discriminated"] = pooled["pvalue_holm"] <= alpha
    tables = {"pooled": pooled, "per_participant": per_participant}
    if plan:
        tables["plan"] = pd.DataFrame([trials_needed(p, power, alpha) for p in plan])
    warnings = []
    at_ceiling = per_participant[per_participant["boundary"]]
    if len(at_ceiling):
        warnings.append(
            {
                "code": "abx_perfect_score",
                "message": (
                    f"{len(at_ceiling)} participant x comparison cell(s) scored every trial correct: d' has no finite "
                    "estimate there; it is shown at 1 - 1/(2n) correct and its upper limit is unbounded (null)."
                ),
            }
        )
    level = f"{100 * confidence_level:g} %"
    method = (
        "Proportion correct with its Clopper-Pearson (1934) exact interval; one-sided exact binomial test against "
        f"guessing (0.5), Holm-adjusted over the rows of each table, discrimination declared at alpha = {alpha:g}. "
        f"d' of an unbiased observer under the {model} model of the ABX task (Macmillan & Creelman 2005, ch. 9), "
        f"with the {level} interval of the proportion carried through the map from d' to proportion correct; "
        "a perfect score has no finite d' (shown at 1 - 1/(2n) correct, upper limit unbounded). Pooling adds the "
        "trials of all participants and treats them as independent."
    )
    summary = {
        "model": model,
        "alpha": alpha,
        "confidence_level": confidence_level,
        "participants": int(frame["participant"].nunique()),
        "trials": len(frame),
        "comparisons": sorted(frame["comparison"].unique().tolist()),
    }
    return ParadigmResult("abx", "ABX discrimination", method, tables, summary, warnings)

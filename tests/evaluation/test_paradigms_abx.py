"""ABX: exact binomial test and Clopper-Pearson interval against scipy and statsmodels, d' against a
simulated observer, exact power against a brute-force sum over scipy's binomtest."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from evaluation.errors import EvaluationError
from evaluation.paradigms.abx import (
    analyse_abx,
    clopper_pearson,
    dprime,
    dprime_with_interval,
    exact_power,
    exact_pvalue,
    proportion_correct,
    trials_needed,
    validate_abx,
)


def abx_table(scores: dict[str, tuple[int, int]], a: str = "reference", b: str = "model") -> pd.DataFrame:
    """Trials of each participant: (correct, trials), X alternating between A and B."""
    rows = []
    for participant, (correct, trials) in scores.items():
        for t in range(trials):
            x = "A" if t % 2 else "B"
            wrong = "B" if x == "A" else "A"
            rows.append((participant, f"i{t % 3}", a, b, x, x if t < correct else wrong))
    return pd.DataFrame(rows, columns=["participant", "item", "condition_a", "condition_b", "x_is", "answer"])


@pytest.mark.parametrize("trials", [1, 2, 7, 16, 40])
def test_exact_pvalue_matches_scipy_binomtest(trials: int) -> None:
    for correct in range(trials + 1):
        expected = stats.binomtest(correct, trials, 0.5, alternative="greater").pvalue
        assert exact_pvalue(correct, trials) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("correct", "trials"), [(0, 10), (3, 10), (10, 10), (17, 24), (1, 1), (55, 100)])
def test_clopper_pearson_matches_scipy_and_statsmodels(correct: int, trials: int) -> None:
    for level in (0.95, 0.9):
        ours = clopper_pearson(correct, trials, level)
        scipy_ci = stats.binomtest(correct, trials).proportion_ci(level, method="exact")
        sm_low, sm_high = proportion_confint(correct, trials, alpha=1 - level, method="beta")
        assert ours == pytest.approx((scipy_ci.low, scipy_ci.high), abs=1e-10)
        assert ours == pytest.approx((np.nan_to_num(sm_low), np.nan_to_num(sm_high, nan=1.0)), abs=1e-10)


def _simulated_pc(d: float, model: str, n: int = 400_000, seed: int = 7) -> float:
    # An observer with unit-variance Gaussian observations of A, B and X (X = A here; symmetric).
    rng = np.random.default_rng(seed)
    means = np.where(rng.random(n) < 0.5, 0.0, d)  # mean of A; B has the other one
    a = means + rng.standard_normal(n)
    b = (d - means) + rng.standard_normal(n)
    x = means + rng.standard_normal(n)
    if model == "differencing":
        says_a = np.abs(x - a) < np.abs(x - b)
    else:
        # Independent observation: decide which of A, B is the higher stimulus, and whether X is.
        a_high = a > b
        x_high = x > d / 2
        says_a = a_high == x_high
    return float(says_a.mean())


@pytest.mark.parametrize("model", ["differencing", "independent"])
@pytest.mark.parametrize("d", [0.0, 0.8, 1.7, 3.0])
def test_proportion_correct_matches_a_simulated_observer(model: str, d: float) -> None:
    """Macmillan & Creelman (2005) ch. 9 formulas against the decision rules they describe, simulated."""
    simulated = _simulated_pc(d, model)
    se = np.sqrt(simulated * (1 - simulated) / 400_000)
    assert abs(proportion_correct(d, model) - simulated) < 4 * se + 1e-4


def test_the_two_models_differ_and_dprime_inverts() -> None:
    assert proportion_correct(2.0, "independent") > proportion_correct(2.0, "differencing")
    for model in ("differencing", "independent"):
        for d in (0.05, 0.5, 1.0, 2.5, 5.0):
            assert dprime(proportion_correct(d, model), model) == pytest.approx(d, rel=1e-8)
        assert dprime(0.5, model) == 0.0 and dprime(0.3, model) == 0.0
        assert dprime(1.0, model) == np.inf
    with pytest.raises(EvaluationError, match="model"):
        dprime(0.7, "optimal")


def test_dprime_interval_is_the_mapped_clopper_pearson_interval() -> None:
    result = dprime_with_interval(30, 40)
    low, high = clopper_pearson(30, 40)
    assert proportion_correct(result["dprime_low"]) == pytest.approx(low, abs=1e-10)
    assert proportion_correct(result["dprime_high"]) == pytest.approx(high, abs=1e-10)
    assert proportion_correct(result["dprime"]) == pytest.approx(0.75, abs=1e-10)
    assert result["dprime_low"] < result["dprime"] < result["dprime_high"] and not result["boundary"]


def _brute_force_power(n: int, p: float, alpha: float) -> float:
    rejecting = [k for k in range(n + 1) if stats.binomtest(k, n, 0.5, alternative="greater").pvalue <= alpha]
    return float(sum(stats.binom.pmf(k, n, p) for k in rejecting))


@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_exact_power_matches_a_brute_force_sum_over_binomtest(alpha: float) -> None:
    for n in (1, 4, 5, 9, 10, 17, 30, 51):
        power, _ = exact_power(n, 0.72, alpha)
        assert power == pytest.approx(_brute_force_power(n, 0.72, alpha), abs=1e-12), n


def test_trials_needed_is_the_first_n_reaching_the_power_and_the_stable_n() -> None:
    plan = trials_needed(0.75, power=0.8, alpha=0.05, max_trials=80)
    powers = [_brute_force_power(n, 0.75, 0.05) for n in range(1, 81)]
    first = next(n for n, value in enumerate(powers, start=1) if value >= 0.8)
    stable = next(n for n in range(1, 81) if all(v >= 0.8 for v in powers[n - 1 :]))
    assert plan["trials"] == first and plan["trials_stable"] == stable
    assert plan["power"] == pytest.approx(powers[first - 1], abs=1e-12)
    assert stable >= first
    assert trials_needed(0.51, power=0.99, max_trials=20)["trials"] is None
    with pytest.raises(EvaluationError, match="between 0.5 and 1"):
        trials_needed(0.5)


def test_analysis_per_participant_and_pooled_against_binomtest() -> None:
    table = abx_table({"p1": (14, 20), "p2": (10, 20), "p3": (19, 20), "p4": (3, 8)})
    result = analyse_abx(table, alpha=0.05)
    per = result.tables["per_participant"].set_index("participant")
    for participant, (k, n) in {"p1": (14, 20), "p2": (10, 20), "p3": (19, 20), "p4": (3, 8)}.items():
        reference = stats.binomtest(k, n, 0.5, alternative="greater")
        assert per.loc[participant, "pvalue"] == pytest.approx(reference.pvalue, rel=1e-12)
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
        assert (per.loc[participant, "ci_low"], per.loc[participant, "ci_high"]) == pytest.approx((ci.low, ci.high))
    assert per["pvalue_holm"].to_numpy() == pytest.approx(multipletests(per["pvalue"], method="holm")[1])
    pooled = result.tables["pooled"].iloc[0]
    assert pooled["comparison"] == "model vs reference"
    assert (pooled["correct"], pooled["trials"]) == (46, 68)
    assert pooled["pvalue"] == pytest.approx(stats.binomtest(46, 68, alternative="greater").pvalue, rel=1e-12)
    assert pooled["participants_discriminating"] == 1  # p3 only, after Holm


def test_chance_perfect_and_single_participant_edges() -> None:
    """At chance d' is 0; a perfect score gets d' at 1 - 1/(2n), an unbounded upper limit and a warning."""
    result = analyse_abx(abx_table({"chance": (6, 12), "perfect": (12, 12)}))
    per = result.tables["per_participant"].set_index("participant")
    assert per.loc["chance", "dprime"] == 0.0 and per.loc["chance", "dprime_low"] == 0.0
    assert per.loc["chance", "pvalue"] == pytest.approx(stats.binomtest(6, 12, alternative="greater").pvalue)
    assert per.loc["perfect", "boundary"]
    assert per.loc["perfect", "dprime"] == pytest.approx(dprime(1 - 1 / 24))
    assert np.isinf(per.loc["perfect", "dprime_high"]) and per.loc["perfect", "ci_high"] == 1.0
    assert [w["code"] for w in result.warnings] == ["abx_perfect_score"]
    record = next(r for r in result.as_dict()["tables"]["per_participant"] if r["participant"] == "perfect")
    assert record["dprime_high"] is None and np.isfinite(record["dprime_low"])
    json.dumps(result.as_dict(), allow_nan=False)
    alone = analyse_abx(abx_table({"only": (9, 10)}), plan=[0.8])
    assert alone.tables["pooled"]["pvalue"].iloc[0] == alone.tables["per_participant"]["pvalue"].iloc[0]
    assert alone.tables["plan"]["trials"].iloc[0] == trials_needed(0.8)["trials"]


def test_bad_tables_are_refused_with_the_line() -> None:
    table = abx_table({"p1": (3, 4)})
    table.loc[2, "x_is"] = "C"
    with pytest.raises(EvaluationError, match=r"x_is must be one of A, B at line\(s\) 4"):
        validate_abx(table)
    with pytest.raises(EvaluationError, match="lacks column"):
        validate_abx(table.drop(columns="answer"))
    same = abx_table({"p1": (3, 4)}, a="m", b="m")
    with pytest.raises(EvaluationError, match="condition_a equals condition_b"):
        validate_abx(same)

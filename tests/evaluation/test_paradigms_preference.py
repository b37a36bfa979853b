"""Paired preference: Bradley-Terry against a logistic GLM (statsmodels) on the difference design, Davidson's
ties model against a direct optimisation of its likelihood (scipy), circular triads against brute force."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import optimize

from evaluation.errors import EvaluationError
from evaluation.paradigms.preference import (
    analyse_preference,
    circular_triads,
    consistency,
    count_matrices,
    fit_bradley_terry,
    max_circular_triads,
    triads_null,
    validate_preference,
)

WORTH = {"a": 0.0, "b": 0.4, "c": 1.1, "d": 1.5}


def simulate(nu: float = 0.0, participants: int = 8, repeats: int = 3, seed: int = 5) -> pd.DataFrame:
    """Every pair judged ``repeats`` times per participant under Davidson's model (nu = 0: Bradley-Terry)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(participants):
        for r in range(repeats):
            for x, y in itertools.combinations(WORTH, 2):
                a, b = (x, y) if rng.random() < 0.5 else (y, x)
                pa, pb = math.exp(WORTH[a]), math.exp(WORTH[b])
                tie = nu * math.sqrt(pa * pb)
                u = rng.random() * (pa + pb + tie)
                choice = "A" if u < pa else ("B" if u < pa + pb else "none")
                rows.append((f"p{p}", f"i{r}", a, b, choice))
    return validate_preference(
        pd.DataFrame(rows, columns=["participant", "item", "condition_a", "condition_b", "choice"])
    )


def test_bradley_terry_matches_a_logistic_glm_on_the_difference_design() -> None:
    """Bradley & Terry (1952): logit P(a over b) = theta_a - theta_b, the GLM of Agresti (2013) §11.6."""
    frame = simulate()
    conditions = sorted(WORTH)
    wins, ties = count_matrices(frame, conditions)
    fit = fit_bradley_terry(wins, ties, reference=0)
    design = np.zeros((len(frame), len(conditions)))
    for row, (a, b) in enumerate(zip(frame["condition_a"], frame["condition_b"])):
        design[row, conditions.index(a)] += 1
        design[row, conditions.index(b)] -= 1
    glm = sm.GLM((frame["choice"] == "a").astype(float).to_numpy(), design[:, 1:], family=sm.families.Binomial()).fit()
    assert fit["model"] == "bradley-terry" and fit["converged"]
    assert fit["scores"][1:] == pytest.approx(glm.params, rel=1e-7, abs=1e-9)
    assert np.sqrt(np.diag(fit["covariance"]))[1:] == pytest.approx(glm.bse, rel=1e-6)
    assert fit["loglik"] == pytest.approx(glm.llf, rel=1e-9)
    # Sum to zero: effect coding, theta_d = -(theta_a + theta_b + theta_c).
    effect = design[:, :3] - design[:, [3]]
    glm_sum = sm.GLM((frame["choice"] == "a").astype(float).to_numpy(), effect, family=sm.families.Binomial()).fit()
    centred = fit_bradley_terry(wins, ties)
    assert centred["scores"][:3] == pytest.approx(glm_sum.params, rel=1e-7, abs=1e-9)
    assert np.sqrt(np.diag(centred["covariance"]))[:3] == pytest.approx(glm_sum.bse, rel=1e-6)
    assert centred["scores"].sum() == pytest.approx(0.0, abs=1e-12)


def _davidson_negloglik(params: np.ndarray, frame: pd.DataFrame, conditions: list[str]) -> float:
    theta = np.concatenate([[0.0], params[:-1]])
    nu = math.exp(params[-1])
    total = 0.0
    for a, b, choice in zip(frame["condition_a"], frame["condition_b"], frame["choice"]):
        pa, pb = math.exp(theta[conditions.index(a)]), math.exp(theta[conditions.index(b)])
        tie = nu * math.sqrt(pa * pb)
        chosen = {"a": pa, "b": pb, "none": tie}[choice]
        total -= math.log(chosen / (pa + pb + tie))
    return total


def test_davidson_ties_model_matches_a_direct_optimisation_of_its_likelihood() -> None:
    """Davidson (1970) likelihood maximised by scipy (BFGS), standard errors from its numerical Hessian."""
    frame = simulate(nu=0.6, seed=11)
    conditions = sorted(WORTH)
    wins, ties = count_matrices(frame, conditions)
    assert ties.sum() > 0
    fit = fit_bradley_terry(wins, ties, reference=0)
    direct = optimize.minimize(_davidson_negloglik, np.zeros(4), args=(frame, conditions), method="BFGS", tol=1e-10)
    assert fit["model"] == "davidson"
    assert np.append(fit["scores"][1:], fit["log_nu"]) == pytest.approx(direct.x, abs=2e-5)
    assert fit["loglik"] == pytest.approx(-direct.fun, rel=1e-9)
    h = 1e-4
    hessian = np.zeros((4, 4))
    for r in range(4):
        for c in range(4):
            e_r, e_c = np.eye(4)[r] * h, np.eye(4)[c] * h
            f = lambda v: _davidson_negloglik(v, frame, conditions)  # noqa: E731
            hessian[r, c] = (f(direct.x + e_r + e_c) - f(direct.x + e_r - e_c) - f(direct.x - e_r + e_c)
                             + f(direct.x - e_r - e_c)) / (4 * h * h)  # fmt: skip
    se = np.sqrt(np.diag(np.linalg.inv(hessian)))
    assert np.sqrt(np.diag(fit["covariance"]))[1:] == pytest.approx(se[:3], rel=1e-3)
    assert fit["log_nu_se"] == pytest.approx(se[3], rel=1e-3)


def _brute_force(direction: np.ndarray) -> int:
    k = direction.shape[0]
    return sum(
        1
        for a, b, c in itertools.combinations(range(k), 3)
        if (direction[a, b] and direction[b, c] and direction[c, a])
        or (direction[b, a] and direction[c, b] and direction[a, c])
    )


def test_circular_triads_formula_matches_a_brute_force_count() -> None:
    """Kendall & Babington Smith (1940): d = C(k,3) - sum C(a_i, 2) equals the number of cyclic triples."""
    rng = np.random.default_rng(3)
    for k in range(3, 10):
        for _ in range(20):
            upper = np.triu(rng.random((k, k)) < 0.5, 1)
            lower = np.triu(~upper, 1).T
            beats = upper | lower
            assert circular_triads(beats) == _brute_force(beats)
            assert circular_triads(beats) <= max_circular_triads(k)
    # A regular tournament on 5 conditions reaches the maximum (k^3 - k) / 24 = 5.
    regular = np.array([[(j - i) % 5 in (1, 2) for j in range(5)] for i in range(5)])
    assert circular_triads(regular) == _brute_force(regular) == max_circular_triads(5) == 5


def test_null_distribution_of_circular_triads() -> None:
    """Exact for small k (checked by enumerating tournaments here); Monte Carlo mean C(k,3)/4 for larger k."""
    k = 4
    pairs = list(itertools.combinations(range(k), 2))
    counts = np.zeros(max_circular_triads(k) + 1)
    for bits in itertools.product((0, 1), repeat=len(pairs)):
        beats = np.zeros((k, k), dtype=bool)
        for (i, j), bit in zip(pairs, bits):
            beats[i, j], beats[j, i] = bool(bit), not bit
        counts[_brute_force(beats)] += 1
    pmf, exact = triads_null(4)
    assert exact and pmf == pytest.approx(counts / counts.sum(), abs=1e-15)
    # Transitive tournaments number k!, so P(D = 0) = k! / 2^C(k,2).
    for k in (3, 5, 6):
        assert triads_null(k)[0][0] == pytest.approx(math.factorial(k) / 2 ** math.comb(k, 2))
    pmf, exact = triads_null(8)
    assert not exact
    mean = float((np.arange(pmf.size) * pmf).sum())
    assert mean == pytest.approx(math.comb(8, 3) / 4, rel=0.01)


def test_consistency_per_participant_with_its_significance() -> None:
    conditions = ["a", "b", "c", "d", "e"]
    rows = [("steady", "i1", x, y, "A") for x, y in itertools.combinations(conditions, 2)]
    cycle = [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e"), ("e", "a"), ("a", "c"), ("c", "e")]
    cycle += [("e", "b"), ("b", "d"), ("d", "a")]
    rows += [("erratic", "i1", x, y, "A") for x, y in cycle]
    rows += [("partial", "i1", "a", "b", "A"), ("partial", "i1", "b", "c", "none"), ("partial", "i1", "a", "c", "B")]
    frame = validate_preference(
        pd.DataFrame(rows, columns=["participant", "item", "condition_a", "condition_b", "choice"])
    )
    table, grouping = consistency(frame)
    table = table.set_index("participant")
    assert grouping == "participant"
    assert table.loc["steady", "circular_triads"] == 0 and table.loc["steady", "zeta"] == 1.0
    assert table.loc["steady", "pvalue"] == pytest.approx(120 / 1024)
    assert table.loc["erratic", "circular_triads"] == 5 and table.loc["erratic", "zeta"] == 0.0
    assert table.loc["erratic", "pvalue"] == 1.0
    assert not table.loc["partial", "complete"] and np.isnan(table.loc["partial", "pvalue"])
    assert table.loc["partial", "circular_triads"] == 0  # the b-c tie leaves the only triad undecided
    # With five conditions even a perfectly transitive listener has p = 0.117: nobody is warned about.
    assert [w["code"] for w in analyse_preference(frame).warnings] == []


def test_six_conditions_can_show_inconsistency() -> None:
    """P(D = 0) = 6! / 2^15 = 0.022 < 0.05: a transitive listener passes, a cyclic one is named."""
    six = list("abcdef")
    rows = [("steady", "i", x, y, "A") for x, y in itertools.combinations(six, 2)]
    rows += [
        ("cyclic", "i", six[i], six[j], "A" if (j - i) % 6 in (1, 2) else "B")
        for i, j in itertools.combinations(range(6), 2)
    ]
    frame = validate_preference(
        pd.DataFrame(rows, columns=["participant", "item", "condition_a", "condition_b", "choice"])
    )
    result = analyse_preference(frame)
    table = result.tables["consistency"].set_index("participant")
    assert table.loc["steady", "pvalue"] == pytest.approx(720 / 32768) == table.loc["steady", "min_pvalue"]
    assert table.loc["cyclic", "circular_triads"] == _brute_force(
        _decided_matrix(frame[frame["participant"] == "cyclic"], six)
    )
    assert table.loc["cyclic", "pvalue"] > 0.05
    assert [w["code"] for w in result.warnings] == ["preference_inconsistent"]
    assert "cyclic" in result.warnings[0]["message"] and "steady" not in result.warnings[0]["message"]


def _decided_matrix(frame: pd.DataFrame, conditions: list[str]) -> np.ndarray:
    wins, _ = count_matrices(frame, conditions)
    return wins > wins.T


def test_scores_with_intervals_and_a_fixed_reference() -> None:
    frame = simulate(nu=0.4, seed=2)
    result = analyse_preference(frame, confidence_level=0.9)
    scores = result.tables["scores"].set_index("condition")
    assert scores["score"].sum() == pytest.approx(0.0, abs=1e-10)
    assert (scores["ci_high"] - scores["score"]).to_numpy() == pytest.approx(1.6448536269514722 * scores["se"])
    assert scores["worth"].sum() == pytest.approx(1.0)
    assert result.summary["model"] == "davidson" and result.summary["ties_parameter"]["estimate"] > 0
    anchored = analyse_preference(frame, reference="b").tables["scores"].set_index("condition")
    assert anchored.loc["b", "score"] == 0.0 and anchored.loc["b", "se"] == 0.0
    assert (anchored["score"] - anchored.loc["a", "score"]).to_numpy() == pytest.approx(
        (scores["score"] - scores.loc["a", "score"]).to_numpy(), abs=1e-8
    )
    with pytest.raises(EvaluationError, match="reference condition 'z'"):
        analyse_preference(frame, reference="z")


def test_boundaries_all_ties_and_a_perfect_winner_report_null_scores() -> None:
    """No finite MLE: the scores are null with the reason; the win shares stay."""
    columns = ["participant", "item", "condition_a", "condition_b", "choice"]
    ties = pd.DataFrame([("p1", "i1", "a", "b", "none"), ("p1", "i1", "b", "c", "none")], columns=columns)
    result = analyse_preference(ties)
    assert not result.summary["mle_exists"] and "no preference" in result.summary["reason"]
    assert result.tables["scores"]["score"].isna().all()
    assert result.tables["scores"]["win_share"].tolist() == [0.5, 0.5, 0.5]
    json.dumps(result.as_dict(), allow_nan=False)
    rows = [(f"p{p}", "i1", "star", other, "A") for p in range(3) for other in ("x", "y")]
    rows += [(f"p{p}", "i1", "x", "y", "A" if p % 2 else "B") for p in range(3)]
    winner = analyse_preference(pd.DataFrame(rows, columns=columns))
    assert not winner.summary["mle_exists"] and "star" in winner.summary["reason"]
    assert [w["code"] for w in winner.warnings] == ["bradley_terry_no_mle"]
    assert winner.as_dict()["tables"]["scores"][0]["score"] is None
    assert winner.tables["scores"].set_index("condition").loc["star", "win_share"] == 1.0


def test_a_condition_that_lost_only_by_ties_has_no_davidson_mle() -> None:
    """Davidson (1970): 4 wins, 0 losses and 2 ties between two conditions keep the likelihood
    rising as the score gap and the tie parameter grow together (sup = 4 log 2/3 + 2 log 1/3,
    never reached), so the scores are null with the reason instead of a failed fit."""
    columns = ["participant", "item", "condition_a", "condition_b", "choice"]
    rows = [(f"p{i}", "i1", "m1", "m2", c) for i, c in enumerate(["A"] * 4 + ["none"] * 2)]
    result = analyse_preference(pd.DataFrame(rows, columns=columns))
    assert not result.summary["mle_exists"] and "run off to infinity" in result.summary["reason"]
    assert result.tables["scores"]["score"].isna().all()
    assert [w["code"] for w in result.warnings] == ["bradley_terry_no_mle"]
    # One loss of m1 makes the maximum finite: the fit is back.
    rows.append(("p9", "i1", "m1", "m2", "B"))
    finite = analyse_preference(pd.DataFrame(rows, columns=columns))
    assert finite.summary["mle_exists"] and finite.tables["scores"]["score"].notna().all()


def test_one_participant_and_bad_choices() -> None:
    frame = simulate(participants=1, repeats=6, seed=4)
    result = analyse_preference(frame)
    assert result.summary["participants"] == 1 and result.summary["mle_exists"]
    assert result.summary["triads_by"] == "participant_item" and len(result.tables["consistency"]) == 6
    bad = frame.copy()
    bad.loc[3, "choice"] = "maybe"
    with pytest.raises(EvaluationError, match=r"choice must be one of a, b, none at line\(s\) 5"):
        validate_preference(bad)

"""BS.1116-3: difference grades, the §4.2 post-screening t-test against scipy, the per-condition t intervals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evaluation.errors import EvaluationError
from evaluation.paradigms.bs1116 import analyse_bs1116, identification_test, validate_bs1116

COLUMNS = ["participant", "item", "condition", "reference_is", "grade_b", "grade_c"]


def trials(participant: str, condition: str, differences: list[float], reference: float = 5.0) -> list[tuple]:
    """One trial per difference grade, the hidden reference alternating between B and C."""
    rows = []
    for k, d in enumerate(differences):
        side = "B" if k % 2 == 0 else "C"
        grade_condition = reference + d
        grades = (reference, grade_condition) if side == "B" else (grade_condition, reference)
        rows.append((participant, f"i{k}", condition, side, *grades))
    return rows


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    rng = np.random.default_rng(1116)
    rows = []
    for p in range(8):
        for condition, shift in (("codec_a", -1.2), ("codec_b", -0.4)):
            d = np.clip(np.round(shift + rng.normal(0, 0.5, 6), 1), -4, 0.0)
            rows += trials(f"p{p}", condition, d.tolist(), reference=float(np.round(rng.uniform(4.6, 5.0), 1)))
    # guesser: cannot tell the hidden reference from the condition
    rows += trials("guesser", "codec_a", [-0.5, 0.6, 0.3, -0.2, 0.4, -0.1], reference=4.0)
    rows += trials("guesser", "codec_b", [0.2, -0.3, 0.5, 0.0, -0.4, 0.3], reference=4.0)
    # borderline: one-sided p = 0.067, excluded at alpha 0.05 and kept at 0.1
    rows += trials("borderline", "codec_a", [-0.5, 0.1, -0.4, 0.1, -0.3, -0.1], reference=4.0)
    rows += trials("borderline", "codec_b", [-0.2, 0.1, -0.3, 0.2, -0.1, 0.1], reference=4.0)
    return validate_bs1116(pd.DataFrame(rows, columns=COLUMNS))


def test_difference_grade_is_condition_minus_hidden_reference() -> None:
    frame = validate_bs1116(
        pd.DataFrame([("p", "i", "x", "B", 5.0, 3.5), ("p", "j", "x", "c", 4.2, 4.9)], columns=COLUMNS)
    )
    assert frame["difference"].tolist() == pytest.approx([-1.5, -0.7])
    assert frame["grade_reference"].tolist() == [5.0, 4.9]


def test_post_screening_is_scipys_one_sided_t_test(table: pd.DataFrame) -> None:
    """BS.1116-3 §4.2: one-sided t-test of each assessor's difference grades, H1: mean < 0."""
    result = analyse_bs1116(table, alpha=0.05)
    screening = result.tables["screening"].set_index("participant")
    for participant, group in table.groupby("participant"):
        reference = stats.ttest_1samp(group["difference"], 0.0, alternative="less")
        assert screening.loc[participant, "t"] == pytest.approx(reference.statistic, rel=1e-12)
        assert screening.loc[participant, "pvalue"] == pytest.approx(reference.pvalue, rel=1e-10)
        assert screening.loc[participant, "excluded"] == (reference.pvalue > 0.05)
    assert result.summary["participants"]["excluded"] == ["borderline", "guesser"]
    assert 0.05 < screening.loc["borderline", "pvalue"] < 0.1
    assert analyse_bs1116(table, alpha=0.1).summary["participants"]["excluded"] == ["guesser"]
    assert screening.loc["guesser", "reversed"] == 6 and "not reliably identified" in screening.loc["guesser", "reason"]


def test_condition_means_are_t_intervals_of_per_assessor_means(table: pd.DataFrame) -> None:
    result = analyse_bs1116(table, confidence_level=0.95)
    conditions = result.tables["conditions"].set_index("condition")
    kept = table[~table["participant"].isin(["guesser", "borderline"])]
    for condition, group in kept.groupby("condition"):
        means = group.groupby("participant")["difference"].mean()
        low, high = stats.t.interval(0.95, len(means) - 1, loc=means.mean(), scale=stats.sem(means))
        assert conditions.loc[condition, "mean_difference"] == pytest.approx(means.mean())
        assert (conditions.loc[condition, "ci_low"], conditions.loc[condition, "ci_high"]) == pytest.approx((low, high))
        assert conditions.loc[condition, "n"] == 8 and conditions.loc[condition, "n_trials"] == 48
    flagged_only = analyse_bs1116(table, apply_screening=False)
    assert flagged_only.summary["participants"]["excluded"] == []
    assert flagged_only.tables["conditions"]["n"].tolist() == [10, 10]
    assert flagged_only.tables["screening"].set_index("participant").loc["guesser", "excluded"]


def test_identification_edges_zero_spread_one_trial_and_everyone_excluded() -> None:
    steady = identification_test(np.array([-1.0, -1.0, -1.0]))
    assert steady["pvalue"] == 0.0 and steady["t"] == -np.inf
    assert identification_test(np.array([0.0, 0.0]))["pvalue"] == 1.0
    assert np.isnan(identification_test(np.array([-2.0]))["pvalue"])
    rows = trials("one", "x", [-2.0]) + trials("flat", "x", [0.0, 0.0, 0.0])
    result = analyse_bs1116(pd.DataFrame(rows, columns=COLUMNS))
    screening = result.tables["screening"].set_index("participant")
    assert not screening.loc["one", "excluded"] and "cannot be run" in screening.loc["one", "reason"]
    assert screening.loc["flat", "excluded"]
    assert result.tables["conditions"]["n"].tolist() == [1]
    json.dumps(result.as_dict(), allow_nan=False)
    nobody = analyse_bs1116(pd.DataFrame(trials("flat", "x", [0.0, 0.1, 0.0], reference=4.5), columns=COLUMNS))
    assert nobody.tables["conditions"].empty and [w["code"] for w in nobody.warnings] == ["bs1116_all_excluded"]


def test_bad_grades_and_sides_are_refused() -> None:
    rows = trials("p", "x", [-1.0, -0.5])
    bad = pd.DataFrame(rows, columns=COLUMNS)
    bad.loc[1, "grade_c"] = 5.5
    with pytest.raises(EvaluationError, match=r"grade_c needs a value in 1..5 at line\(s\) 3"):
        validate_bs1116(bad)
    bad = pd.DataFrame(rows, columns=COLUMNS)
    bad.loc[0, "reference_is"] = "A"
    with pytest.raises(EvaluationError, match="reference_is must be one of B, C"):
        validate_bs1116(bad)
    with pytest.raises(EvaluationError, match="duplicate"):
        validate_bs1116(pd.DataFrame(rows + rows[:1], columns=COLUMNS))

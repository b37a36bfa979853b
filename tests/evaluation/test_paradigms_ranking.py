"""Ranking: Friedman and pairwise Wilcoxon-Holm on per-participant mean ranks against scipy and statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from evaluation.errors import EvaluationError
from evaluation.paradigms.ranking import analyse_ranking, validate_ranking

COLUMNS = ["participant", "item", "condition", "rank"]


@pytest.fixture(scope="module")
def ranks() -> pd.DataFrame:
    rng = np.random.default_rng(37)
    quality = {"a": 1.0, "b": 0.6, "c": 0.2, "d": 0.0}
    rows = []
    # 16 listeners: with tied differences scipy's Wilcoxon runs a slow exact permutation for n <= 13.
    for p in range(16):
        for item in ("i1", "i2"):
            noisy = {c: q + rng.normal(0, 0.5) for c, q in quality.items()}
            order = sorted(noisy, key=lambda c: -noisy[c])
            rows += [(f"p{p}", item, c, order.index(c) + 1) for c in quality]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_friedman_and_pairwise_tests_match_scipy(ranks: pd.DataFrame) -> None:
    result = analyse_ranking(ranks, n_resamples=500)
    wide = ranks.pivot_table(index="participant", columns="condition", values="rank", aggfunc="mean")
    reference = stats.friedmanchisquare(*[wide[c] for c in wide.columns])
    friedman = result.summary["friedman"]
    assert friedman["statistic"] == pytest.approx(reference.statistic) and friedman["pvalue"] == pytest.approx(
        reference.pvalue
    )
    assert friedman["kendall_w"] == pytest.approx(reference.statistic / (16 * 3))
    pairwise = result.tables["pairwise"]
    assert len(pairwise) == 6
    for row in pairwise.itertuples():
        expected = stats.wilcoxon(wide[row.a], wide[row.b], zero_method="pratt")
        assert row.pvalue == pytest.approx(expected.pvalue)
    assert pairwise["pvalue_holm"].to_numpy() == pytest.approx(multipletests(pairwise["pvalue"], method="holm")[1])
    table = result.tables["conditions"]
    assert table["condition"].iloc[0] == "a" and table["mean_rank"].is_monotonic_increasing
    assert table.set_index("condition")["mean_rank"].to_dict() == pytest.approx(wide.mean().to_dict())


def test_mid_ranks_are_accepted_and_other_ranks_refused() -> None:
    good = pd.DataFrame([("p", "i", "a", 1.5), ("p", "i", "b", 1.5), ("p", "i", "c", 3)], columns=COLUMNS)
    assert validate_ranking(good)["rank"].tolist() == [1.5, 1.5, 3.0]
    bad = good.assign(rank=[1, 1, 3])
    with pytest.raises(EvaluationError, match=r"ranks of participant p, item i are not 1..k"):
        validate_ranking(bad)
    with pytest.raises(EvaluationError, match="rank needs a value"):
        validate_ranking(good.assign(rank=[0, 1, 2]))


def test_two_conditions_or_one_participant_leave_friedman_undefined() -> None:
    two = pd.DataFrame(
        [(f"p{p}", "i", c, r) for p in range(5) for c, r in (("a", 1 + p % 2), ("b", 2 - p % 2))], columns=COLUMNS
    )
    result = analyse_ranking(two, n_resamples=100)
    assert [w["code"] for w in result.warnings] == ["ranking_friedman_undefined"]
    assert result.as_dict()["summary"]["friedman"]["statistic"] is None
    one = pd.DataFrame([("p", "i", c, r) for c, r in (("a", 1), ("b", 2), ("c", 3))], columns=COLUMNS)
    alone = analyse_ranking(one, n_resamples=100)
    assert alone.summary["friedman"]["n"] == 1 and alone.warnings

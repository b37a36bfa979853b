"""Friedman, Wilcoxon, Holm, effect sizes and the permutation test against scipy, statsmodels, pingouin."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from evaluation.descriptives import participant_means
from evaluation.nonparametric import (
    all_pairs,
    friedman,
    hodges_lehmann,
    holm,
    pairwise_wilcoxon,
    permutation_test_paired,
    rank_biserial,
    smallest_exact_wilcoxon_p,
)

from ._data import known


@pytest.fixture(scope="module")
def wide() -> pd.DataFrame:
    return participant_means(known(n_participants=14, n_items=3))


def test_friedman_and_kendalls_w_match_scipy_and_pingouin(wide: pd.DataFrame) -> None:
    models = ["model_a", "model_b", "model_c"]
    result = friedman(wide[models])
    reference = stats.friedmanchisquare(*[wide[c] for c in models])
    assert result["statistic"] == pytest.approx(reference.statistic)
    assert result["pvalue"] == pytest.approx(reference.pvalue)
    long = wide[models].reset_index().melt(id_vars="participant", var_name="condition", value_name="rating")
    pg_result = pg.friedman(data=long, dv="rating", within="condition", subject="participant")
    assert result["kendall_w"] == pytest.approx(pg_result["W"].iloc[0])
    assert result["n"] == 14 and result["k"] == 3


def test_friedman_uses_complete_cases(wide: pd.DataFrame) -> None:
    gappy = wide[["model_a", "model_b", "model_c"]].copy()
    gappy.iloc[0, 1] = np.nan
    result = friedman(gappy)
    assert result["n"] == 13 and result["n_incomplete"] == 1
    assert result["statistic"] == pytest.approx(stats.friedmanchisquare(*[gappy.dropna()[c] for c in gappy]).statistic)


def test_holm_matches_statsmodels() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5, 0.04])
    assert holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    with_nan = holm(np.array([0.01, np.nan, 0.02]))
    assert np.isnan(with_nan[1]) and with_nan[[0, 2]] == pytest.approx(multipletests([0.01, 0.02], method="holm")[1])


def test_rank_biserial_matches_pingouin_and_hodges_lehmann_matches_definition() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(60, 10, 25).round()
    y = x - rng.normal(3, 6, 25).round()
    y[:3] = x[:3]  # zero differences
    assert rank_biserial(x - y) == pytest.approx(pg.wilcoxon(x, y)["RBC"].iloc[0])
    d = x - y
    walsh = [(d[i] + d[j]) / 2 for i in range(d.size) for j in range(i, d.size)]
    assert hodges_lehmann(d) == pytest.approx(np.median(walsh))


def test_pairwise_wilcoxon_uses_pratt_and_holm(wide: pd.DataFrame) -> None:
    pairs = all_pairs(["model_a", "model_b", "model_c", "anchor70"])
    table = pairwise_wilcoxon(wide, pairs, n_resamples=2000, seed=1)
    assert len(table) == 6
    for row in table.itertuples():
        reference = stats.wilcoxon(wide[row.a], wide[row.b], zero_method="pratt")
        assert row.statistic == pytest.approx(reference.statistic)
        assert row.pvalue == pytest.approx(reference.pvalue)
    assert table["pvalue_holm"].to_numpy() == pytest.approx(multipletests(table["pvalue"], method="holm")[1])
    assert table["perm_pvalue_holm"].to_numpy() == pytest.approx(multipletests(table["perm_pvalue"], method="holm")[1])
    ab = table[(table["a"] == "model_a") & (table["b"] == "model_b")].iloc[0]
    # True difference 20 points: every listener prefers model_a.
    assert ab["effect_size"] == 1.0 and ab["hodges_lehmann"] > 10


def test_exact_permutation_test_matches_scipy() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(50, 10, 10)
    b = a - rng.normal(2, 5, 10)
    ours = permutation_test_paired(a, b, n_resamples=10_000, seed=0)
    assert ours["exact"]  # 2^10 sign patterns <= 10 000
    reference = stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        n_resamples=10_000,
        vectorized=True,
    )
    assert ours["pvalue"] == pytest.approx(reference.pvalue)


def test_random_permutation_test_is_seeded_and_close_to_scipy() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(50, 10, 40)
    b = a - rng.normal(1.0, 6, 40)
    first = permutation_test_paired(a, b, n_resamples=10_000, seed=9)
    assert not first["exact"] and first["resamples"] == 10_000
    assert first == permutation_test_paired(a, b, n_resamples=10_000, seed=9)
    reference = stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        n_resamples=10_000,
        vectorized=True,
        rng=np.random.default_rng(0),
    )
    assert first["pvalue"] == pytest.approx(reference.pvalue, abs=0.02)


def test_smallest_exact_p() -> None:
    assert smallest_exact_wilcoxon_p(10) == 2 / 1024
    x = np.arange(1.0, 11.0)
    assert stats.wilcoxon(x + 10, x, method="exact").pvalue == pytest.approx(smallest_exact_wilcoxon_p(10))

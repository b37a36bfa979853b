"""Objective-against-subjective correlations against scipy and the permutation definition."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evaluation.correlation import _kendall_rows, correlate, correlation, permutation_pvalue
from evaluation.settings import Settings
from evaluation.simulate import simulate_metrics

from ._data import known


def test_row_correlations_match_scipy_including_ties() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 30).astype(float)
    y = rng.integers(0, 4, 30).astype(float)
    assert correlation(x, y, "kendall") == pytest.approx(stats.kendalltau(x, y).statistic)
    assert correlation(x, y, "spearman") == pytest.approx(stats.spearmanr(x, y).statistic)
    assert correlation(x, y, "pearson") == pytest.approx(stats.pearsonr(x, y).statistic)
    rows = rng.normal(size=(5, 30))
    assert _kendall_rows(rows, y) == pytest.approx([stats.kendalltau(r, y).statistic for r in rows])


def test_permutation_pvalue_is_exact_for_few_models() -> None:
    x = np.array([80.0, 70.0, 65.0, 40.0, 30.0])
    y = np.array([0.01, 0.03, 0.02, 0.2, 0.5])
    p, exact = permutation_pvalue(x, y, "spearman", 10_000, seed=0)
    observed = stats.spearmanr(x, y).statistic
    null = [stats.spearmanr(x, y[list(order)]).statistic for order in itertools.permutations(range(5))]
    assert exact and p == pytest.approx(np.mean(np.abs(null) >= abs(observed) - 1e-12))


def test_correlate_levels_and_log_pearson() -> None:
    ratings = known(n_participants=15, n_items=5)
    metrics = simulate_metrics(ratings, seed=1)
    models = ratings[ratings["kind"] == "model"]
    table, points = correlate(models, metrics, Settings(correlation_resamples=500))
    cell = table[(table["level"] == "model_item")].set_index("method")
    merged = points[points["level"] == "model_item"]
    assert cell.loc["spearman", "rho"] == pytest.approx(
        stats.spearmanr(merged["mean_rating"], merged["value"]).statistic
    )
    assert cell.loc["pearson", "rho"] == pytest.approx(
        stats.pearsonr(merged["mean_rating"], np.log10(merged["value"])).statistic
    )
    assert cell.loc["pearson", "transform"] == "log10"
    assert cell.loc["spearman", "rho"] < -0.8  # lower ESR, higher rating by construction
    for row in table.itertuples():
        assert row.ci_low <= row.rho <= row.ci_high
    per_model = table[table["level"] == "model"].set_index("method")
    assert per_model.loc["spearman", "n"] == 3
    assert per_model.loc["spearman", "pvalue_method"] == "permutation (exact)"
    # 3 models in perfect order: 2 of the 6 orderings reach |rho| = 1.
    assert per_model.loc["spearman", "pvalue"] == pytest.approx(2 / 6)


def test_bootstrap_resamples_participants() -> None:
    # One participant's ratings decide the ordering: resampling listeners must widen the interval.
    rows = []
    for p in range(6):
        for k, c in enumerate(["m1", "m2", "m3", "m4"]):
            rows.append((f"p{p}", "i", c, 50.0 + (30.0 * k if p == 0 else 0.0) + p, "model"))
    ratings = pd.DataFrame(rows, columns=["participant", "item", "condition", "rating", "kind"])
    metrics = pd.DataFrame(
        {"condition": ["m1", "m2", "m3", "m4"], "item": "i", "metric": "mae", "value": [4.0, 3.0, 2.0, 1.0]}
    )
    table, _ = correlate(ratings, metrics, Settings(correlation_resamples=400))
    row = table[(table["level"] == "model_item") & (table["method"] == "spearman")].iloc[0]
    assert row["rho"] == pytest.approx(-1.0)
    assert np.isnan(row["ci_high"]) or row["ci_high"] > -1.0 or row["resamples_valid"] == 400

"""Residual checks of the Gaussian model, checked against statsmodels OLS, pandas and the test definitions."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import linalg, stats

from evaluation import analyse
from evaluation.assumptions import (
    check_assumptions,
    condition_residuals,
    decorrelated_residuals,
    equal_variances,
    qq_points,
    residual_checks,
)
from evaluation.io import validate_ratings
from evaluation.mixed import fit_mixed_model

from ._data import known

CONDITIONS = ["reference", "model_a", "model_b", "model_c", "anchor70", "anchor35"]


def _unbalanced(seed: int = 3) -> pd.DataFrame:
    ratings = known(n_participants=14, n_items=5, seed=seed)
    drop = np.random.default_rng(seed).choice(len(ratings), 40, replace=False)
    return ratings.drop(index=drop).reset_index(drop=True)


def test_residuals_are_the_per_condition_ols_residuals_of_statsmodels() -> None:
    """statsmodels OLS rating ~ C(participant) + C(item) fitted to each condition alone (unbalanced table)."""
    ratings = _unbalanced()
    residuals = condition_residuals(ratings, CONDITIONS)
    table, _ = residual_checks(residuals, CONDITIONS)
    for c in CONDITIONS:
        frame = ratings[ratings["condition"] == c].reset_index(drop=True)
        fit = smf.ols("rating ~ C(participant) + C(item)", data=frame).fit()
        ours = residuals[residuals["condition"] == c].merge(frame[["participant", "item"]], how="right")
        assert ours["residual"].to_numpy() == pytest.approx(fit.resid.to_numpy(), abs=1e-7)
        row = table[table["condition"] == c].iloc[0]
        assert row["df"] == fit.df_resid
        assert row["residual_sd"] == pytest.approx(np.sqrt(fit.mse_resid), rel=1e-8)
        # Shape statistics: pandas' adjusted G1 / G2, and scipy's tests on statsmodels' residuals.
        assert row["skewness"] == pytest.approx(fit.resid.skew(), rel=1e-6)
        assert row["excess_kurtosis"] == pytest.approx(fit.resid.kurt(), rel=1e-6)
        assert row["shapiro_w"] == pytest.approx(stats.shapiro(fit.resid).statistic, rel=1e-6)
        assert row["dagostino_p"] == pytest.approx(stats.normaltest(fit.resid).pvalue, rel=1e-5)


def test_pooled_residual_variance_is_the_mixed_models_in_a_balanced_design() -> None:
    """REML of the crossed model equals the ANOVA estimator in a balanced table (evaluation.lmm, tested there)."""
    rng = np.random.default_rng(11)
    p, i, c = 14, 6, 4
    values = (
        np.array([40.0, 55, 60, 75])[None, None, :]
        + rng.normal(0, 5, (p, 1, 1))
        + rng.normal(0, 8, (1, i, 1))
        + rng.normal(0, 4, (p, 1, c))
        + rng.normal(0, 3, (1, i, c))
        + rng.normal(0, 6, (p, i, c))
    )
    index = pd.MultiIndex.from_product(
        [[f"p{k:02d}" for k in range(p)], [f"i{k}" for k in range(i)], ["m1", "m2", "m3", "m4"]],
        names=["participant", "item", "condition"],
    )
    ratings = index.to_frame(index=False).assign(rating=values.ravel(), kind="model")
    conditions = ["m1", "m2", "m3", "m4"]
    block, _, _ = check_assumptions(ratings, conditions)
    mixed = fit_mixed_model(ratings, conditions, "m1")
    assert not mixed["boundary"] and mixed["converged"]
    assert block["pooled_residual_sd"] ** 2 == pytest.approx(mixed["variance_components"]["residual"], rel=1e-6)
    variances = np.array([r["residual_sd"] ** 2 for r in block["per_condition"]])
    assert variances.mean() == pytest.approx(block["pooled_residual_sd"] ** 2, rel=1e-12)


def test_equal_variance_tests_follow_their_definitions() -> None:
    """Brown & Forsythe (1974) and Levene (1960): one-way ANOVA F of absolute deviations from the median / mean."""
    ratings = _unbalanced(seed=5)
    tests = equal_variances(ratings, CONDITIONS)
    groups = []
    for c in CONDITIONS:
        # Decorrelated residuals by hand: complete listeners, Helmert contrasts on both sides.
        table = ratings[ratings["condition"] == c].pivot(index="participant", columns="item", values="rating").dropna()
        rows, columns = linalg.helmert(table.shape[0]), linalg.helmert(table.shape[1])
        groups.append((rows @ table.to_numpy() @ columns.T).ravel())
    for name, centre in (("brown_forsythe", np.median), ("levene", np.mean)):
        reference = stats.f_oneway(*[np.abs(g - centre(g)) for g in groups])
        assert tests[name]["statistic"] == pytest.approx(reference.statistic, rel=1e-9)
        assert tests[name]["pvalue"] == pytest.approx(reference.pvalue, rel=1e-6)
        assert (tests[name]["df1"], tests[name]["df2"]) == (5, sum(g.size for g in groups) - 6)


def test_decorrelated_residuals_are_independent_with_the_residual_variance() -> None:
    """Rotated residuals of a complete table: (P - 1)(I - 1) of them, same sum of squares as the OLS residuals."""
    ratings = known(n_participants=9, n_items=4, clip=False)
    z = decorrelated_residuals(ratings, "model_b")
    frame = ratings[ratings["condition"] == "model_b"]
    fit = smf.ols("rating ~ C(participant) + C(item)", data=frame).fit()
    assert z.size == 8 * 3 == fit.df_resid
    assert np.sum(z**2) == pytest.approx(fit.ssr, rel=1e-10)


def test_brown_forsythe_holds_its_level() -> None:
    """200 simulated tests with equal residual SDs, 20 listeners x 3 excerpts x 3 conditions: rejections near 5 %."""
    rejected = 0
    for seed in range(200):
        data = _gaussian({"m1": 6.0, "m2": 6.0, "m3": 6.0}, seed=seed, items=3)
        rejected += equal_variances(data, ["m1", "m2", "m3"])["brown_forsythe"]["pvalue"] < 0.05
    # Measured 0.05 over 300 tests; on the raw correlated residuals it is 0.14 (MC SE 0.015 at 200).
    assert rejected / 200 <= 0.09


def _gaussian(noise: dict[str, float], seed: int, draw=None, items: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(20):
        listener = rng.normal(0, 5)
        for i in range(items):
            for c, sd in noise.items():
                value = 50 + listener + (draw(rng, sd) if draw else rng.normal(0, sd))
                rows.append((f"p{p:02d}", f"i{i}", c, value))
    return pd.DataFrame(rows, columns=["participant", "item", "condition", "rating"]).assign(kind="model")


def test_unequal_variances_and_skewed_residuals_are_found_and_equal_normal_ones_are_not() -> None:
    equal = _gaussian({"m1": 6.0, "m2": 6.0, "m3": 6.0}, seed=1)
    block, _, words = check_assumptions(equal, ["m1", "m2", "m3"])
    assert block["equal_variance"]["brown_forsythe"]["pvalue"] > 0.05
    assert not words
    unequal = _gaussian({"m1": 3.0, "m2": 6.0, "m3": 12.0}, seed=1)
    block, _, words = check_assumptions(unequal, ["m1", "m2", "m3"])
    assert block["equal_variance"]["brown_forsythe"]["pvalue"] < 1e-6
    assert [w["code"] for w in words] == ["unequal_variances"]
    assert re.search(r"residual SD from [23]\.\d \(m1\) to 1[12]\.\d \(m3\)", words[0]["message"])
    skewed = _gaussian({"m1": 6.0, "m2": 6.0}, seed=2, draw=lambda rng, sd: sd * rng.exponential())
    block, _, words = check_assumptions(skewed, ["m1", "m2"])
    assert "residual_shape" in [w["code"] for w in words]
    # Exponential errors (skewness 2), diluted by the listener and excerpt means the residuals subtract.
    assert all(r["skewness"] > 0.5 and r["shapiro_p"] < 0.001 for r in block["per_condition"])
    assert block["pooled"]["skewness"] > 1 and block["pooled"]["dagostino_p"] < 1e-6


def test_analysis_reports_the_checks() -> None:
    ratings = validate_ratings(known(n_participants=10, n_items=3))
    stats_json = analyse(ratings, None, {"bootstrap_resamples": 300, "permutation_resamples": 500}).stats()
    block = stats_json["assumptions"]
    assert [r["condition"] for r in block["per_condition"]][:2] == ["reference", "model_a"]
    assert block["mixed_model_residual_sd"] > 0 and block["pooled"]["n"] == len(ratings)
    assert set(block["equal_variance"]) == {"brown_forsythe", "levene"}


def test_qq_points_are_scipys_probplot_of_residuals_scaled_to_lie_on_the_diagonal() -> None:
    """scipy.stats.probplot (Filliben 1975) of the residuals over their root mean square; normal ones: slope 1."""
    ratings = _gaussian({"m1": 6.0, "m2": 10.0}, seed=4)
    residuals = condition_residuals(ratings, ["m1", "m2"])
    table, _ = residual_checks(residuals, ["m1", "m2"])
    points = qq_points(residuals, table, max_points=50)
    for c in ("m1", "m2"):
        values = residuals.loc[residuals["condition"] == c, "residual"].to_numpy()
        theoretical, ordered = stats.probplot(values / np.sqrt(np.mean(values**2)), fit=False)
        mine = points[points["condition"] == c]
        assert len(mine) == 50
        assert mine["theoretical"].iloc[[0, -1]].tolist() == pytest.approx(list(theoretical[[0, -1]]))
        assert mine["sample"].iloc[[0, -1]].tolist() == pytest.approx(list(ordered[[0, -1]]))
        slope = np.polyfit(theoretical, ordered, 1)[0]
        # Divided by the SD on df instead, the slope would be sqrt(df / n) = 0.89 here.
        assert slope == pytest.approx(1.0, abs=0.05)

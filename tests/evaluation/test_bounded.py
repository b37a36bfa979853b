"""Bounded-scale intervals, the beta model and the ceiling flag, checked against statsmodels and scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import special, stats
from statsmodels.othermod.betareg import BetaModel

from evaluation import analyse
from evaluation.bootstrap import bca_mean
from evaluation.bounded import beta_by_condition, ceiling_equivalence, logit_interval, squeeze
from evaluation.descriptives import t_interval, tukey_hinges
from evaluation.errors import EvaluationError
from evaluation.settings import Settings

from ._data import known


def _ceiling_sample(n: int = 12, seed: int = 0) -> np.ndarray:
    # Per-listener means piled near the top of the scale: beta with mean 0.96, precision 25.
    return 100 * np.random.default_rng(seed).beta(0.96 * 25, 0.04 * 25, n)


def test_logit_interval_is_the_fractional_logit_glm_interval() -> None:
    """Intercept-only quasi-binomial GLM with Pearson dispersion (Papke & Wooldridge 1996), statsmodels."""
    values = _ceiling_sample(15, seed=3)
    fit = sm.GLM(values / 100, np.ones((values.size, 1)), family=sm.families.Binomial()).fit(scale="X2")
    half = stats.t.ppf(0.975, values.size - 1) * fit.bse[0]
    expected = 100 * special.expit(fit.params[0] + np.array([-half, half]))
    assert logit_interval(values, 0.95) == pytest.approx(tuple(expected), rel=1e-9)


def test_intervals_near_the_ceiling_stay_inside_the_scale_where_t_does_not() -> None:
    values = np.array([100, 100, 100, 99, 100, 100, 98, 100, 100, 70.0])
    t_low, t_high = t_interval(values)
    assert t_high > 100  # the Student-t interval leaves the scale here
    low, high = logit_interval(values)
    assert 0 < low < values.mean() < high < 100
    bca = bca_mean(values[None, :], 4000, 0.95, seed=1)[0]
    # BCa ends are quantiles of resampled means: never beyond the largest rating.
    assert values.min() <= bca[0] < bca[1] <= values.max() <= 100


def test_logit_interval_undefined_cases() -> None:
    assert np.isnan(logit_interval(np.array([50.0]))).all()
    assert np.isnan(logit_interval(np.full(5, 100.0))).all()
    assert logit_interval(np.full(5, 40.0)) == pytest.approx((40.0, 40.0))


def test_logit_interval_covers_better_than_t_near_the_ceiling() -> None:
    """Monte Carlo coverage of the true mean 96 (beta, precision 10), 3000 samples of 12 listeners."""
    rng = np.random.default_rng(7)
    samples = 100 * rng.beta(0.96 * 10, 0.04 * 10, (3000, 12))
    logit = np.array([logit_interval(s) for s in samples])
    student = np.array([t_interval(s) for s in samples])

    def coverage(intervals: np.ndarray) -> float:
        return float(np.mean((intervals[:, 0] <= 96.0) & (96.0 <= intervals[:, 1])))

    # Measured: logit 0.919, t 0.871 (its upper end beyond 100 in 22 % of samples); MC SE about 0.005.
    assert coverage(logit) >= 0.90
    assert coverage(logit) >= coverage(student) + 0.03
    assert np.mean(student[:, 1] > 100) > 0.1 and np.all(logit[:, 1] < 100)


def _wide(seed: int = 1, n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "high": 100 * rng.beta(0.93 * 40, 0.07 * 40, n),
            "mid": 100 * rng.beta(0.55 * 15, 0.45 * 15, n),
            "low": 100 * rng.beta(0.2 * 60, 0.8 * 60, n),
        }
    )


def test_beta_model_matches_statsmodels_betamodel_and_scipy() -> None:
    """Saturated beta regression with per-condition precision: statsmodels BetaModel; per-condition scipy beta.fit."""
    wide = _wide()
    conditions = list(wide.columns)
    ours = beta_by_condition(wide, conditions)
    long = wide.melt(var_name="condition", value_name="y")
    dummies = pd.get_dummies(long["condition"])[conditions].to_numpy(dtype=float)
    fit = BetaModel(long["y"].to_numpy() / 100, dummies, exog_precision=dummies).fit(disp=0)
    k = len(conditions)
    z = stats.norm.ppf(0.975)
    # Newton's method ends closer to the optimum than statsmodels' BFGS: at least its likelihood.
    params = np.concatenate([special.logit(ours["mean"] / 100), np.log(ours["precision"])])
    assert fit.model.loglike(params) >= fit.llf - 1e-9
    for j, c in enumerate(conditions):
        row = ours[ours["condition"] == c].iloc[0]
        assert row["mean"] == pytest.approx(100 * special.expit(fit.params[j]), rel=1e-6)
        assert row["precision"] == pytest.approx(np.exp(fit.params[k + j]), rel=1e-5)
        # Wald interval on the logit scale; statsmodels' SE comes from a numerical Hessian.
        expected = 100 * special.expit(fit.params[j] + np.array([-z, z]) * fit.bse[j])
        assert [row["ci_low"], row["ci_high"]] == pytest.approx(list(expected), rel=1e-4)
        a, b, _, _ = stats.beta.fit(wide[c].to_numpy() / 100, floc=0, fscale=1)
        assert row["mean"] == pytest.approx(100 * a / (a + b), rel=1e-5)
    assert ours["converged"].all() and not ours["squeezed"].any()


def test_beta_model_squeezes_ratings_at_the_ends_and_maps_back() -> None:
    wide = _wide(seed=2)
    wide.loc[:4, "high"] = 100.0
    ours = beta_by_condition(wide, list(wide.columns))
    assert ours["squeezed"].all() and ours["at_bounds"].tolist() == [5, 0, 0]
    # Fitted on the Smithson-Verkuilen scale, the estimate is mapped back to the rating scale.
    total = wide.size
    a, b, _, _ = stats.beta.fit(squeeze(wide["high"].to_numpy() / 100, total), floc=0, fscale=1)
    expected = 100 * (a / (a + b) * total - 0.5) / (total - 1)
    row = ours.iloc[0]
    assert row["mean"] == pytest.approx(expected, rel=1e-5)
    assert abs(row["mean"] - wide["high"].mean()) < 1.0
    assert 0 <= row["ci_low"] < row["mean"] < row["ci_high"] <= 100


def test_beta_model_leaves_a_condition_without_spread_undefined() -> None:
    wide = _wide().assign(flat=50.0)
    ours = beta_by_condition(wide, list(wide.columns))
    assert np.isnan(ours.iloc[-1]["mean"]) and ours.iloc[:-1]["mean"].notna().all()


def test_equivalence_near_the_ceiling_is_flagged() -> None:
    wide = pd.DataFrame({"a": [97.0, 98.0, 96.0], "b": [95.0, 97.0, 96.0], "c": [60.0, 62.0, 61.0], "d": [95.0] * 3})
    table = pd.DataFrame({"a": ["a", "c"], "b": ["b", "d"], "equivalent": [True, False]})
    flagged, words = ceiling_equivalence(table, wide, 5.0)
    # The higher mean decides: 97 and 95 lie within 5 points of 100.
    assert flagged["near_ceiling"].tolist() == [True, True]
    assert flagged["mean_a"].tolist() == [97.0, 61.0]
    flagged, words = ceiling_equivalence(table, wide.assign(d=94.9), 5.0)
    assert flagged["near_ceiling"].tolist() == [True, False]
    assert [w["code"] for w in words] == ["equivalence_near_ceiling"]
    assert "a (97.0) and b (96.0)" in words[0]["message"]
    # A margin of 2: the higher mean 97 is 3 points from 100, outside the margin.
    assert not ceiling_equivalence(table, wide, 2.0)[0]["near_ceiling"].any()


def test_tukey_hinges_against_hand_values() -> None:
    """Tukey (1977): medians of the halves; numpy's type 7 differs for even n (Hyndman & Fan 1996)."""
    assert tukey_hinges(np.arange(1.0, 7.0)) == (2.0, 5.0)
    assert list(np.percentile(np.arange(1.0, 7.0), [25, 75])) == [2.25, 4.75]
    assert tukey_hinges(np.array([7.0, 1, 3, 5, 9])) == (3.0, 7.0)
    assert tukey_hinges(np.arange(1.0, 8.0)) == (2.5, 5.5)


def test_analysis_reports_bounded_intervals_and_the_beta_model() -> None:
    ratings = known(n_participants=12, n_items=3)
    stats_json = analyse(ratings, None, {"bootstrap_resamples": 300, "permutation_resamples": 500}).stats()
    reference = stats_json["conditions"]["reference"]
    assert 0 < reference["logit95"][0] < reference["mean"] < reference["logit95"][1] < 100
    estimates = {e["condition"]: e for e in stats_json["bounded"]["beta_model"]["estimates"]}
    assert estimates["model_a"]["mean"] == pytest.approx(stats_json["conditions"]["model_a"]["mean"], abs=1.5)
    off = analyse(ratings, None, {"bootstrap_resamples": 300, "permutation_resamples": 500, "beta_model": False})
    assert off.stats()["bounded"]["beta_model"] is None
    with pytest.raises(EvaluationError, match="setting beta_model must be true or false"):
        Settings.from_dict({"beta_model": "no"})

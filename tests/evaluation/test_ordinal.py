"""The proportional-odds model of binned ratings against statsmodels' OrderedModel and a sandwich written here."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.miscmodels.ordinal_model import OrderedModel

from evaluation import analyse
from evaluation.errors import EvaluationError
from evaluation.ordinal import bin_ratings, ordinal_by_condition
from evaluation.settings import Settings

from ._data import known

CONDITIONS = ["c0", "c1", "c2", "c3"]


def ratings(seed: int = 1, n_participants: int = 15, n_items: int = 6, shift: float = 12.0) -> pd.DataFrame:
    """Ratings 0..100 with a listener offset, conditions `shift` points apart, clipped at the ends of the scale."""
    rng = np.random.default_rng(seed)
    p, i, c = (a.ravel() for a in np.indices((n_participants, n_items, len(CONDITIONS))))
    rating = np.clip(30 + shift * c + rng.normal(0, 8, n_participants)[p] + rng.normal(0, 15, p.size), 0, 100)
    return pd.DataFrame(
        {"participant": [f"p{k:02d}" for k in p], "item": i, "condition": [CONDITIONS[k] for k in c], "rating": rating}
    )


def statsmodels_fit(frame: pd.DataFrame, baseline: str) -> tuple[OrderedModel, Any]:
    """OrderedModel (logit) of the observed categories on condition dummies without the baseline."""
    frame = frame.reset_index(drop=True)
    category = bin_ratings(frame["rating"].to_numpy())
    codes = np.searchsorted(np.unique(category), category)
    others = [c for c in CONDITIONS if c != baseline and (frame["condition"] == c).any()]
    exog = pd.DataFrame({c: (frame["condition"] == c).astype(float) for c in others})
    model = OrderedModel(pd.Series(pd.Categorical(codes, ordered=True)), exog, distr="logit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model.fit(method="bfgs", maxiter=5000, gtol=1e-10, disp=False)
    return model, result


def test_bins_are_the_five_scale_intervals_left_closed() -> None:
    """BS.1534-3 intervals Bad [0, 20) ... Excellent [80, 100], with 100 in Excellent."""
    values = np.array([0.0, 19.99, 20.0, 39.9, 40.0, 59.9, 60.0, 79.99, 80.0, 100.0])
    assert bin_ratings(values).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


@pytest.mark.parametrize("baseline", ["c0", "c2"])
def test_fixed_effects_fit_matches_statsmodels_ordered_model(baseline: str) -> None:
    """Thresholds, log odds ratios, model-based SEs and log-likelihood against OrderedModel (Agresti 2013 §8.2)."""
    frame = ratings()
    ours = ordinal_by_condition(frame, CONDITIONS, baseline)
    model, ref = statsmodels_fit(frame, baseline)
    params = np.asarray(ref.params)
    k = len(CONDITIONS) - 1
    # OrderedModel: the first threshold, then logs of the increments.
    cuts = np.cumsum(np.concatenate([params[k : k + 1], np.exp(params[k + 1 :])]))
    assert ours.stats["loglik"] == pytest.approx(ref.llf, rel=1e-10)
    assert ours.thresholds["estimate"].to_numpy() == pytest.approx(cuts, abs=1e-6)
    effects = ours.effects.set_index("condition")
    others = [c for c in CONDITIONS if c != baseline]
    assert effects.loc[others, "log_odds_ratio"].to_numpy() == pytest.approx(params[:k], abs=1e-6)
    assert effects.loc[baseline, "log_odds_ratio"] == 0.0
    # The beta block of the inverse information does not depend on how the thresholds are parametrised.
    assert effects.loc[others, "model_se"].to_numpy() == pytest.approx(np.asarray(ref.bse)[:k], rel=1e-4)
    assert ours.stats["converged"]
    assert [c["n"] for c in ours.stats["categories"]] == np.bincount(bin_ratings(frame["rating"]), minlength=5).tolist()


def test_listener_clustered_sandwich_matches_a_sandwich_from_statsmodels_scores() -> None:
    """Liang & Zeger (1986) sandwich built here from OrderedModel's per-rating scores and Hessian, G / (G - 1)."""
    frame = ratings(seed=5, n_participants=12)
    ours = ordinal_by_condition(frame, CONDITIONS, "c0")
    model, ref = statsmodels_fit(frame, "c0")
    params = np.asarray(ref.params)
    scores = model.score_obs(params)
    hess = model.hessian(params)
    groups = frame["participant"].to_numpy()
    summed = np.array([scores[groups == g].sum(axis=0) for g in np.unique(groups)])
    g = len(summed)
    bread = np.linalg.inv(-hess)
    cov = bread @ summed.T @ summed @ bread * g / (g - 1)
    k = len(CONDITIONS) - 1
    effects = ours.effects.set_index("condition")
    assert effects.loc[CONDITIONS[1:], "se"].to_numpy() == pytest.approx(np.sqrt(np.diag(cov)[:k]), rel=1e-4)
    # Intervals and p-values: t on listeners - 1 df.
    q = stats.t.ppf(0.975, g - 1)
    row = effects.loc["c2"]
    assert row["ci_high"] - row["log_odds_ratio"] == pytest.approx(q * row["se"], rel=1e-12)
    assert row["pvalue"] == pytest.approx(2 * stats.t.sf(abs(row["log_odds_ratio"] / row["se"]), g - 1), rel=1e-12)
    # A pair of non-baseline conditions: variance of the difference from the same covariance.
    pair = ours.pairwise[(ours.pairwise["a"] == "c1") & (ours.pairwise["b"] == "c3")].iloc[0]
    assert pair["log_odds_ratio"] == pytest.approx(params[0] - params[2], abs=1e-6)
    assert pair["se"] == pytest.approx(np.sqrt(cov[0, 0] + cov[2, 2] - 2 * cov[0, 2]), rel=1e-4)
    holm = np.minimum(1, np.maximum.accumulate(np.sort(ours.pairwise["pvalue"]) * np.arange(6, 0, -1)))
    assert np.sort(ours.pairwise["pvalue_holm"].to_numpy()) == pytest.approx(holm)


def test_clustered_se_exceeds_the_model_se_when_listeners_disagree() -> None:
    """Listeners who move the conditions apart by their own amounts: the listener-clustered SEs must grow."""
    rng = np.random.default_rng(3)
    frame = ratings(seed=3)
    own = rng.normal(0, 15, (15, len(CONDITIONS)))
    cell = own[frame["participant"].str[1:].astype(int), frame["condition"].str[1:].astype(int)]
    frame["rating"] = np.clip(frame["rating"] + cell, 0, 100)
    effects = ordinal_by_condition(frame, CONDITIONS).effects.iloc[1:]
    assert (effects["se"] > 1.2 * effects["model_se"]).all()


def test_empty_categories_are_left_out() -> None:
    """Ratings only in Fair, Good and Excellent: two thresholds, matching OrderedModel on those three."""
    frame = ratings(seed=2, shift=6.0)
    frame["rating"] = 45 + 0.55 * frame["rating"]
    ours = ordinal_by_condition(frame, CONDITIONS, "c0")
    assert ours.thresholds["between"].tolist() == ["Fair|Good", "Good|Excellent"]
    _, ref = statsmodels_fit(frame, "c0")
    assert ours.effects["log_odds_ratio"].to_numpy()[1:] == pytest.approx(np.asarray(ref.params)[:3], abs=1e-6)
    # Separation: c0 all Excellent has no finite estimate; it is left out and the baseline moves on.
    frame.loc[frame["condition"] == "c0", "rating"] = 95.0
    ours = ordinal_by_condition(frame, CONDITIONS, "c0")
    assert [e["condition"] for e in ours.stats["left_out"]] == ["c0"] and ours.stats["baseline"] == "c1"
    assert ours.effects["condition"].tolist() == ["c1", "c2", "c3"] and ours.stats["converged"]
    _, ref = statsmodels_fit(frame[frame["condition"] != "c0"], "c1")
    assert ours.effects["log_odds_ratio"].to_numpy()[1:] == pytest.approx(np.asarray(ref.params)[:2], abs=1e-6)
    frame["rating"] = 50.0
    with pytest.raises(EvaluationError, match="at least two of the five scale intervals"):
        ordinal_by_condition(frame, CONDITIONS)


def test_analysis_and_report_carry_the_ordinal_model() -> None:
    """stats.json block, CSV tables, HTML section and LaTeX table; the setting switches it off."""
    data = known(n_participants=12, n_items=3)
    settings = {"bootstrap_resamples": 300, "permutation_resamples": 500}
    analysis = analyse(data, None, settings)
    block = analysis.stats()["ordinal"]
    assert block["n_listeners"] == 12 and block["df"] == 11
    # The hidden reference (true mean 97) is all Excellent here: left out, the baseline moves on.
    assert "reference" in [e["condition"] for e in block["left_out"]] and block["baseline"] != "reference"
    effects = {e["condition"]: e for e in block["effects"]}
    assert effects[block["baseline"]]["log_odds_ratio"] == 0.0
    anchor = next(c for c in effects if "anchor" in c)
    assert effects[anchor]["log_odds_ratio"] < 0 and effects[anchor]["ci95"][1] < 0
    assert block["thresholds"][0]["ci95"][0] < block["thresholds"][0]["estimate"] < block["thresholds"][0]["ci95"][1]
    from evaluation import checks_report
    from evaluation.report import latex_tables

    assert {"ordinal_effects.csv", "ordinal_pairwise.csv", "ordinal_thresholds.csv"} <= set(
        checks_report.csv_tables(analysis)
    )
    assert "tab:mushra-ordinal" in latex_tables(analysis)
    page = "".join(checks_report.html(analysis, lambda frame, *a, **k: frame.to_html(), lambda png, alt: "", {}))
    assert "<h2>Ordinal model</h2>" in page and "cluster-robust by listener" in page
    off = analyse(data, None, {**settings, "ordinal_model": False})
    assert off.stats()["ordinal"] is None
    with pytest.raises(EvaluationError, match="setting ordinal_model must be true or false"):
        Settings.from_dict({"ordinal_model": "yes"})

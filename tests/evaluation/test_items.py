"""Excerpts as a sample: condition x item ANOVA, per-item contrasts, by-item tests, min F', and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats
from statsmodels.stats.anova import AnovaRM

from evaluation import analyse
from evaluation.items import (
    by_item_tests,
    complete_cube,
    interaction_anova,
    item_means,
    min_f_prime,
    oneway_rm_f,
    orthonormal_contrasts,
    per_item_contrasts,
)
from evaluation.nonparametric import all_pairs
from evaluation.report import build_report, latex_tables
from evaluation.simulate import simulate_ratings

from ._data import known

SETTINGS = {"bootstrap_resamples": 200, "correlation_resamples": 200, "permutation_resamples": 500}
MODELS = ["model_a", "model_b", "model_c"]


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    frame = known(n_participants=14, n_items=5, seed=9, clip=False)
    # An interaction: model_b is better on item00 and worse on item04 than elsewhere.
    frame.loc[(frame["condition"] == "model_b") & (frame["item"] == "item00"), "rating"] += 12.0
    frame.loc[(frame["condition"] == "model_b") & (frame["item"] == "item04"), "rating"] -= 12.0
    return frame


def test_orthonormal_contrasts() -> None:
    c = orthonormal_contrasts(5)
    np.testing.assert_allclose(c.T @ c, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(c.sum(axis=0), 0.0, atol=1e-12)


def test_interaction_anova_matches_pingouin_and_statsmodels(ratings) -> None:
    """Two-way RM ANOVA: F, p and GG epsilon / p against pingouin.rm_anova; F and df against statsmodels AnovaRM."""
    result = interaction_anova(ratings, MODELS)
    assert result is not None and result["n"] == 14 and result["n_incomplete"] == 0
    data = ratings[ratings["condition"].isin(MODELS)]
    aov = pg.rm_anova(data=data, dv="rating", within=["condition", "item"], subject="participant")
    sm = AnovaRM(data, "rating", "participant", within=["condition", "item"]).fit().anova_table
    for ours, (_, theirs), (_, other) in zip(result["effects"], aov.iterrows(), sm.iterrows()):
        assert ours["F"] == pytest.approx(theirs["F"], rel=1e-9)
        assert ours["pvalue"] == pytest.approx(theirs["p_unc"], rel=1e-7, abs=1e-14)
        assert ours["eps_gg"] == pytest.approx(theirs["eps"], rel=1e-9)
        assert ours["pvalue_gg"] == pytest.approx(theirs["p_GG_corr"], rel=1e-7, abs=1e-14)
        assert (ours["F"], ours["df1"], ours["df2"]) == pytest.approx(
            (other["F Value"], other["Num DF"], other["Den DF"]), rel=1e-9
        )
    assert result["effects"][2]["effect"] == "condition:item" and result["effects"][2]["pvalue_gg"] < 0.05


def test_interaction_anova_uses_complete_listeners(ratings) -> None:
    """A listener missing one cell is left out; the rest match pingouin on the same listeners."""
    holed = ratings.drop(ratings[(ratings["participant"] == "p003") & (ratings["item"] == "item02")].index[:2])
    result = interaction_anova(holed, MODELS)
    assert result is not None and result["n"] == 13 and result["n_incomplete"] == 1
    data = ratings[ratings["condition"].isin(MODELS) & (ratings["participant"] != "p003")]
    aov = pg.rm_anova(data=data, dv="rating", within=["condition", "item"], subject="participant")
    assert result["effects"][2]["F"] == pytest.approx(aov["F"].iloc[2], rel=1e-9)
    cube, items, dropped = complete_cube(holed, MODELS)
    assert cube.shape == (13, 3, 5) and items[0] == "item00" and dropped == 1
    assert interaction_anova(holed[holed["item"] == "item00"], MODELS) is None
    assert interaction_anova(holed, ["model_a"]) is None


def test_min_f_prime_against_pingouin_and_the_formula(ratings) -> None:
    """F1 (listeners) and F2 (items) against pingouin one-way rm_anova; min F' from Clark's (1973) formula."""
    listeners = ratings.groupby(["participant", "condition"], as_index=False)["rating"].mean()
    listeners = listeners[listeners["condition"].isin(MODELS)]
    items = ratings.groupby(["item", "condition"], as_index=False)["rating"].mean()
    items = items[items["condition"].isin(MODELS)]
    a1 = pg.rm_anova(data=listeners, dv="rating", within="condition", subject="participant")
    a2 = pg.rm_anova(data=items, dv="rating", within="condition", subject="item")
    f1 = oneway_rm_f(listeners.pivot(index="participant", columns="condition", values="rating").to_numpy())
    f2 = oneway_rm_f(item_means(ratings, MODELS).to_numpy())
    assert f1["F"] == pytest.approx(a1["F"].iloc[0], rel=1e-9) and f1["df2"] == a1["ddof2"].iloc[0]
    assert f2["F"] == pytest.approx(a2["F"].iloc[0], rel=1e-9) and f2["df2"] == a2["ddof2"].iloc[0]
    result = min_f_prime(f1, f2)
    F1, F2, n1, n2 = a1["F"].iloc[0], a2["F"].iloc[0], a1["ddof2"].iloc[0], a2["ddof2"].iloc[0]
    df2 = (F1 + F2) ** 2 / (F1**2 / n2 + F2**2 / n1)
    assert result["min_f"] == pytest.approx(F1 * F2 / (F1 + F2), rel=1e-9)
    assert result["df2"] == pytest.approx(df2, rel=1e-9)
    assert result["pvalue"] == pytest.approx(stats.f.sf(F1 * F2 / (F1 + F2), 2, df2), rel=1e-7)
    assert result["min_f"] < min(F1, F2)


def test_per_item_contrasts_match_scipy_paired_t(ratings) -> None:
    """Each (item, model) - reference: paired t and its interval from scipy.stats.ttest_rel; Holm over the family."""
    table = per_item_contrasts(ratings, MODELS, "reference", 0.95)
    assert len(table) == 5 * 3 and set(table["baseline"]) == {"reference"}
    row = table[(table["item"] == "item03") & (table["condition"] == "model_b")].iloc[0]
    cell = ratings[ratings["item"] == "item03"].pivot(index="participant", columns="condition", values="rating")
    reference = stats.ttest_rel(cell["model_b"], cell["reference"])
    ci = reference.confidence_interval(0.95)
    assert row["pvalue_t"] == pytest.approx(reference.pvalue, rel=1e-9)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-9)
    joint = reference.confidence_interval(1 - 0.05 / 15)
    assert (row["ci_sim_low"], row["ci_sim_high"]) == pytest.approx((joint.low, joint.high), abs=1e-9)
    assert row["test"] == "paired t over listeners"
    assert per_item_contrasts(ratings, MODELS, None).empty


def test_by_item_tests_match_scipy(ratings) -> None:
    """Excerpts as units: Wilcoxon (Pratt) and paired t on condition means per item, against scipy."""
    means = item_means(ratings, MODELS)
    table = by_item_tests(means, all_pairs(MODELS), 0.95, 500, 1)
    row = table[(table["a"] == "model_a") & (table["b"] == "model_c")].iloc[0]
    assert row["n"] == 5
    w = stats.wilcoxon(means["model_a"], means["model_c"], zero_method="pratt")
    t = stats.ttest_rel(means["model_a"], means["model_c"])
    assert row["pvalue"] == pytest.approx(w.pvalue, rel=1e-12)
    assert row["pvalue_t"] == pytest.approx(t.pvalue, rel=1e-9)
    assert row["pvalue_holm"] == pytest.approx(min(1.0, 3 * w.pvalue), rel=1e-12)  # all three pairs tie at 1/16


def _split_ratings() -> pd.DataFrame:
    # model_a beats model_b on six excerpts by 10 and loses on two by 15: significant over listeners,
    # not across excerpts.
    frame = simulate_ratings(24, 8, {"reference": 97.0, "model_a": 60.0, "model_b": 60.0, "model_c": 30.0}, seed=2)
    late = frame["item"].isin(["item06", "item07"])
    frame.loc[(frame["condition"] == "model_a") & ~late, "rating"] += 10.0
    frame.loc[(frame["condition"] == "model_a") & late, "rating"] -= 15.0
    return frame


def test_disagreement_is_flagged_in_stats_and_warnings() -> None:
    """A pair significant by listener but not by item is named in the inference text and the warnings."""
    analysis = analyse(_split_ratings(), None, SETTINGS)
    stats_ = analysis.stats()
    excerpts = stats_["excerpts"]
    split = [e for e in excerpts["agreement"] if not e["agree"]]
    assert [(e["a"], e["b"]) for e in split] == [("model_a", "model_b")]
    assert split[0]["by_listener"] and not split[0]["by_item"]
    assert "model_a vs model_b significant by listener only" in excerpts["inference"]
    codes = [w["code"] for w in stats_["warnings"]]
    assert "by_item_disagrees" in codes and "condition_item_interaction" in codes
    assert excerpts["interaction"]["effects"][2]["pvalue_gg"] < 0.05
    assert excerpts["min_f"]["min_f"] < excerpts["min_f"]["F1"]["F"]
    pair = stats_["pairwise_intervals"][0]
    assert (pair["a"], pair["b"]) == ("model_a", "model_b")
    assert pair["ci_simultaneous"][0] < pair["mean_difference"] < pair["ci_simultaneous"][1]
    assert pair["rank_biserial"] == pytest.approx(stats_["pairwise"][0]["effect_size"], abs=1e-12)


def test_too_few_items_is_said_instead_of_a_disagreement() -> None:
    stats_ = analyse(simulate_ratings(12, 3, seed=4), None, SETTINGS).stats()
    codes = [w["code"] for w in stats_["warnings"]]
    assert "too_few_items" in codes and "by_item_disagrees" not in codes
    assert "With 3 excerpts no by-item Wilcoxon test can reach alpha" in stats_["excerpts"]["inference"]


def test_one_item_and_one_model_give_empty_results_not_errors() -> None:
    one_item = analyse(simulate_ratings(10, 1, seed=1), None, SETTINGS).stats()["excerpts"]
    assert one_item["interaction"] is None and one_item["min_f"] is None and one_item["by_item"] == []
    assert len(one_item["per_item"]) == 3
    ratings = simulate_ratings(10, 4, {"reference": 97.0, "model_a": 60.0, "anchor35": 20.0}, seed=1)
    one_model = analyse(ratings, None, SETTINGS).stats()
    assert one_model["excerpts"]["interaction"] is None and one_model["pairwise_intervals"] == []


def test_report_shows_intervals_and_the_inference(tmp_path: Path) -> None:
    """HTML section and sentence, methods text, LaTeX intervals, CSV files."""
    result = build_report(_split_ratings(), None, SETTINGS, tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "Excerpts as a sample (condition × item)" in html and "Differences with intervals" in html
    assert html.count("generalise to listeners, for these excerpts only") == 2  # section and methods text
    assert "significant by listener only" in html
    stats_ = json.loads((tmp_path / "stats.json").read_text())
    pair = stats_["pairwise_intervals"][0]
    low, high = pair["ci_simultaneous"]
    assert f"[{low:.1f}, {high:.1f}]" in html
    tex = (tmp_path / "table.tex").read_text()
    assert "tab:mushra-intervals" in tex and "tab:mushra-by-item" in tex and f"[{low:.1f}, {high:.1f}]" in tex
    for name in ("pairwise_intervals.csv", "by_item.csv", "per_item.csv"):
        assert name in result["files"]
        assert "ci_sim_low" in (tmp_path / name).read_text().splitlines()[0]
    analysis = analyse(_split_ratings(), None, SETTINGS)
    # Descriptives, pairwise tests, differences with intervals, by-item tests, the ordinal model.
    assert latex_tables(analysis).count("\\begin{table}") == 5

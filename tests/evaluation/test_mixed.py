"""Mixed model and RM-ANOVA against statsmodels' formula interface, pingouin and closed forms."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
import statsmodels.formula.api as smf
from statsmodels.stats.anova import AnovaRM

from evaluation.descriptives import participant_means
from evaluation.mixed import fit_mixed_model, rm_anova

from ._data import known

CONDITIONS = ["reference", "model_a", "model_b", "model_c", "anchor70", "anchor35"]


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return known(n_participants=20, n_items=4, seed=8, clip=False)


@pytest.fixture(scope="module")
def fitted(ratings: pd.DataFrame) -> dict:
    return fit_mixed_model(ratings, CONDITIONS, "reference")


def test_fixed_items_match_statsmodels_with_a_listener_condition_component(ratings: pd.DataFrame) -> None:
    """item_effect='fixed' against statsmodels MixedLM: condition*item fixed, random listener and listener:condition."""
    fitted = fit_mixed_model(ratings, CONDITIONS, "reference", item_effect="fixed")
    assert fitted["item_effect"] == "fixed" and fitted["random_effects"] == ["participant", "participant:condition"]
    data = ratings.copy()
    data["condition"] = pd.Categorical(data["condition"], categories=CONDITIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = smf.mixedlm(
            "rating ~ 0 + C(condition):C(item)",
            data,
            groups=data["participant"],
            re_formula="1",
            vc_formula={"pc": "0 + C(condition)"},
        ).fit(reml=True, method="lbfgs")
    fe = reference.fe_params
    cov = reference.cov_params().loc[fe.index, fe.index]
    contrasts = fitted["contrasts"].set_index("condition")
    for c in CONDITIONS[1:]:
        vector = pd.Series(0.0, index=fe.index)
        for name in fe.index:
            if name.startswith(f"C(condition)[{c}]:"):
                vector[name] += 1 / 4
            if name.startswith("C(condition)[reference]:"):
                vector[name] -= 1 / 4
        assert contrasts.loc[c, "estimate"] == pytest.approx(float(vector @ fe), abs=1e-4)
        assert contrasts.loc[c, "se"] == pytest.approx(float(np.sqrt(vector @ cov @ vector)), rel=1e-3)
    variances = fitted["variance_components"]
    assert variances["residual"] == pytest.approx(reference.scale, rel=1e-3)
    assert variances["participant"] == pytest.approx(reference.cov_re.iloc[0, 0], rel=1e-3)
    assert variances["participant:condition"] == pytest.approx(reference.vcomp[0], rel=1e-3)


def test_balanced_emms_are_raw_means_and_contrast_se_has_closed_form(ratings: pd.DataFrame, fitted: dict) -> None:
    emms = fitted["emms"].set_index("condition")
    raw = ratings.groupby("condition")["rating"].mean()
    for c in CONDITIONS:
        assert emms.loc[c, "emm"] == pytest.approx(raw[c], abs=1e-6)
    # Balanced crossed design: listener and item intercepts cancel in a difference of
    # condition means, Var = 2 (s2_pc / P + s2_ic / I + s2_e / (P I)).
    v = fitted["variance_components"]
    expected = np.sqrt(2 * (v["participant:condition"] / 20 + v["item:condition"] / 4 + v["residual"] / 80))
    assert fitted["contrasts"]["se"].to_numpy() == pytest.approx(expected, rel=1e-6)
    assert (fitted["contrasts"]["df"] > 1).all() and (fitted["contrasts"]["df"] < 20 * 4 * 6).all()
    low, high = emms.loc["model_a", ["ci_low", "ci_high"]]
    assert low < 80 + 6 and high > 80 - 6  # true mean 80 plus item and participant offsets


def test_unbalanced_emms_weight_items_equally() -> None:
    ratings = known(n_participants=20, n_items=4, seed=8, clip=False, item_sd=15.0, noise_sd=3.0)
    # Drop most of model_a's ratings on its hardest item: the raw mean rises, the EMM does not.
    hardest = ratings[ratings["condition"] == "model_a"].groupby("item")["rating"].mean().idxmin()
    drop = (ratings["condition"] == "model_a") & (ratings["item"] == hardest) & (ratings["participant"] > "p004")
    gappy = ratings[~drop]
    full = fit_mixed_model(ratings, CONDITIONS, "reference")["emms"].set_index("condition")
    part = fit_mixed_model(gappy, CONDITIONS, "reference")["emms"].set_index("condition")
    raw = gappy[gappy["condition"] == "model_a"]["rating"].mean()
    assert abs(part.loc["model_a", "emm"] - full.loc["model_a", "emm"]) < abs(raw - full.loc["model_a", "emm"])


def test_item_as_random_effect_recovers_the_means() -> None:
    ratings = known(n_participants=8, n_items=4, seed=2, clip=False, item_sd=6.0)
    fitted = fit_mixed_model(ratings, CONDITIONS, "reference", item_effect="random", prune_alpha=None)
    assert fitted["item_effect"] == "random"
    assert set(fitted["variance_components"]) == {
        "residual",
        "participant",
        "item",
        "participant:condition",
        "item:condition",
    }
    contrast = fitted["contrasts"].set_index("condition").loc["model_b", "estimate"]
    raw = ratings.groupby("condition")["rating"].mean()
    assert contrast == pytest.approx(raw["model_b"] - raw["reference"], abs=1e-4)


def test_rm_anova_matches_statsmodels_and_pingouin_epsilons() -> None:
    wide = participant_means(known(n_participants=12, n_items=2, seed=5, clip=False))
    models = ["model_a", "model_b", "model_c", "anchor70"]
    ours = rm_anova(wide[models])
    long = wide[models].reset_index().melt(id_vars="participant", var_name="condition", value_name="rating")
    reference = AnovaRM(long, "rating", "participant", within=["condition"]).fit().anova_table
    assert ours["F"] == pytest.approx(reference["F Value"].iloc[0])
    assert ours["pvalue"] == pytest.approx(reference["Pr > F"].iloc[0])
    assert ours["eps_gg"] == pytest.approx(
        pg.epsilon(long, dv="rating", within="condition", subject="participant", correction="gg")
    )
    hf = pg.epsilon(long, dv="rating", within="condition", subject="participant", correction="hf")
    assert ours["eps_hf"] == pytest.approx(min(hf, 1.0))
    table = pg.rm_anova(long, dv="rating", within="condition", subject="participant", correction=True)
    assert ours["pvalue_gg"] == pytest.approx(
        table["p_GG_corr"].iloc[0] if "p_GG_corr" in table else table["p-GG-corr"].iloc[0]
    )


def test_ratings_the_model_cannot_fit_leave_the_rest_of_the_analysis_standing() -> None:
    """No residual variance (every listener rates every excerpt alike): no mixed model, a warning."""
    from evaluation.analysis import analyse

    rows = [
        {"participant": f"P{p}", "item": f"I{i}", "condition": c, "rating": r + 3 * p}
        for p in range(4)
        for i in range(3)
        for c, r in (("reference", 90), ("anchor35", 10), ("m1", 50), ("m2", 60))
    ]
    result = analyse(pd.DataFrame(rows))
    assert result.mixed is None
    codes = {w["code"]: w["message"] for w in result.warnings}
    assert "no residual variance" in codes["mixed_model_not_fitted"]
    assert result.stats()["mixed_model"] is None
    assert len(result.pairwise) > 0

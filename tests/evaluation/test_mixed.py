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


def test_fixed_effects_match_statsmodels_formula_fit(ratings: pd.DataFrame, fitted: dict) -> None:
    data = ratings.copy()
    data["condition"] = pd.Categorical(data["condition"], categories=CONDITIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = smf.mixedlm("rating ~ C(condition) + C(item)", data, groups=data["participant"]).fit(reml=True)
    contrasts = fitted["contrasts"].set_index("condition")
    for c in CONDITIONS[1:]:
        name = f"C(condition)[T.{c}]"
        assert contrasts.loc[c, "estimate"] == pytest.approx(reference.fe_params[name], abs=1e-6)
        assert contrasts.loc[c, "se"] == pytest.approx(reference.bse[name], rel=1e-3)
    assert fitted["variance_components"]["residual"] == pytest.approx(reference.scale, rel=1e-3)
    assert fitted["variance_components"]["participant"] == pytest.approx(reference.cov_re.iloc[0, 0], rel=1e-2)


def test_balanced_emms_are_raw_means_and_contrast_se_has_closed_form(ratings: pd.DataFrame, fitted: dict) -> None:
    emms = fitted["emms"].set_index("condition")
    raw = ratings.groupby("condition")["rating"].mean()
    for c in CONDITIONS:
        assert emms.loc[c, "emm"] == pytest.approx(raw[c], abs=1e-6)
    # Balanced random-intercept design: Var(mean_c - mean_b) = 2 sigma_e^2 / (P * I).
    n = 20 * 4
    expected = np.sqrt(2 * fitted["variance_components"]["residual"] / n)
    assert fitted["contrasts"]["se"].to_numpy() == pytest.approx(expected, rel=1e-3)
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
    fitted = fit_mixed_model(ratings, CONDITIONS, "reference", item_effect="random")
    assert fitted["item_effect"] == "random"
    assert set(fitted["variance_components"]) == {"residual", "participant", "item"}
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

"""Linear mixed model and repeated-measures ANOVA of the ratings.

The mixed model is ``rating ~ C(condition) + C(item)`` with a random intercept per
participant (Laird & Ware 1982; statsmodels ``MixedLM``, REML), or with the item as a
crossed random effect. Estimated marginal means (Searle, Speed & Milliken 1980) average
the model's predictions over items with equal weight, so an unbalanced table does not
tilt them; contrasts against a baseline condition use Wald intervals from the fixed-effect
covariance.

The repeated-measures ANOVA works on per-participant means (participants x
conditions) and reports the Greenhouse-Geisser (1959) and Huynh-Feldt (1976) epsilon
corrections of the degrees of freedom for non-sphericity.
"""

from __future__ import annotations

import warnings as _warnings

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.regression.mixed_linear_model import MixedLM, MixedLMParams, VCSpec
from statsmodels.tools.sm_exceptions import ConvergenceWarning


def _moment_start(model: MixedLM, groups: np.ndarray) -> MixedLMParams:
    # Start REML from the ANOVA (method-of-moments) estimates: OLS fixed effects, the
    # within-participant residual variance and the between-participant excess. The
    # optimiser then needs a few steps instead of a search from the boundary.
    beta, *_ = np.linalg.lstsq(model.exog, model.endog, rcond=None)
    residual = pd.Series(model.endog - model.exog @ beta)
    grouped = residual.groupby(groups)
    within = float((residual - grouped.transform("mean")).var())
    between = float(grouped.mean().var()) - within / float(grouped.size().mean())
    within = max(within, 1e-6)
    ratio = max(between, 1e-3 * within) / within
    return MixedLMParams.from_components(fe_params=beta, cov_re=np.array([[ratio]]))


def fit_mixed_model(
    ratings: pd.DataFrame,
    conditions: list[str],
    baseline: str,
    item_effect: str = "fixed",
    confidence_level: float = 0.95,
) -> dict[str, object]:
    """Fit the LMM and return EMMs and contrasts against ``baseline`` (Laird & Ware 1982)."""
    data = ratings[ratings["condition"].isin(conditions)][["participant", "item", "condition", "rating"]].copy()
    data["condition"] = pd.Categorical(data["condition"], categories=conditions)
    items = sorted(data["item"].unique())
    data["item"] = pd.Categorical(data["item"], categories=items)
    fixed_item = item_effect == "fixed" and len(items) > 1
    formula = "rating ~ C(condition)" + (" + C(item)" if fixed_item else "")
    # The treatment-coded design is built directly (first level of each factor in the
    # intercept); going through a formula parser costs more than the fit itself here.
    names = ["Intercept"] + [f"C(condition)[T.{c}]" for c in conditions[1:]]
    columns = [np.ones(len(data))]
    codes = data["condition"].cat.codes.to_numpy()
    columns += [(codes == k).astype(float) for k in range(1, len(conditions))]
    if fixed_item:
        item_codes = data["item"].cat.codes.to_numpy()
        names += [f"C(item)[T.{i}]" for i in items[1:]]
        columns += [(item_codes == k).astype(float) for k in range(1, len(items))]
    exog = pd.DataFrame(np.column_stack(columns), columns=names, index=data.index)
    endog = data["rating"].astype(float)
    notes: list[str] = []
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        if item_effect == "random" and len(items) > 1:
            # Crossed random effects: one group holding everything, with participant and
            # item as variance components (statsmodels' documented way to cross them).
            participant_codes = pd.Categorical(data["participant"]).codes
            item_codes = data["item"].cat.codes.to_numpy()
            blocks = {
                "participant": [
                    (participant_codes == k).astype(float)[:, None] for k in range(participant_codes.max() + 1)
                ],
                "item": [(item_codes == k).astype(float)[:, None] for k in range(len(items))],
            }
            vc_names = sorted(blocks)
            spec = VCSpec(
                vc_names,
                [[[f"{n}{k}" for k in range(len(blocks[n]))]] for n in vc_names],
                [[np.hstack(blocks[n])] for n in vc_names],
            )
            model = MixedLM(endog, exog, groups=np.ones(len(data)), exog_vc=spec)
            result = model.fit(reml=True)
        else:
            model = MixedLM(endog, exog, groups=data["participant"].to_numpy())
            result = model.fit(reml=True, start_params=_moment_start(model, data["participant"].to_numpy()))
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            notes.append(str(w.message).splitlines()[0])
    fe = result.fe_params
    cov = result.cov_params().loc[fe.index, fe.index].to_numpy()
    names = list(fe.index)
    position = {name: i for i, name in enumerate(names)}
    # Treatment coding: the first level of each factor is absorbed in the intercept.
    item_columns = [position[f"C(item)[T.{i}]"] for i in items[1:]] if fixed_item else []
    rows = []
    for c in conditions:
        row = np.zeros(len(names))
        row[position["Intercept"]] = 1.0
        if c != conditions[0]:
            row[position[f"C(condition)[T.{c}]"]] = 1.0
        # Equal weight per item: the average of the item effects, first item at zero.
        row[item_columns] = 1.0 / len(items)
        rows.append(row)
    L = np.vstack(rows)
    z = stats.norm.ppf(0.5 + confidence_level / 2)
    emm = L @ fe.to_numpy()
    se = np.sqrt(np.einsum("ij,jk,ik->i", L, cov, L))
    emms = pd.DataFrame(
        {"condition": conditions, "emm": emm, "se": se, "ci_low": emm - z * se, "ci_high": emm + z * se}
    )
    base = conditions.index(baseline)
    contrast_rows = []
    for i, c in enumerate(conditions):
        if i == base:
            continue
        vector = L[i] - L[base]
        estimate = float(vector @ fe.to_numpy())
        error = float(np.sqrt(vector @ cov @ vector))
        zstat = estimate / error if error > 0 else np.nan
        contrast_rows.append(
            {
                "condition": c,
                "baseline": baseline,
                "estimate": estimate,
                "se": error,
                "z": zstat,
                "pvalue": float(2 * stats.norm.sf(abs(zstat))),
                "ci_low": estimate - z * error,
                "ci_high": estimate + z * error,
            }
        )
    variance = {"residual": float(result.scale)}
    if item_effect == "random" and len(items) > 1:
        for name, value in zip(model.exog_vc.names, result.vcomp):
            variance[name] = float(value)
    else:
        variance["participant"] = float(result.cov_re.iloc[0, 0])
    return {
        "formula": formula,
        "groups": "participant",
        "item_effect": "fixed" if fixed_item else ("random" if len(items) > 1 else "none"),
        "method": "REML",
        "n_obs": int(result.nobs),
        "converged": bool(result.converged) and not notes,
        "notes": notes,
        "variance_components": variance,
        "emms": emms,
        "contrasts": pd.DataFrame(contrast_rows),
    }


def _epsilons(matrix: np.ndarray) -> tuple[float, float]:
    # Greenhouse-Geisser from the double-centred covariance of the conditions, then
    # Huynh-Feldt's (1976) bias-corrected estimate, capped at 1.
    n, k = matrix.shape
    cov = np.cov(matrix, rowvar=False)
    centre = np.eye(k) - np.ones((k, k)) / k
    dc = centre @ cov @ centre
    gg = np.trace(dc) ** 2 / ((k - 1) * np.sum(dc**2))
    hf = (n * (k - 1) * gg - 2) / ((k - 1) * (n - 1 - (k - 1) * gg))
    return float(gg), float(min(hf, 1.0))


def rm_anova(wide: pd.DataFrame) -> dict[str, float | int]:
    """One-way repeated-measures ANOVA on complete cases with Greenhouse-Geisser and Huynh-Feldt corrections.

    Girden (1992); epsilons after Greenhouse & Geisser (1959) and Huynh & Feldt (1976).
    """
    complete = wide.dropna()
    matrix = complete.to_numpy(dtype=float)
    n, k = matrix.shape
    if n < 3 or k < 2:
        return {"F": np.nan, "df1": k - 1, "df2": (k - 1) * (n - 1), "pvalue": np.nan, "n": n, "k": k}
    grand = matrix.mean()
    ss_cond = n * np.sum((matrix.mean(axis=0) - grand) ** 2)
    ss_subj = k * np.sum((matrix.mean(axis=1) - grand) ** 2)
    ss_total = np.sum((matrix - grand) ** 2)
    ss_error = ss_total - ss_cond - ss_subj
    df1, df2 = k - 1, (k - 1) * (n - 1)
    f = (ss_cond / df1) / (ss_error / df2)
    gg, hf = _epsilons(matrix) if k > 2 else (1.0, 1.0)
    return {
        "F": float(f),
        "df1": df1,
        "df2": df2,
        "pvalue": float(stats.f.sf(f, df1, df2)),
        "eps_gg": gg,
        "pvalue_gg": float(stats.f.sf(f, gg * df1, gg * df2)),
        "eps_hf": hf,
        "pvalue_hf": float(stats.f.sf(f, hf * df1, hf * df2)),
        "partial_eta2": float(ss_cond / (ss_cond + ss_error)),
        "n": n,
        "k": k,
        "n_incomplete": int(len(wide) - n),
    }

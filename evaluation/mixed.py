"""Linear mixed model and repeated-measures ANOVA of the ratings.

The mixed model (``evaluation.lmm``) is ``rating ~ condition`` with crossed random
effects: an intercept per listener and per item (excerpt), and listener x condition and
item x condition effects (Baayen, Davidson & Bates 2008; Barr et al. 2013), fitted by REML.
Estimated marginal means (Searle, Speed & Milliken 1980) and the contrasts of each
condition against a baseline are t statistics with Satterthwaite (1946) degrees of freedom
as in lmerTest (Kuznetsova et al. 2017). With ``item_effect='fixed'`` the excerpts are the
population: ``rating ~ condition * item`` with the listener terms only, and the EMMs
average the items with equal weight. Interaction terms the data do not support (REML
likelihood ratio p above ``prune_alpha``, 0.2 by default as Matuschek et al. 2017
recommend) are removed backwards before the contrasts; the report lists them.

The repeated-measures ANOVA works on per-participant means (participants x
conditions) and reports the Greenhouse-Geisser (1959) and Huynh-Feldt (1976) epsilon
corrections of the degrees of freedom for non-sphericity.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .lmm import fit_lmm


def fit_mixed_model(
    ratings: pd.DataFrame,
    conditions: list[str],
    baseline: str,
    item_effect: str = "random",
    confidence_level: float = 0.95,
    prune_alpha: float | None = 0.2,
) -> dict[str, Any]:
    """Fit the crossed LMM; EMMs and contrasts against ``baseline`` with Satterthwaite df (Kuznetsova et al. 2017)."""
    fit = fit_lmm(ratings, conditions, item_effect, prune_alpha)
    level = 0.5 + confidence_level / 2
    emm, se, df = fit.contrast(fit.emm_rows)
    half = stats.t.ppf(level, df) * se
    emms = pd.DataFrame(
        {"condition": conditions, "emm": emm, "se": se, "df": df, "ci_low": emm - half, "ci_high": emm + half}
    )
    base = conditions.index(baseline)
    others = [i for i in range(len(conditions)) if i != base]
    rows = fit.emm_rows[others] - fit.emm_rows[base]
    estimate, error, cdf = fit.contrast(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        tstat = np.where(error > 0, estimate / error, np.nan)
    half = stats.t.ppf(level, cdf) * error
    contrasts = pd.DataFrame(
        {
            "condition": [conditions[i] for i in others],
            "baseline": baseline,
            "estimate": estimate,
            "se": error,
            "df": cdf,
            "t": tstat,
            "pvalue": 2 * stats.t.sf(np.abs(tstat), cdf),
            "ci_low": estimate - half,
            "ci_high": estimate + half,
        }
    )
    random_part = " + ".join(f"(1 | {term})" for term in fit.terms)
    return {
        "formula": fit.fixed_formula + (f" + {random_part}" if random_part else ""),
        "groups": ", ".join(t for t in ("participant", "item") if t in fit.terms) or "none",
        "item_effect": fit.item_effect,
        "method": "REML",
        "df_method": "Satterthwaite",
        "n_obs": fit.n_obs,
        "converged": fit.converged,
        "notes": fit.notes,
        "design_notes": fit.design_notes + [f"{term} left out: {why}" for term, why in fit.dropped.items()],
        "random_effects": fit.terms,
        "boundary": fit.boundary,
        "variance_components": fit.variances,
        "omnibus": fit.ftest(rows) if len(rows) else None,
        "emms": emms,
        "contrasts": contrasts,
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


_TERM_WORDS = {
    "participant": "listeners",
    "item": "excerpts",
    "participant:condition": "listener x condition",
    "item:condition": "excerpt x condition",
}


def methods_sentence(result: dict[str, Any], confidence_level: float = 0.95) -> str:
    """The mixed model in words, for the methods paragraph of a report."""
    terms = list(result["random_effects"])
    intercepts = [_TERM_WORDS[t] for t in terms if ":" not in t]
    slopes = [_TERM_WORDS[t] for t in terms if ":" in t]
    parts = []
    if intercepts:
        parts.append("random intercepts for " + " and ".join(intercepts))
    if slopes:
        parts.append(" and ".join(slopes) + " random effects")
    random = " and ".join(parts) if parts else "no random effects"
    text = (
        f"A linear mixed model ({result['formula']}) with {random} was fitted by REML"
        + (
            ", so that differences between conditions are tested against how much listeners and excerpts disagree "
            "about them"
            if slopes
            else ""
        )
        + ". Estimated marginal means and contrasts against the baseline are reported as t tests with "
        f"{100 * confidence_level:g} % intervals on Satterthwaite degrees of freedom (Kuznetsova et al. 2017)"
    )
    if result["item_effect"] == "fixed":
        text += "; excerpts were a fixed factor, so the conclusions hold for these excerpts"
    if result["boundary"]:
        text += "; the " + " and ".join(_TERM_WORDS[t] for t in result["boundary"]) + " variance was estimated as zero"
    return text + "."

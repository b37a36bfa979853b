"""Excerpts as a sample: the condition x item analysis and the by-item tests.

ITU-R BS.1534-3 (Annex 1, Attachment 4) asks whether conditions behave alike across the
test items before ratings are averaged over them. Tests on per-listener means treat the
excerpts as the whole population: they generalise to listeners, for these excerpts.
This module adds, on the same retained ratings:

- the two-way repeated-measures ANOVA condition x item on the listeners with every cell,
  with Greenhouse-Geisser (1959) epsilons from orthonormal contrasts (the interaction
  contrasts are the Kronecker product of the factors' contrasts, as in R/afex),
- per item, each model's mean difference to the baseline with its t interval over
  listeners (paired t test, Holm over every item x model comparison),
- by-item tests, where excerpts are the units (condition means per item, paired across
  items: paired t and Wilcoxon, Holm-adjusted), and
- min F' (Clark 1973) combining the by-listener F1 and the by-item F2 of the condition
  effect, which generalises to listeners and excerpts at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .intervals import interval_records, interval_table, pairwise_intervals
from .nonparametric import pairwise_wilcoxon, smallest_exact_wilcoxon_p


@dataclass
class ItemAnalysis:
    """The condition x item results: interaction ANOVA, per-item contrasts, by-item tests, min F'."""

    baseline: str | None
    conditions: list[str]
    n_items: int
    interaction: dict[str, Any] | None
    per_item: pd.DataFrame
    by_item: pd.DataFrame
    min_f: dict[str, Any] | None
    agreement: pd.DataFrame
    alpha: float

    def disagreements(self) -> pd.DataFrame:
        """Pairs whose by-listener and by-item Holm-adjusted Wilcoxon conclusions differ at alpha."""
        if self.agreement.empty:
            return self.agreement
        return self.agreement[~self.agreement["agree"]]

    def stats(self) -> dict[str, Any]:
        """The JSON-ready ``excerpts`` entry of stats.json (docs/statistics.md)."""
        return {
            "baseline": self.baseline,
            "conditions": list(self.conditions),
            "n_items": self.n_items,
            "interaction": self.interaction,
            "per_item": interval_records(self.per_item),
            "by_item": interval_records(self.by_item),
            "min_f": self.min_f,
            "agreement": interval_records(self.agreement),
            "inference": inference_text(self),
        }


def orthonormal_contrasts(k: int) -> np.ndarray:
    """Normalised Helmert contrasts, shape (k, k - 1): orthonormal columns orthogonal to the constant."""
    out = np.zeros((k, k - 1))
    for j in range(1, k):
        out[:j, j - 1] = 1.0
        out[j, j - 1] = -float(j)
        out[:, j - 1] /= np.sqrt(j * (j + 1))
    return out


def _gg_epsilon(scores: np.ndarray) -> float:
    # Greenhouse & Geisser (1959) from the covariance of orthonormal contrast scores (n, p).
    p = scores.shape[1]
    if p <= 1 or scores.shape[0] < 2:
        return 1.0
    cov = np.atleast_2d(np.cov(scores, rowvar=False))
    spread = np.trace(cov @ cov)
    return float(min(np.trace(cov) ** 2 / (p * spread), 1.0)) if spread > 0 else np.nan


def rating_cube(used: pd.DataFrame, conditions: list[str]) -> tuple[np.ndarray, list[str]]:
    """Ratings as (listeners, conditions, items), NaN where a listener did not rate a cell; and the items."""
    rows = used[used["condition"].isin(conditions)]
    items = sorted(rows["item"].astype(str).unique().tolist())
    listener, _ = pd.factorize(rows["participant"])
    condition = pd.Index(conditions).get_indexer(pd.Index(rows["condition"].astype(str)))
    item = pd.Index(items).get_indexer(pd.Index(rows["item"].astype(str)))
    shape = (int(listener.max()) + 1 if len(rows) else 0, len(conditions), len(items))
    total, count = np.zeros(shape), np.zeros(shape)
    np.add.at(total, (listener, condition, item), rows["rating"].to_numpy(dtype=float))
    np.add.at(count, (listener, condition, item), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan), items


def complete_cube(used: pd.DataFrame, conditions: list[str]) -> tuple[np.ndarray, list[str], int]:
    """Ratings as (listeners, conditions, items) for the listeners who rated every cell; items and dropped count."""
    cube, items = rating_cube(used, conditions)
    keep = ~np.isnan(cube).any(axis=(1, 2))
    return cube[keep], items, int(np.count_nonzero(~keep))


def two_way_rm_anova(cube: np.ndarray) -> list[dict[str, Any]]:
    """Two-way repeated-measures ANOVA of (subjects, a, b) data: condition, item and their interaction.

    Each effect is tested against its own subject interaction (Winer, Brown & Michels 1991,
    ch. 7); Greenhouse-Geisser epsilons from the orthonormal contrasts of each effect.
    """
    n, a, b = cube.shape
    mu = cube.mean()
    subject = cube.mean(axis=(1, 2))
    mean_a, mean_b, mean_ab = cube.mean(axis=(0, 2)), cube.mean(axis=(0, 1)), cube.mean(axis=0)
    subject_a, subject_b = cube.mean(axis=2), cube.mean(axis=1)
    residual = (
        cube
        - subject_a[:, :, None]
        - subject_b[:, None, :]
        - mean_ab[None]
        + subject[:, None, None]
        + mean_a[None, :, None]
        + mean_b[None, None, :]
        - mu
    )
    contrast_a, contrast_b = orthonormal_contrasts(a), orthonormal_contrasts(b)
    effects = [
        (
            "condition",
            n * b * np.sum((mean_a - mu) ** 2),
            b * np.sum((subject_a - subject[:, None] - mean_a[None] + mu) ** 2),
            a - 1,
            subject_a @ contrast_a,
        ),
        (
            "item",
            n * a * np.sum((mean_b - mu) ** 2),
            a * np.sum((subject_b - subject[:, None] - mean_b[None] + mu) ** 2),
            b - 1,
            subject_b @ contrast_b,
        ),
        (
            "condition:item",
            n * np.sum((mean_ab - mean_a[:, None] - mean_b[None, :] + mu) ** 2),
            np.sum(residual**2),
            (a - 1) * (b - 1),
            np.einsum("sab,ai,bj->sij", cube, contrast_a, contrast_b).reshape(n, -1),
        ),
    ]
    out = []
    for name, ss, ss_error, df1, scores in effects:
        df2 = df1 * (n - 1)
        f = (ss / df1) / (ss_error / df2) if ss_error > 0 else np.nan
        eps = _gg_epsilon(scores)
        out.append(
            {
                "effect": name,
                "F": float(f),
                "df1": int(df1),
                "df2": int(df2),
                "pvalue": float(stats.f.sf(f, df1, df2)),
                "eps_gg": eps,
                "pvalue_gg": float(stats.f.sf(f, eps * df1, eps * df2)),
                "partial_eta2": float(ss / (ss + ss_error)) if ss + ss_error > 0 else np.nan,
            }
        )
    return out


def interaction_anova(used: pd.DataFrame, conditions: list[str]) -> dict[str, Any] | None:
    """The condition x item ANOVA on complete listeners, or None when a factor has one level or n < 2."""
    if len(conditions) < 2:
        return None
    cube, items, dropped = complete_cube(used, conditions)
    if len(items) < 2 or cube.shape[0] < 2:
        return None
    return {"n": int(cube.shape[0]), "n_incomplete": dropped, "effects": two_way_rm_anova(cube)}


def oneway_rm_f(matrix: np.ndarray) -> dict[str, float]:
    """One-way repeated-measures F of the columns (conditions) of a complete (units, k) matrix."""
    n, k = matrix.shape
    grand = matrix.mean()
    ss_cond = n * np.sum((matrix.mean(axis=0) - grand) ** 2)
    ss_unit = k * np.sum((matrix.mean(axis=1) - grand) ** 2)
    ss_error = np.sum((matrix - grand) ** 2) - ss_cond - ss_unit
    df1, df2 = k - 1, (k - 1) * (n - 1)
    f = (ss_cond / df1) / (ss_error / df2) if ss_error > 0 and df2 > 0 else np.nan
    return {"F": float(f), "df1": float(df1), "df2": float(df2), "pvalue": float(stats.f.sf(f, df1, df2))}


def min_f_prime(f1: dict[str, float], f2: dict[str, float]) -> dict[str, Any]:
    """min F' = F1 F2 / (F1 + F2) on (df1, (F1 + F2)^2 / (F1^2 / df2(F2) + F2^2 / df2(F1))) (Clark 1973)."""
    a, b = f1["F"], f2["F"]
    if not (np.isfinite(a) and np.isfinite(b) and a + b > 0):
        value = df2 = np.nan
    else:
        value = a * b / (a + b)
        df2 = (a + b) ** 2 / (a**2 / f2["df2"] + b**2 / f1["df2"])
    return {
        "F1": f1,
        "F2": f2,
        "min_f": float(value),
        "df1": float(f1["df1"]),
        "df2": float(df2),
        "pvalue": float(stats.f.sf(value, f1["df1"], df2)),
    }


def per_item_contrasts(
    used: pd.DataFrame, models: list[str], baseline: str | None, confidence_level: float = 0.95
) -> pd.DataFrame:
    """Per item, each model minus the baseline over listeners: paired t, t intervals, d_z, Holm over the family."""
    keys: list[tuple[str, str]] = []
    differences = []
    if baseline is not None and baseline in used["condition"].unique():
        others = [m for m in models if m != baseline]
        cube, items = rating_cube(used, [baseline, *others])
        for j, item in enumerate(items):
            for k, model in enumerate(others, start=1):
                d = cube[:, k, j] - cube[:, 0, j]
                if np.isfinite(d).any():
                    keys.append((item, model))
                    differences.append(d[np.isfinite(d)])
    table = interval_table(differences, confidence_level)
    table.insert(0, "baseline", baseline)
    table.insert(0, "condition", [k[1] for k in keys])
    table.insert(0, "item", [k[0] for k in keys])
    table["test"] = "paired t over listeners"
    return table


def item_means(used: pd.DataFrame, conditions: list[str]) -> pd.DataFrame:
    """Mean rating of each condition per item over listeners (items x conditions): the by-item data."""
    frame = used[used["condition"].isin(conditions)]
    return frame.pivot_table(index="item", columns="condition", values="rating", aggfunc="mean").reindex(
        columns=conditions
    )


def by_item_tests(
    means: pd.DataFrame,
    pairs: list[tuple[str, str]],
    confidence_level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Pairs tested across items (the units): Wilcoxon (Pratt) and paired t, each Holm-adjusted, with intervals."""
    wilcoxon = pairwise_wilcoxon(means, pairs, n_resamples, seed)
    wilcoxon = wilcoxon[["a", "b", "mean_a", "mean_b", "statistic", "pvalue", "pvalue_holm", "perm_pvalue_holm"]]
    return wilcoxon.merge(pairwise_intervals(means, pairs, confidence_level), on=["a", "b"], sort=False)


def agreement(by_listener: pd.DataFrame, by_item: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """For each pair: significant by listener (Wilcoxon, Holm) and by item (Wilcoxon, Holm), and whether they agree."""
    if by_listener.empty or by_item.empty:
        return pd.DataFrame(columns=["a", "b", "by_listener", "by_item", "agree"])
    left = by_listener[["a", "b", "pvalue_holm"]].rename(columns={"pvalue_holm": "p_listener"})
    right = by_item[["a", "b", "pvalue_holm"]].rename(columns={"pvalue_holm": "p_item"})
    both = left.merge(right, on=["a", "b"], sort=False)
    both["by_listener"] = both["p_listener"] < alpha
    both["by_item"] = both["p_item"] < alpha
    both["agree"] = both["by_listener"] == both["by_item"]
    return both[["a", "b", "by_listener", "by_item", "agree"]]


def analyse_items(
    used: pd.DataFrame,
    models: list[str],
    baseline: str | None,
    pairs: list[tuple[str, str]],
    by_listener: pd.DataFrame,
    *,
    alpha: float = 0.05,
    confidence_level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> ItemAnalysis:
    """Every excerpts-as-a-sample result for the models (interaction, min F') and the tested pairs."""
    n_items = int(used["item"].nunique())
    per_item = per_item_contrasts(used, models, baseline, confidence_level)
    scope = list(dict.fromkeys([c for pair in pairs for c in pair]))
    by_item = pd.DataFrame()
    if n_items >= 2 and pairs:
        by_item = by_item_tests(item_means(used, scope), pairs, confidence_level, n_resamples, seed)
    min_f = None
    if len(models) >= 2 and n_items >= 2:
        listeners = used.pivot_table(index="participant", columns="condition", values="rating", aggfunc="mean")
        f1_data = listeners.reindex(columns=models).dropna().to_numpy(dtype=float)
        f2_data = item_means(used, models).dropna().to_numpy(dtype=float)
        if len(f1_data) >= 2 and len(f2_data) >= 2:
            min_f = min_f_prime(oneway_rm_f(f1_data), oneway_rm_f(f2_data))
    return ItemAnalysis(
        baseline=baseline,
        conditions=list(models),
        n_items=n_items,
        interaction=interaction_anova(used, models),
        per_item=per_item,
        by_item=by_item,
        min_f=min_f,
        agreement=agreement(by_listener, by_item, alpha),
        alpha=alpha,
    )


def inference_text(result: ItemAnalysis) -> str:
    """Which inference each result supports, and where the by-listener and by-item conclusions part ways."""
    a = result.alpha
    text = [
        "By-listener tests (Friedman, pairwise Wilcoxon, F1) generalise to listeners, for these excerpts only; "
        "by-item tests generalise to excerpts like these, and min F' to listeners and excerpts at once."
    ]
    split = result.disagreements()
    if len(split):
        listed = "; ".join(
            f"{r.a} vs {r.b} significant by {'listener' if r.by_listener else 'item'} only" for r in split.itertuples()
        )
        text.append(f"The two disagree on {len(split)} of {len(result.agreement)} pairs ({listed}).")
        floor = smallest_exact_wilcoxon_p(result.n_items) * len(result.agreement)
        if floor > a:
            text.append(
                f"With {result.n_items} excerpts no by-item Wilcoxon test can reach alpha = {a:g} after Holm "
                f"(smallest adjusted p {min(floor, 1.0):.3g})."
            )
    elif len(result.agreement):
        text.append(f"The by-listener and by-item Wilcoxon tests agree on all {len(result.agreement)} pairs.")
    m = result.min_f
    if m is not None and np.isfinite(m["pvalue"]) and np.isfinite(m["F1"]["pvalue"]):
        if (m["F1"]["pvalue"] < a) != (m["pvalue"] < a):
            text.append(
                f"The condition effect is {'significant' if m['F1']['pvalue'] < a else 'not significant'} by "
                f"listener (F1) but {'significant' if m['pvalue'] < a else 'not significant'} by min F'."
            )
    inter = result.interaction
    if inter is not None:
        effect = inter["effects"][2]
        if np.isfinite(effect["pvalue_gg"]) and effect["pvalue_gg"] < a:
            text.append(
                "The condition x item interaction is significant: differences between conditions depend on the "
                "excerpt, so read the per-item results before the averages."
            )
    return " ".join(text)


def item_warnings(result: ItemAnalysis) -> list[dict[str, str]]:
    """Warnings for a significant condition x item interaction and for by-listener / by-item disagreement."""
    out = []
    inter = result.interaction
    if inter is not None:
        effect = inter["effects"][2]
        if np.isfinite(effect["pvalue_gg"]) and effect["pvalue_gg"] < result.alpha:
            out.append(
                {
                    "code": "condition_item_interaction",
                    "message": f"Condition x item interaction F({effect['df1']}, {effect['df2']}) = "
                    f"{effect['F']:.2f}, Greenhouse-Geisser p = {effect['pvalue_gg']:.3g}: the differences between "
                    "conditions depend on the excerpt; see the per-item results before averaging over excerpts.",
                }
            )
    split = result.disagreements()
    floor = smallest_exact_wilcoxon_p(result.n_items) * len(result.agreement)
    if len(split) and floor > result.alpha:
        out.append(
            {
                "code": "too_few_items",
                "message": f"With {result.n_items} excerpts no by-item Wilcoxon test can reach alpha = "
                f"{result.alpha:g} after Holm (smallest adjusted p {min(floor, 1.0):.3g}): the pairwise results "
                "hold for these excerpts and cannot be generalised to other excerpts.",
            }
        )
    elif len(split):
        out.append(
            {
                "code": "by_item_disagrees",
                "message": f"By-listener and by-item tests disagree on {len(split)} of {len(result.agreement)} "
                "pairs: " + ", ".join(f"{r.a} vs {r.b}" for r in split.itertuples()) + ". A by-listener result "
                "holds for these excerpts; it may not carry over to other excerpts.",
            }
        )
    return out

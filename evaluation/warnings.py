"""Warnings in words about the design and the data, for the report and stats.json.

Each warning is ``{"code": ..., "message": ...}``; the message is a sentence a
researcher can act on.
"""

from __future__ import annotations

import pandas as pd

from .kinds import MODEL
from .nonparametric import smallest_exact_wilcoxon_p


def too_few_listeners(n: int, comparisons: int, alpha: float) -> dict[str, str] | None:
    """Warn when even the most extreme result cannot be significant after Holm correction.

    With n listeners, an exact Wilcoxon signed-rank or sign-flip permutation test
    cannot give a two-sided p below 2 / 2^n; Holm (1979) multiplies the smallest p by
    the number of comparisons m, so no pair can reach alpha when m * 2 / 2^n > alpha.
    """
    if comparisons < 1:
        return None
    smallest = smallest_exact_wilcoxon_p(n)
    adjusted = min(1.0, comparisons * smallest)
    if adjusted <= alpha:
        return None
    needed = n
    while min(1.0, comparisons * smallest_exact_wilcoxon_p(needed)) > alpha:
        needed += 1
    return {
        "code": "too_few_listeners",
        "message": (
            f"Too few listeners for {comparisons} pairwise comparisons: with {n} listeners the smallest p an "
            f"exact test can give is {smallest:.3g}, which becomes {adjusted:.3g} after Holm correction, "
            f"above alpha = {alpha:g}; no pair can be declared different. At least {needed} listeners are needed."
        ),
    }


def ceiling_effects(ratings: pd.DataFrame, threshold: float, fraction: float) -> list[dict[str, str]]:
    """Warn for each model condition whose share of ratings at or above ``threshold`` exceeds ``fraction``."""
    out = []
    models = ratings[ratings["kind"] == MODEL]
    share = (models["rating"] >= threshold).groupby(models["condition"]).mean()
    for condition, value in share.items():
        if value > fraction:
            out.append(
                {
                    "code": "ceiling_effect",
                    "message": (
                        f"Ceiling effect: {100 * value:.0f} % of the ratings of {condition} "
                        f"are at or above {threshold:g}; "
                        "differences among the best conditions are compressed and means understate them. "
                        "Rank-based tests are less affected than means."
                    ),
                }
            )
    return out


def missing_cells(ratings: pd.DataFrame) -> dict[str, str] | None:
    """Warn when some (participant, item, condition) cells are empty (an unbalanced table)."""
    participants = ratings["participant"].nunique()
    items = ratings["item"].nunique()
    conditions = ratings["condition"].nunique()
    expected = participants * items * conditions
    observed = len(ratings)
    if observed >= expected:
        return None
    incomplete = ratings.groupby("participant").size()
    short = int((incomplete < items * conditions).sum())
    return {
        "code": "missing_cells",
        "message": (
            f"Missing cells: {expected - observed} of {expected} (participant, item, condition) cells are empty "
            f"({short} of {participants} listeners have gaps). Per-participant means use the items each listener "
            "rated; the Friedman test and the repeated-measures ANOVA use complete cases only; pairwise tests use "
            "every listener who rated both conditions; the mixed model uses every rating."
        ),
    }


def few_models(k: int, minimum: int) -> dict[str, str] | None:
    """Warn when a per-model correlation rests on only a handful of models."""
    if k >= minimum:
        return None
    return {
        "code": "few_models",
        "message": (
            f"Only {k} models: a per-model correlation over so few points is very uncertain (with {k} points "
            "a single model can decide the sign); read the per-(model, item) correlations and the intervals."
        ),
    }


def weak_anchor(item: str, anchor: str, difference_db: float | None, threshold_db: float) -> dict[str, str]:
    """Warn that a low-pass anchor barely differs from its reference (BS.1534-3 §5.1 anchors, §4.1.2 screening).

    ``difference_db`` is the energy the anchor removes relative to the reference's (None: nothing
    or undefined). Such an anchor sounds like the reference, so it neither marks the low end of
    the scale nor serves the post-screening rule that relies on it.
    """
    removed = "nothing" if difference_db is None else f"only {difference_db:.1f} dB of the reference's energy"
    return {
        "code": "weak_anchor",
        "message": (
            f"Anchor not an anchor: in item “{item}”, the anchor “{anchor}” removes {removed} "
            f"(below the {threshold_db:g} dB cutoff), so it sounds almost like the reference. "
            "Choose other excerpts, with energy above the anchor's cut-off frequency "
            f"(so that the difference exceeds {threshold_db:g} dB), or a different anchor."
        ),
    }

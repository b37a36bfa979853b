"""Post-screening of assessors, ITU-R BS.1534-3 §4.1.2, and outlier flags.

BS.1534-3 §4.1.2 excludes an assessor who rates the hidden reference below 90 for more
than 15 % of the test items, and one who rates the mid-range (7 kHz) anchor above 90
for more than 15 % of the test items; an item where more than 25 % of the assessors
rate that anchor above 90 is left out of the anchor rule (the anchor is then judged
not to be audibly impaired on that item, so rating it high is no sign of an unreliable
assessor). Each assessor's share is taken over the items that assessor rated, so an
assessor who skipped items is judged on what they did. Count-based variants (an
assessor is excluded after more than N offending items, as in Bourdin et al.) are
expressed with ``reference_max_items`` / ``anchor_max_items``.

Ratings outside 1.5 x IQR of their (condition, item) cell (Tukey 1977) are flagged for
inspection and never removed: BS.1534-3 bases exclusion on the assessor's reliability,
not on disagreement with the panel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .kinds import HIDDEN_REFERENCE
from .settings import Settings

# Shares are compared with a tolerance so that exactly 15 % is never "more than 15 %"
# through floating-point rounding (3/20 must not exceed 0.15).
_EPS = 1e-9

SCREENING_COLUMNS = [
    "participant",
    "n_items",
    "reference_items",
    "reference_below",
    "reference_below_fraction",
    "anchor_items",
    "anchor_above",
    "anchor_above_fraction",
    "outlier_ratings",
    "excluded",
    "reason",
]


@dataclass
class ScreeningResult:
    """Outcome of post-screening: one row per assessor, the excluded ids, the flags."""

    table: pd.DataFrame
    excluded: list[str]
    outliers: pd.DataFrame
    anchor_exempt_items: list[str] = field(default_factory=list)
    rules: dict[str, object] = field(default_factory=dict)

    @property
    def retained(self) -> list[str]:
        """Ids of the assessors kept for analysis."""
        return [p for p in self.table["participant"] if p not in set(self.excluded)]


def flag_outliers(ratings: pd.DataFrame, factor: float = 1.5) -> pd.DataFrame:
    """Ratings beyond ``factor`` x IQR outside the quartiles of their (condition, item) cell (Tukey 1977)."""
    grouped = ratings.groupby(["condition", "item"])["rating"]
    # pandas' default (linear) quantile is numpy's default percentile.
    q1 = grouped.transform("quantile", 0.25)
    q3 = grouped.transform("quantile", 0.75)
    spread = factor * (q3 - q1)
    low, high = q1 - spread, q3 + spread
    mask = (ratings["rating"] < low) | (ratings["rating"] > high)
    flagged = ratings.loc[mask, ["participant", "item", "condition", "rating"]].copy()
    flagged["lower_fence"] = low[mask]
    flagged["upper_fence"] = high[mask]
    return flagged.reset_index(drop=True)


def _fails(count: int, total: int, max_fraction: float | None, max_items: int | None) -> list[str]:
    # Each violated rule returns the words that explain it.
    reasons: list[str] = []
    if total and max_fraction is not None and count > max_fraction * total + _EPS:
        reasons.append(f"{count} of {total} items ({100 * count / total:.1f} % > {100 * max_fraction:g} %)")
    if max_items is not None and count > max_items:
        reasons.append(f"{count} items (> {max_items})")
    return reasons


def anchor_exempt_items(ratings: pd.DataFrame, settings: Settings) -> list[str]:
    """Items where more than the exception share of assessors rate the anchor above threshold (BS.1534-3 §4.1.2)."""
    anchor = ratings[ratings["kind"] == settings.anchor_kind]
    if anchor.empty or settings.anchor_item_exception_fraction is None:
        return []
    high = (anchor["rating"] > settings.anchor_threshold).groupby(anchor["item"]).agg(["sum", "count"])
    share_limit = settings.anchor_item_exception_fraction
    exempt = high.index[high["sum"] > share_limit * high["count"] + _EPS]
    return sorted(map(str, exempt))


def post_screen(ratings: pd.DataFrame, settings: Settings | None = None) -> ScreeningResult:
    """Apply the BS.1534-3 §4.1.2 post-screening rules; returns per-assessor figures and reasons."""
    settings = settings or Settings()
    participants = sorted(ratings["participant"].unique())
    n_items = ratings.groupby("participant")["item"].nunique()

    reference = ratings[ratings["kind"] == HIDDEN_REFERENCE]
    ref_items = reference.groupby("participant")["item"].nunique()
    ref_below = (reference["rating"] < settings.reference_threshold).groupby(reference["participant"]).sum()

    exempt = anchor_exempt_items(ratings, settings)
    anchor = ratings[(ratings["kind"] == settings.anchor_kind) & ~ratings["item"].isin(exempt)]
    anchor_items = anchor.groupby("participant")["item"].nunique()
    anchor_above = (anchor["rating"] > settings.anchor_threshold).groupby(anchor["participant"]).sum()

    outliers = flag_outliers(ratings, settings.outlier_iqr_factor)
    outlier_counts = outliers.groupby("participant").size()

    rows = []
    excluded: list[str] = []
    for p in participants:
        r_total, r_count = int(ref_items.get(p, 0)), int(ref_below.get(p, 0))
        a_total, a_count = int(anchor_items.get(p, 0)), int(anchor_above.get(p, 0))
        reasons = []
        if settings.apply_screening:
            why = _fails(r_count, r_total, settings.reference_max_fraction, settings.reference_max_items)
            if why:
                reasons.append(f"hidden reference rated below {settings.reference_threshold:g} on " + " and ".join(why))
            why = _fails(a_count, a_total, settings.anchor_max_fraction, settings.anchor_max_items)
            if why:
                reasons.append(
                    f"{settings.anchor_kind} rated above {settings.anchor_threshold:g} on " + " and ".join(why)
                )
        if reasons:
            excluded.append(p)
        rows.append(
            {
                "participant": p,
                "n_items": int(n_items.get(p, 0)),
                "reference_items": r_total,
                "reference_below": r_count,
                "reference_below_fraction": r_count / r_total if r_total else np.nan,
                "anchor_items": a_total,
                "anchor_above": a_count,
                "anchor_above_fraction": a_count / a_total if a_total else np.nan,
                "outlier_ratings": int(outlier_counts.get(p, 0)),
                "excluded": bool(reasons),
                "reason": "; ".join(reasons),
            }
        )
    rules = {
        "section": "ITU-R BS.1534-3 §4.1.2",
        "applied": settings.apply_screening,
        "reference_threshold": settings.reference_threshold,
        "reference_max_fraction": settings.reference_max_fraction,
        "reference_max_items": settings.reference_max_items,
        "anchor_kind": settings.anchor_kind,
        "anchor_threshold": settings.anchor_threshold,
        "anchor_max_fraction": settings.anchor_max_fraction,
        "anchor_max_items": settings.anchor_max_items,
        "anchor_item_exception_fraction": settings.anchor_item_exception_fraction,
        "outlier_iqr_factor": settings.outlier_iqr_factor,
    }
    table = pd.DataFrame(rows, columns=SCREENING_COLUMNS)
    return ScreeningResult(table=table, excluded=excluded, outliers=outliers, anchor_exempt_items=exempt, rules=rules)

"""Ranking: each participant puts the conditions of an item in order, 1 = best.

Ranks are averaged per participant across items (the participant is the unit, as for MUSHRA),
then the Friedman (1937) test with Kendall's W and pairwise Wilcoxon signed-rank tests with
Holm's (1979) correction, exactly as ``evaluation.nonparametric`` computes them for ratings.
Tied ranks are allowed as mid-ranks (two conditions sharing places 1 and 2 are both 1.5).

Input columns: participant, item, condition, rank.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import EvaluationError
from ..io import _rows
from ..nonparametric import all_pairs, friedman, pairwise_wilcoxon
from .common import ParadigmResult, check_levels, numeric_column, read_table, start, text_columns, unique_rows

COLUMNS = ("participant", "item", "condition", "rank")


def validate_ranking(frame: pd.DataFrame, source: str = "(in memory)") -> pd.DataFrame:
    """Check a ranking table: the ranks of the k conditions of each (participant, item) are 1..k, ties as mid-ranks."""
    what = "ranking"
    frame = start(frame, COLUMNS, what, source)
    text_columns(frame, ("participant", "item", "condition"), what, source)
    frame["rank"] = numeric_column(frame, "rank", what, source, 1, np.inf)
    unique_rows(frame, ("participant", "item", "condition"), what, source)
    groups = frame.groupby(["participant", "item"], sort=False)
    size = groups["rank"].transform("size")
    total = groups["rank"].transform("sum")
    bad = (frame["rank"] > size) | ~np.isclose(total, size * (size + 1) / 2)
    if bad.any():
        first = frame.loc[bad].iloc[0]
        raise EvaluationError(
            f"{what} table {source}: the ranks of participant {first['participant']}, item {first['item']} are not "
            f"1..k (with mid-ranks for ties) at {_rows(frame.index[bad])}"
        )
    return frame


def read_ranking(path: str) -> pd.DataFrame:
    """Read and check a ranking CSV table."""
    return validate_ranking(read_table(path), source=str(path))


def analyse_ranking(
    frame: pd.DataFrame,
    *,
    alpha: float = 0.05,
    confidence_level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 1534,
) -> ParadigmResult:
    """Mean ranks, the Friedman test and Holm-corrected pairwise Wilcoxon tests on per-participant mean ranks."""
    check_levels(alpha, confidence_level)
    frame = validate_ranking(frame)
    wide = frame.pivot_table(index="participant", columns="condition", values="rank", aggfunc="mean")
    conditions = list(wide.columns)
    table = pd.DataFrame(
        {
            "condition": conditions,
            "n": [int(wide[c].notna().sum()) for c in conditions],
            "mean_rank": [float(wide[c].mean()) for c in conditions],
            "median_rank": [float(wide[c].median()) for c in conditions],
            "first_places": [int((frame.loc[frame["condition"] == c, "rank"] == 1).sum()) for c in conditions],
        }
    ).sort_values("mean_rank", kind="stable")
    test = friedman(wide)
    pairwise = pairwise_wilcoxon(wide, all_pairs(sorted(conditions)), n_resamples=n_resamples, seed=seed)
    warnings = []
    if test["n"] < 2 or test["k"] < 3:
        warnings.append(
            {
                "code": "ranking_friedman_undefined",
                "message": f"The Friedman test needs at least 3 conditions and 2 complete participants; "
                f"there are {test['k']} conditions and {test['n']} complete participants.",
            }
        )
    method = (
        "Ranks (1 = best) averaged per participant across items; Friedman (1937) test over the conditions on these "
        "mean ranks (complete participants) with Kendall's W; pairwise Wilcoxon signed-rank tests (Pratt's zeros) "
        "with Holm's (1979) correction, rank-biserial r and Hodges-Lehmann shift of a - b in ranks (a negative "
        f"value: a was ranked better), and the paired permutation test; alpha = {alpha:g}."
    )
    summary = {
        "participants": int(frame["participant"].nunique()),
        "items": int(frame["item"].nunique()),
        "conditions": sorted(conditions),
        "friedman": test,
        "alpha": alpha,
    }
    tables = {"conditions": table.reset_index(drop=True), "pairwise": pairwise}
    return ParadigmResult("ranking", "Ranking", method, tables, summary, warnings)

"""Descriptive statistics per condition and item, and per condition overall.

Overall figures are computed from per-participant means across items, so that each
listener counts once and the unit of the confidence interval is the listener, who is
the random factor of the experiment (ITU-R BS.1534-3 Annex 1, Attachment 4, A4.1: a
repeated-measures design generalising from a sample of listeners). Each row gives n, mean,
SD, the t-based 95 % confidence interval of the mean (BS.1534-3 §10.3 asks for means with
95 % confidence intervals), the BCa bootstrap interval (Efron & Tibshirani 1993, §14.3), the
median and the quartiles (linear interpolation, numpy's default).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .bootstrap import bca_mean
from .io import condition_kinds
from .kinds import order_conditions
from .settings import Settings

DESCRIPTIVE_COLUMNS = [
    "n",
    "mean",
    "sd",
    "ci_low",
    "ci_high",
    "bca_low",
    "bca_high",
    "median",
    "q1",
    "q3",
    "min",
    "max",
]


def t_interval(values: np.ndarray, confidence_level: float = 0.95) -> tuple[float, float]:
    """Student t confidence interval of the mean (the 95 % interval BS.1534-3 §10.3 reports)."""
    values = np.asarray(values, dtype=float)
    n = values.size
    if n < 2:
        return (np.nan, np.nan)
    mean = values.mean()
    half = stats.t.ppf(0.5 + confidence_level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return (float(mean - half), float(mean + half))


def _describe_groups(groups: list[np.ndarray], settings: Settings, seed_offset: int) -> pd.DataFrame:
    rows = []
    for values in groups:
        n = values.size
        q1, median, q3 = np.percentile(values, [25, 50, 75]) if n else (np.nan,) * 3
        rows.append(
            {
                "n": n,
                "mean": values.mean() if n else np.nan,
                "sd": values.std(ddof=1) if n > 1 else np.nan,
                "median": median,
                "q1": q1,
                "q3": q3,
                "min": values.min() if n else np.nan,
                "max": values.max() if n else np.nan,
            }
        )
    frame = pd.DataFrame(rows, columns=["n", "mean", "sd", "median", "q1", "q3", "min", "max"])
    # t interval of the mean (BS.1534-3 §10.3), one vectorised quantile call for all groups.
    counts = frame["n"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        quantile = stats.t.ppf(0.5 + settings.confidence_level / 2, np.where(counts > 1, counts - 1, np.nan))
        half = quantile * frame["sd"].to_numpy() / np.sqrt(counts)
    frame["ci_low"] = frame["mean"] - half
    frame["ci_high"] = frame["mean"] + half
    frame["bca_low"] = np.nan
    frame["bca_high"] = np.nan
    # Samples of equal length share one resampling matrix (see bootstrap.bca_mean).
    sizes = np.array([g.size for g in groups])
    for size in np.unique(sizes):
        where = np.flatnonzero(sizes == size)
        block = np.vstack([groups[i] for i in where]) if size else np.empty((len(where), 0))
        interval = bca_mean(
            block, settings.bootstrap_resamples, settings.confidence_level, seed=settings.seed + seed_offset + int(size)
        )
        frame.loc[where, "bca_low"] = interval[:, 0]
        frame.loc[where, "bca_high"] = interval[:, 1]
    return frame


def participant_means(ratings: pd.DataFrame) -> pd.DataFrame:
    """Per-participant mean rating of each condition across the items they rated (participants x conditions)."""
    return ratings.pivot_table(index="participant", columns="condition", values="rating", aggfunc="mean")


def describe_by_condition_item(ratings: pd.DataFrame, settings: Settings | None = None) -> pd.DataFrame:
    """Descriptives of the ratings of every (condition, item) cell."""
    settings = settings or Settings()
    kinds = condition_kinds(ratings)
    order = {c: i for i, c in enumerate(order_conditions(kinds))}
    keys: list[tuple[str, str]] = []
    groups = []
    for (condition, item), frame in ratings.groupby(["condition", "item"], sort=False):
        keys.append((str(condition), str(item)))
        groups.append(frame["rating"].to_numpy(dtype=float))
    table = _describe_groups(groups, settings, seed_offset=0)
    table.insert(0, "item", [k[1] for k in keys])
    table.insert(0, "kind", [kinds[k[0]] for k in keys])
    table.insert(0, "condition", [k[0] for k in keys])
    table["_order"] = table["condition"].map(order)
    table = table.sort_values(["_order", "item"]).drop(columns="_order").reset_index(drop=True)
    return table[["condition", "kind", "item"] + DESCRIPTIVE_COLUMNS]


def describe_overall(ratings: pd.DataFrame, settings: Settings | None = None) -> pd.DataFrame:
    """Descriptives per condition from per-participant means across items (the listener is the unit)."""
    settings = settings or Settings()
    kinds = condition_kinds(ratings)
    wide = participant_means(ratings)
    conditions = order_conditions(kinds)
    groups = [wide[c].dropna().to_numpy(dtype=float) for c in conditions]
    table = _describe_groups(groups, settings, seed_offset=100_000)
    table.insert(0, "item", "all")
    table.insert(0, "kind", [kinds[c] for c in conditions])
    table.insert(0, "condition", conditions)
    return table[["condition", "kind", "item"] + DESCRIPTIVE_COLUMNS]


def tukey_hinges(values: np.ndarray) -> tuple[float, float]:
    """Tukey's (1977) lower and upper hinges: medians of the lower and upper halves, the median in both when n is odd.

    The quartiles elsewhere in the package are numpy's linear ones (Hyndman & Fan 1996, type 7);
    hinges are what Tukey's box plot and 1.5 x IQR fences were defined on. The two agree when
    n is odd; for even n each hinge lies a quarter of an order-statistic step further out.
    """
    ordered = np.sort(np.asarray(values, dtype=float)[np.isfinite(values)])
    n = ordered.size
    if n == 0:
        return (np.nan, np.nan)
    half = (n + 1) // 2
    return (float(np.median(ordered[:half])), float(np.median(ordered[n - half :])))

"""Objective metrics against subjective ratings.

Two levels: per (model, item) cell, the cell's mean rating against the metric's value
for that rendering; per model, the model's mean rating (averaged over items with equal
weight) against its metric averaged over the same items (geometric mean for metrics on
a log scale). For each, Spearman's rho, Kendall's tau-b and Pearson's r (on log10 of
the metric for ``log_metrics`` such as ESR, whose values span decades; Wright et al.
2020 report ESR on a log axis for this reason).

Confidence intervals are percentile bootstrap intervals (Efron & Tibshirani 1993,
§13.3) that resample *participants* and recompute every mean, because the listener, not
the cell, is the independent unit; cells share listeners, so the p-values scipy gives
for the cell level assume an independence the data lack and are descriptive only. At
the model level the p-value is a permutation p-value (Pitman 1937), exact when the
number of orderings of the models is within the resample budget.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable

import numpy as np
import pandas as pd
from scipy import stats

from .bootstrap import resample_counts
from .settings import Settings

METHODS = ("spearman", "kendall", "pearson")
CORRELATION_COLUMNS = [
    "level",
    "metric",
    "method",
    "transform",
    "n",
    "rho",
    "ci_low",
    "ci_high",
    "pvalue",
    "pvalue_method",
    "resamples_valid",
]


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((xc @ yc) / np.sqrt((xc**2).sum(axis=1) * (yc**2).sum()))


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _pearson_rows(stats.rankdata(x, axis=1), stats.rankdata(y))


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Kendall's tau-b (Kendall 1945) of each row of x with y, over all pairs of points.
    i, j = np.triu_indices(y.size, k=1)
    sy = np.sign(y[i] - y[j])
    n0 = i.size
    ties_y = np.count_nonzero(sy == 0)
    out = np.empty(x.shape[0])
    chunk = max(1, int(4_000_000 // max(n0, 1)))
    for start in range(0, x.shape[0], chunk):
        sx = np.sign(x[start : start + chunk, i] - x[start : start + chunk, j])
        ties_x = np.count_nonzero(sx == 0, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + chunk] = (sx @ sy) / np.sqrt((n0 - ties_x) * (n0 - ties_y))
    return out


ROW_FUNCTIONS = {"spearman": _spearman_rows, "kendall": _kendall_rows, "pearson": _pearson_rows}


def correlation(x: np.ndarray, y: np.ndarray, method: str) -> float:
    """One correlation coefficient by name: spearman, kendall (tau-b) or pearson."""
    return float(ROW_FUNCTIONS[method](np.asarray(x, float)[None, :], np.asarray(y, float))[0])


def _scipy_pvalue(x: np.ndarray, y: np.ndarray, method: str) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan
    if method == "spearman":
        return float(stats.spearmanr(x, y).pvalue)
    if method == "kendall":
        return float(stats.kendalltau(x, y).pvalue)
    return float(stats.pearsonr(x, y).pvalue)


def permutation_pvalue(x: np.ndarray, y: np.ndarray, method: str, n_resamples: int, seed: int) -> tuple[float, bool]:
    """Two-sided permutation p-value of a correlation (Pitman 1937); exact when k! <= n_resamples."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    k = x.size
    observed = correlation(x, y, method)
    if not np.isfinite(observed):
        return np.nan, False
    if math.factorial(k) <= n_resamples:
        orders = np.array(list(itertools.permutations(range(k))))
        exact = True
    else:
        rng = np.random.default_rng(seed)
        orders = rng.permuted(np.tile(np.arange(k), (n_resamples, 1)), axis=1)
        exact = False
    null = ROW_FUNCTIONS[method](x[orders], y)
    hits = np.count_nonzero(np.abs(null) >= abs(observed) - 1e-12)
    return (hits / len(orders) if exact else (hits + 1) / (len(orders) + 1)), exact


def cell_means(ratings: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Participants x (condition, item) matrix of ratings, its mask of observed cells, and the cell means."""
    wide = ratings.pivot_table(index="participant", columns=["condition", "item"], values="rating", aggfunc="mean")
    mask = wide.notna().to_numpy(dtype=float)
    values = wide.fillna(0.0).to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = values.sum(axis=0) / mask.sum(axis=0)
    return wide, mask, means


def correlate(
    ratings: pd.DataFrame, metrics: pd.DataFrame, settings: Settings | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Correlations of model ratings with each metric at the (model, item) and model levels.

    ``ratings`` should hold the model conditions of the retained participants. Returns
    (correlations table, points table used for the scatter plots).
    """
    settings = settings or Settings()
    wide, mask, _ = cell_means(ratings)
    columns = list(wide.columns)
    values = wide.fillna(0.0).to_numpy(dtype=float)
    n_participants = values.shape[0]
    rng = np.random.default_rng(settings.seed + 7)
    counts = resample_counts(n_participants, settings.correlation_resamples, rng)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = (values * mask).sum(axis=0) / mask.sum(axis=0)
        boot = (counts @ (values * mask)) / (counts @ mask)  # (resamples, cells)
    position: dict[Hashable, int] = {c: i for i, c in enumerate(columns)}
    log_metrics = {m.lower() for m in settings.log_metrics}
    rows: list[dict[str, object]] = []
    points: list[pd.DataFrame] = []
    for metric, table in metrics.groupby("metric", sort=True):
        table = table[[(c, i) in position for c, i in zip(table["condition"], table["item"])]]
        if table.empty:
            continue
        is_log = str(metric).lower() in log_metrics
        if is_log and (table["value"] <= 0).any():
            is_log = False  # a log scale is undefined; fall back to raw values, noted in transform
        index = np.array([position[(c, i)] for c, i in zip(table["condition"], table["item"])])
        raw = table["value"].to_numpy(dtype=float)
        scaled = np.log10(raw) if is_log else raw
        transform = "log10" if is_log else "none"
        # Cell level.
        x_cell, b_cell = point[index], boot[:, index]
        points.append(
            pd.DataFrame(
                {
                    "level": "model_item",
                    "metric": metric,
                    "condition": table["condition"].to_numpy(),
                    "item": table["item"].to_numpy(),
                    "mean_rating": x_cell,
                    "value": raw,
                }
            )
        )
        rows += _level_rows("model_item", str(metric), x_cell, b_cell, raw, scaled, transform, settings, None)
        # Model level: equal weight per item, over the items that have the metric.
        conditions = sorted(table["condition"].unique())
        owner = table["condition"].to_numpy()
        x_model = np.array([x_cell[owner == c].mean() for c in conditions])
        b_model = np.column_stack([b_cell[:, owner == c].mean(axis=1) for c in conditions])
        y_scaled = np.array([scaled[owner == c].mean() for c in conditions])
        y_raw = 10**y_scaled if is_log else y_scaled
        points.append(
            pd.DataFrame(
                {
                    "level": "model",
                    "metric": metric,
                    "condition": conditions,
                    "item": "all",
                    "mean_rating": x_model,
                    "value": y_raw,
                }
            )
        )
        rows += _level_rows("model", str(metric), x_model, b_model, y_raw, y_scaled, transform, settings, settings.seed)
    table = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    points_table = (
        pd.concat(points, ignore_index=True)
        if points
        else pd.DataFrame(columns=["level", "metric", "condition", "item", "mean_rating", "value"])
    )
    return table, points_table


def _level_rows(
    level: str,
    metric: str,
    x: np.ndarray,
    boot: np.ndarray,
    y_raw: np.ndarray,
    y_scaled: np.ndarray,
    transform: str,
    settings: Settings,
    permutation_seed: int | None,
) -> list[dict[str, object]]:
    rows = []
    valid = np.all(np.isfinite(boot), axis=1)
    alpha = 1 - settings.confidence_level
    for method in METHODS:
        y = y_scaled if method == "pearson" else y_raw
        n = x.size
        row: dict[str, object] = {
            "level": level,
            "metric": metric,
            "method": method,
            "transform": transform if method == "pearson" else "none",
            "n": int(n),
            "rho": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "pvalue": np.nan,
            "pvalue_method": "",
            "resamples_valid": int(valid.sum()),
        }
        if n >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            row["rho"] = correlation(x, y, method)
            replicates = ROW_FUNCTIONS[method](boot[valid], y)
            replicates = replicates[np.isfinite(replicates)]
            if replicates.size:
                row["ci_low"], row["ci_high"] = (float(v) for v in np.quantile(replicates, [alpha / 2, 1 - alpha / 2]))
            if permutation_seed is None:
                row["pvalue"] = _scipy_pvalue(x, y, method)
                row["pvalue_method"] = "asymptotic (scipy; cells share listeners, descriptive)"
            else:
                p, exact = permutation_pvalue(x, y, method, settings.permutation_resamples, permutation_seed)
                row["pvalue"] = p
                row["pvalue_method"] = (
                    "permutation (exact)" if exact else f"permutation ({settings.permutation_resamples})"
                )
        rows.append(row)
    return rows

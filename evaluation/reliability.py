"""Listener reliability: intraclass correlations of the panel, and test-retest on repeated trials.

**ICC.** The table is listeners (raters) x (condition, item) cells (targets). From its
two-way ANOVA without replication (mean squares MSR of targets, MSC of raters, MSE
residual) the intraclass correlations of Shrout & Fleiss (1979) in the notation of McGraw
& Wong (1996): ICC(2,1) = ICC(A,1), absolute agreement of one listener with listeners as
a random sample; ICC(2,k) = ICC(A,k), the same for the mean of the k listeners (the
reliability of the panel's mean ratings); ICC(3,1) = ICC(C,1) and ICC(3,k) = ICC(C,k),
consistency, which ignores each listener's overall offset. F = MSR / MSE on (n - 1,
(n - 1)(k - 1)) df tests ICC = 0; intervals are McGraw & Wong's (1996, Table 7): exact F
intervals for the consistency forms and Satterthwaite's approximation for the agreement
forms (as in pingouin's ``intraclass_corr`` and R's ``psych::ICC``). The ICC needs a
complete table: listeners who did not rate every cell are left out (and counted). It is
given over all conditions (the hidden reference and anchors spread the targets and raise
it) and over the models only (how well listeners agree on what the test is about).

**Test-retest.** When the ratings carry a ``repeat`` column (0 for the first presentation
of a trial, 1, 2, ... for later ones), the analysis uses the first presentation of every
(listener, item, condition) and the later ones here: per listener, the Pearson correlation
of first against repeated ratings over the repeated cells, the mean absolute difference and
the mean difference (repeat - first), and the same over all listeners pooled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .errors import EvaluationError

ICC_COLUMNS = [
    "scope",
    "type",
    "description",
    "icc",
    "ci_low",
    "ci_high",
    "F",
    "df1",
    "df2",
    "pvalue",
    "n_targets",
    "n_raters",
    "n_raters_left_out",
]
RETEST_COLUMNS = ["participant", "n_pairs", "r", "mean_abs_difference", "mean_difference"]
_DESCRIPTIONS = {
    "ICC(2,1)": "absolute agreement, one listener (listeners random)",
    "ICC(2,k)": "absolute agreement, mean of the k listeners",
    "ICC(3,1)": "consistency, one listener",
    "ICC(3,k)": "consistency, mean of the k listeners",
}


def split_repeats(ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """First presentations (for the analysis) and later repeats (for test-retest) of a validated table."""
    if "repeat" not in ratings.columns:
        return ratings, ratings.iloc[:0].copy()
    values = pd.to_numeric(ratings["repeat"], errors="coerce")
    bad = values.isna() | (values < 0) | (values != np.floor(values))
    if bad.any():
        raise EvaluationError(
            f"ratings table: column repeat must hold whole numbers >= 0 (0 = first presentation), "
            f"e.g. {ratings.loc[bad, 'repeat'].iloc[0]!r} at row {int(np.flatnonzero(bad.to_numpy())[0])}"
        )
    ratings = ratings.assign(repeat=values.astype(int))
    first = ratings.groupby(["participant", "item", "condition"])["repeat"].transform("min")
    primary = ratings[ratings["repeat"] == first].reset_index(drop=True)
    primary.attrs.update(ratings.attrs)
    repeats = ratings[ratings["repeat"] != first].reset_index(drop=True)
    return primary, repeats


def icc(table: np.ndarray, confidence_level: float = 0.95) -> pd.DataFrame:
    """ICC(2,1), ICC(2,k), ICC(3,1), ICC(3,k) of a complete targets x raters matrix (McGraw & Wong 1996)."""
    matrix = np.asarray(table, dtype=float)
    n, k = matrix.shape
    grand = matrix.mean()
    ss_rows = k * np.sum((matrix.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((matrix.mean(axis=0) - grand) ** 2)
    ss_error = np.sum((matrix - grand) ** 2) - ss_rows - ss_cols
    df1, df2 = n - 1, (n - 1) * (k - 1)
    msr, msc, mse = ss_rows / df1, ss_cols / (k - 1), ss_error / df2
    alpha = 1.0 - confidence_level
    with np.errstate(divide="ignore", invalid="ignore"):
        icc2 = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
        icc2k = (msr - mse) / (msr + (msc - mse) / n)
        icc3 = (msr - mse) / (msr + (k - 1) * mse)
        icc3k = (msr - mse) / msr
        f = msr / mse
        # Consistency: exact F limits.
        f_low = f / stats.f.ppf(1 - alpha / 2, df1, df2)
        f_high = f * stats.f.ppf(1 - alpha / 2, df2, df1)
        # Agreement: Satterthwaite df v of the denominator (McGraw & Wong 1996, Table 7, case 2A).
        fj = msc / mse
        v = (
            (k - 1)
            * (n - 1)
            * (k * icc2 * fj + n * (1 + (k - 1) * icc2) - k * icc2) ** 2
            / ((n - 1) * k**2 * icc2**2 * fj**2 + (n * (1 + (k - 1) * icc2) - k * icc2) ** 2)
        )
        fu = stats.f.ppf(1 - alpha / 2, n - 1, v)
        fl = stats.f.ppf(1 - alpha / 2, v, n - 1)
        low2 = n * (msr - fu * mse) / (fu * (k * msc + (k * n - k - n) * mse) + n * msr)
        high2 = n * (fl * msr - mse) / (k * msc + (k * n - k - n) * mse + n * fl * msr)
        pvalue = float(stats.f.sf(f, df1, df2))
        # Undefined (NaN) where the table has no residual variance.
        values = {
            "ICC(2,1)": (icc2, low2, high2),
            "ICC(2,k)": (icc2k, low2 * k / (1 + low2 * (k - 1)), high2 * k / (1 + high2 * (k - 1))),
            "ICC(3,1)": (icc3, (f_low - 1) / (f_low + k - 1), (f_high - 1) / (f_high + k - 1)),
            "ICC(3,k)": (icc3k, 1 - 1 / f_low, 1 - 1 / f_high),
        }
    return pd.DataFrame(
        [
            {
                "type": name,
                "description": _DESCRIPTIONS[name],
                "icc": float(value),
                "ci_low": float(low),
                "ci_high": float(high),
                "F": float(f),
                "df1": df1,
                "df2": df2,
                "pvalue": pvalue,
            }
            for name, (value, low, high) in values.items()
        ]
    )


def panel_icc(ratings: pd.DataFrame, scopes: dict[str, list[str]], confidence_level: float = 0.95) -> pd.DataFrame:
    """ICC table of the listeners x (condition, item) matrix for each scope (name -> conditions)."""
    frames = []
    for scope, conditions in scopes.items():
        data = ratings[ratings["condition"].isin(conditions)]
        matrix = data.pivot_table(index=["condition", "item"], columns="participant", values="rating", aggfunc="mean")
        complete = matrix.dropna(axis=1)
        n, k = complete.shape
        if n < 2 or k < 2 or not np.isfinite(complete.to_numpy()).all():
            continue
        table = icc(complete.to_numpy(), confidence_level)
        table.insert(0, "scope", scope)
        table["n_targets"] = n
        table["n_raters"] = k
        table["n_raters_left_out"] = matrix.shape[1] - k
        frames.append(table)
    if not frames:
        return pd.DataFrame(columns=ICC_COLUMNS)
    return pd.concat(frames, ignore_index=True)[ICC_COLUMNS]


def _pair_stats(first: np.ndarray, again: np.ndarray) -> dict[str, float]:
    diff = again - first
    r = np.nan
    if first.size >= 3 and np.ptp(first) > 0 and np.ptp(again) > 0:
        r = float(stats.pearsonr(first, again)[0])
    return {
        "n_pairs": int(first.size),
        "r": r,
        "mean_abs_difference": float(np.abs(diff).mean()) if diff.size else np.nan,
        "mean_difference": float(diff.mean()) if diff.size else np.nan,
    }


def retest_agreement(primary: pd.DataFrame, repeats: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float] | None]:
    """Per-listener and pooled agreement of repeated presentations with the first one."""
    if repeats.empty:
        return pd.DataFrame(columns=RETEST_COLUMNS), None
    keys = ["participant", "item", "condition"]
    pairs = repeats[keys + ["rating"]].merge(
        primary[keys + ["rating"]], on=keys, how="inner", suffixes=("_again", "_first")
    )
    rows = []
    for participant, frame in pairs.groupby("participant", sort=True):
        rows.append(
            {
                "participant": participant,
                **_pair_stats(frame["rating_first"].to_numpy(float), frame["rating_again"].to_numpy(float)),
            }
        )
    pooled = _pair_stats(pairs["rating_first"].to_numpy(float), pairs["rating_again"].to_numpy(float))
    return pd.DataFrame(rows, columns=RETEST_COLUMNS), pooled


def reliability_stats(icc_table: pd.DataFrame, retest: pd.DataFrame, pooled: dict[str, float] | None) -> dict[str, Any]:
    """The ``reliability`` block of stats.json."""
    icc_rows = []
    for r in icc_table.to_dict("records"):
        entry = {str(k): v for k, v in r.items() if k not in ("ci_low", "ci_high")}
        entry["ci95"] = [r["ci_low"], r["ci_high"]]
        icc_rows.append(entry)
    return {
        "icc": icc_rows,
        "test_retest": None
        if pooled is None
        else {"pooled": pooled, "per_listener": [{str(k): v for k, v in r.items()} for r in retest.to_dict("records")]},
    }

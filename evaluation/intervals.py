"""Every difference with its interval: simultaneous intervals of mean differences and effect sizes.

For a family of m paired differences (one vector of differences per comparison, the
unit being a listener or an excerpt) this module gives, per comparison:

- the Student-t interval of the mean difference (marginal; the paired t of BS.1534-3 Attachment 4, A4.4),
- the Bonferroni-simultaneous t interval (each at 1 - alpha/m, family coverage >= 1 - alpha),
- the Holm-compatible simultaneous interval (Strassburger & Bretz 2008),
- the paired t test with Holm-adjusted p-values,
- Cohen's d_z with its exact noncentral-t interval (Steiger & Fouladi 1997),
- the matched-pairs rank-biserial r (Kerby 2014) with a Fisher-z normal-approximation interval.

The Holm-compatible interval is reported next to the Bonferroni one because it only
bounds the estimate by 0 on the side where Holm rejects (it states the sign and little
more), while the Bonferroni interval always has two informative ends; the Bonferroni
interval excludes 0 only where Holm also rejects, so the two never contradict the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import nctdtr, ndtri

from .nonparametric import holm, rank_biserial

INTERVAL_COLUMNS = [
    "n",
    "mean_difference",
    "sd",
    "t",
    "df",
    "pvalue_t",
    "pvalue_t_holm",
    "ci_low",
    "ci_high",
    "ci_sim_low",
    "ci_sim_high",
    "ci_holm_low",
    "ci_holm_high",
    "cohen_dz",
    "cohen_dz_low",
    "cohen_dz_high",
    "rank_biserial",
    "rank_biserial_low",
    "rank_biserial_high",
]


def bonferroni_intervals(
    mean: np.ndarray, se: np.ndarray, df: np.ndarray, confidence_level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Bonferroni-simultaneous t intervals: each at 1 - alpha/m, jointly >= 1 - alpha (Dunn 1961)."""
    mean, se, df = (np.asarray(v, dtype=float) for v in (mean, se, df))
    m = int(np.count_nonzero(np.isfinite(mean) & np.isfinite(se)))
    alpha = 1.0 - confidence_level
    with np.errstate(invalid="ignore"):
        half = stats.t.ppf(1.0 - alpha / (2 * max(m, 1)), np.where(df > 0, df, np.nan)) * se
    return mean - half, mean + half


def holm_compatible_intervals(
    mean: np.ndarray, se: np.ndarray, df: np.ndarray, confidence_level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Holm-compatible simultaneous t intervals (Strassburger & Bretz 2008, Stat. Med. 27, eq. for Holm).

    The two-sided interval of each comparison is the pair of one-sided bounds of the 2m
    one-sided hypotheses theta_i <= 0 and theta_i >= 0, tested by Holm's procedure at
    alpha = 1 - confidence_level. With R the rejected set (never all 2m, as the two
    directions of one comparison cannot both be rejected), a rejected direction gets the
    bound 0 and every other bound is theta_i -/+ t(1 - alpha / (2m - |R|), df_i) se_i.
    Joint coverage is at least 1 - alpha, and an interval excludes 0 exactly where Holm
    on the one-sided paired t tests rejects.
    """
    mean, se, df = (np.asarray(v, dtype=float) for v in (mean, se, df))
    low = np.full(mean.shape, np.nan)
    high = np.full(mean.shape, np.nan)
    valid = np.isfinite(mean) & np.isfinite(se) & (se > 0) & (df > 0)
    if not valid.any():
        return low, high
    alpha = 1.0 - confidence_level
    t = mean[valid] / se[valid]
    upper_p = stats.t.sf(t, df[valid])  # H: theta <= 0
    lower_p = stats.t.cdf(t, df[valid])  # H: theta >= 0
    rejected = holm(np.concatenate([upper_p, lower_p])) <= alpha
    k = int(valid.sum())
    critical = stats.t.ppf(1.0 - alpha / (2 * k - int(rejected.sum())), df[valid])
    low[valid] = np.where(rejected[:k], 0.0, mean[valid] - critical * se[valid])
    high[valid] = np.where(rejected[k:], 0.0, mean[valid] + critical * se[valid])
    return low, high


def noncentral_t_interval(
    t: np.ndarray, df: np.ndarray, confidence_level: float = 0.95, tolerance: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:
    """Noncentrality parameters whose t distributions put t at the upper and lower tail quantiles.

    Steiger & Fouladi (1997), "Noncentrality interval estimation": the interval of delta
    solves P(T <= t | delta) = 1 - (1 - level)/2 and = (1 - level)/2; solved for many t
    at once by the Illinois variant of regula falsi inside a bracket (the cdf falls as
    delta rises), which needs a handful of cdf calls where bisection needs dozens.
    """
    t, df = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (t, df))
    valid = np.isfinite(t) & (df > 0)
    t_ok, df_ok = t[valid], df[valid]
    # Normal approximation of the spread of delta (Hedges & Olkin 1985) sizes the bracket.
    spread = np.sqrt(1.0 + t_ok**2 / (2.0 * df_ok))
    out = []
    for target in (0.5 + confidence_level / 2, 0.5 - confidence_level / 2):
        root = np.full(t.shape, np.nan)
        if t_ok.size:
            root[valid] = _falling_root(_cdf_gap(df_ok, t_ok, target), t_ok, 4.0 * spread, tolerance)
        out.append(root)
    return out[0], out[1]


def _cdf_gap(df: np.ndarray, t: np.ndarray, target: float) -> Callable[[np.ndarray], np.ndarray]:
    # P(T <= t | delta) - target, falling in delta.
    def gap(delta: np.ndarray) -> np.ndarray:
        return np.asarray(nctdtr(df, delta, t) - target, dtype=float)

    return gap


def _falling_root(
    function: Callable[[np.ndarray], np.ndarray], centre: np.ndarray, width: np.ndarray, tolerance: float
) -> np.ndarray:
    # Bracket the root of a decreasing function around centre, then Illinois steps.
    lo, hi = centre - width, centre + width
    f_lo, f_hi = function(lo), function(hi)
    for _ in range(60):
        grow_lo, grow_hi = f_lo < 0, f_hi > 0
        if not (grow_lo.any() or grow_hi.any()):
            break
        lo = np.where(grow_lo, lo - 2 * width, lo)
        hi = np.where(grow_hi, hi + 2 * width, hi)
        width = 2 * width
        f_lo, f_hi = function(lo), function(hi)
    side = np.zeros(lo.shape)
    for _ in range(200):
        x = np.clip(hi - f_hi * (hi - lo) / (f_hi - f_lo), lo, hi)
        x = np.where(np.isfinite(x), x, (lo + hi) / 2)
        fx = function(x)
        right = fx > 0  # root lies above x
        f_hi = np.where(right & (side > 0), f_hi / 2, f_hi)
        f_lo = np.where(~right & (side < 0), f_lo / 2, f_lo)
        lo, f_lo = np.where(right, x, lo), np.where(right, fx, f_lo)
        hi, f_hi = np.where(right, hi, x), np.where(right, f_hi, fx)
        side = np.where(right, 1.0, -1.0)
        if np.all((hi - lo <= tolerance * (1 + np.abs(x))) | (np.abs(fx) <= tolerance * 1e-2)):
            return np.asarray(x, dtype=float)
    return np.asarray((lo + hi) / 2, dtype=float)


def cohen_dz_interval(
    t: np.ndarray, n: np.ndarray, confidence_level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cohen's d_z = mean(d) / sd(d) = t / sqrt(n) with its exact noncentral-t interval (Cumming & Finch 2001)."""
    t, n = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (t, n))
    root = np.sqrt(n)
    low, high = noncentral_t_interval(t, n - 1, confidence_level)
    return t / root, low / root, high / root


def rank_biserial_interval(
    r: np.ndarray, n_nonzero: np.ndarray, confidence_level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Fisher-z interval of the matched-pairs rank-biserial r, SE from the signed-rank variance (effectsize, R).

    SE(atanh r) = sqrt(n(n+1)(2n+1)/6) / (n(n+1)/2) with n non-zero differences, the null
    standard deviation of r (Kerby 2014; Ben-Shachar, Lüdecke & Makowski 2020).
    """
    r, n = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (r, n_nonzero))
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(n * (n + 1) * (2 * n + 1) / 6) / (n * (n + 1) / 2)
        z = np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12))
        half = -ndtri((1 - confidence_level) / 2) * se
        low, high = np.tanh(z - half), np.tanh(z + half)
    bad = n < 2
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


def interval_table(differences: Sequence[np.ndarray], confidence_level: float = 0.95) -> pd.DataFrame:
    """One row per difference vector: tests, marginal and simultaneous intervals, effect sizes with intervals.

    The family for Holm and the simultaneous intervals is the rows of this table.
    """
    vectors = [np.asarray(d, dtype=float)[~np.isnan(np.asarray(d, dtype=float))] for d in differences]
    n = np.array([v.size for v in vectors], dtype=float)
    mean = np.array([v.mean() if v.size else np.nan for v in vectors])
    sd = np.array([v.std(ddof=1) if v.size > 1 else np.nan for v in vectors])
    # Differences equal up to rounding have no spread: t, its intervals and d_z are undefined there.
    spread = np.where(sd <= 1e-12 * np.maximum(1.0, np.abs(mean)), np.nan, sd)
    df = n - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        se = spread / np.sqrt(n)
        t = np.where(se > 0, mean / se, np.nan)
        pvalue = 2 * stats.t.sf(np.abs(t), np.where(df > 0, df, np.nan))
        half = stats.t.ppf(0.5 + confidence_level / 2, np.where(df > 0, df, np.nan)) * se
    table = pd.DataFrame({"n": n.astype(int), "mean_difference": mean, "sd": sd, "t": t, "df": df})
    table["pvalue_t"] = pvalue
    table["pvalue_t_holm"] = holm(np.asarray(pvalue, dtype=float))
    table["ci_low"], table["ci_high"] = mean - half, mean + half
    sim = bonferroni_intervals(mean, se, df, confidence_level)
    table["ci_sim_low"], table["ci_sim_high"] = sim
    table["ci_holm_low"], table["ci_holm_high"] = holm_compatible_intervals(mean, se, df, confidence_level)
    dz, dz_low, dz_high = cohen_dz_interval(t, n, confidence_level)
    table["cohen_dz"], table["cohen_dz_low"], table["cohen_dz_high"] = dz, dz_low, dz_high
    r = np.array([rank_biserial(v) if v.size else np.nan for v in vectors])
    nonzero = np.array([np.count_nonzero(v) for v in vectors], dtype=float)
    table["rank_biserial"] = r
    table["rank_biserial_low"], table["rank_biserial_high"] = rank_biserial_interval(r, nonzero, confidence_level)
    return table[INTERVAL_COLUMNS]


def pairwise_intervals(
    wide: pd.DataFrame, pairs: list[tuple[str, str]], confidence_level: float = 0.95
) -> pd.DataFrame:
    """``interval_table`` for each pair (a, b) of columns of ``wide`` (units x conditions), a - b, pairwise complete."""
    differences = [(wide[a] - wide[b]).dropna().to_numpy(dtype=float) for a, b in pairs]
    table = interval_table(differences, confidence_level)
    table.insert(0, "b", [b for _, b in pairs])
    table.insert(0, "a", [a for a, _ in pairs])
    return table


#: Column pairs of an interval table and the key of each ``[low, high]`` pair in stats.json.
INTERVAL_KEYS = {
    ("ci_low", "ci_high"): "ci",
    ("ci_sim_low", "ci_sim_high"): "ci_simultaneous",
    ("ci_holm_low", "ci_holm_high"): "ci_holm",
    ("cohen_dz_low", "cohen_dz_high"): "cohen_dz_ci",
    ("rank_biserial_low", "rank_biserial_high"): "rank_biserial_ci",
}


def interval_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a table as dicts, each ``*_low`` / ``*_high`` column pair folded into one ``[low, high]`` entry."""
    if frame is None or frame.empty:
        return []
    records = []
    for row in frame.to_dict(orient="records"):
        entry = {str(k): v for k, v in row.items()}
        for (low, high), key in INTERVAL_KEYS.items():
            if low in entry and high in entry:
                entry[key] = [entry.pop(low), entry.pop(high)]
        records.append(entry)
    return records


def method_words(confidence_level: float, family: str) -> dict[str, str]:
    """The interval methods in words, for stats.json (``intervals_method``)."""
    level = f"{100 * confidence_level:g} %"
    return {
        "level": level,
        "family": family,
        "ci": f"Student t interval of the mean difference, {level}, per comparison (not adjusted)",
        "ci_simultaneous": f"Bonferroni-simultaneous t intervals, each at 1 - (1 - {confidence_level:g}) / m, "
        f"jointly at least {level} over the m comparisons (Dunn 1961)",
        "ci_holm": "Holm-compatible simultaneous intervals (Strassburger & Bretz 2008) from Holm's procedure on "
        "the 2m one-sided paired t tests; the bound on a rejected side is 0",
        "pvalue_t_holm": "paired t test, two-sided, Holm (1979) over the m comparisons",
        "cohen_dz": f"Cohen's d_z = mean / SD of the differences, exact noncentral-t {level} interval "
        "(Steiger & Fouladi 1997), not adjusted",
        "rank_biserial": f"matched-pairs rank-biserial r (Kerby 2014), Fisher-z normal-approximation {level} "
        "interval, not adjusted",
    }

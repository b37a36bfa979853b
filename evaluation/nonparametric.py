"""Rank and permutation tests on per-participant means (participants x conditions).

Every listener rates every condition, so the data are repeated measures: the tests here
are all within-participant (Friedman, Wilcoxon signed-rank, paired permutation), never
the between-groups one-way ANOVA that treats the ratings as independent samples
(Mendonça & Delikaris-Manias 2018, "Statistical tests with MUSHRA data", AES 144).
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats


def friedman(wide: pd.DataFrame) -> dict[str, float | int]:
    """Friedman test over the columns of ``wide`` with Kendall's W = chi2 / (n (k - 1)).

    Friedman (1937); Kendall & Babington Smith (1939). Participants missing any column
    are left out (complete cases), as the test needs a full block per participant.
    """
    complete = wide.dropna()
    n, k = complete.shape
    result = {
        "statistic": np.nan,
        "pvalue": np.nan,
        "kendall_w": np.nan,
        "df": k - 1,
        "n": n,
        "k": k,
        "n_incomplete": int(len(wide) - n),
    }
    if k < 3 or n < 2:
        return result
    statistic, pvalue = stats.friedmanchisquare(*[complete[c].to_numpy() for c in complete.columns])
    result.update(statistic=float(statistic), pvalue=float(pvalue), kendall_w=float(statistic / (n * (k - 1))))
    return result


def holm(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, NaN entries ignored."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="mergesort")]
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def rank_biserial(differences: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (Kerby 2014): (R+ - R-) / (R+ + R-), zero differences dropped."""
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def hodges_lehmann(differences: np.ndarray) -> float:
    """Hodges-Lehmann (1963) one-sample shift: median of the Walsh averages (d_i + d_j) / 2, i <= j."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        return np.nan
    i, j = np.triu_indices(d.size)
    return float(np.median((d[i] + d[j]) / 2))


@lru_cache(maxsize=8)
def _sign_matrix(n: int, n_resamples: int, seed: int) -> tuple[np.ndarray, bool]:
    # All 2^n sign patterns when that is no more than the resamples asked for (an exact
    # test), otherwise random ones; the same matrix serves every pair.
    if 2**n <= n_resamples:
        patterns = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        return patterns, True
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([1.0, -1.0]), size=(n_resamples, n)), False


def permutation_test_paired(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 10_000, seed: int = 0
) -> dict[str, float | bool]:
    """Paired sign-flip permutation test of the mean difference a - b (after ITU-R BS.1534-3 Attachment 3).

    Under the null hypothesis the two labels are exchangeable within each participant,
    so each participant's difference keeps its size and gets a random sign. The p-value
    is two-sided, (1 + #{|mean*| >= |mean|}) / (1 + R) for R random resamples
    (Phipson & Smyth 2010), or exact when 2^n <= R.
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[~np.isnan(d)]
    n = d.size
    if n == 0:
        return {"mean_difference": np.nan, "pvalue": np.nan, "exact": False, "resamples": 0}
    observed = d.mean()
    signs, exact = _sign_matrix(n, n_resamples, seed)
    null = signs @ d / n
    # A relative tolerance keeps ties (e.g. the identity permutation) counted as ties.
    hits = np.count_nonzero(np.abs(null) >= abs(observed) * (1 - 1e-12) - 1e-12)
    pvalue = hits / len(signs) if exact else (hits + 1) / (len(signs) + 1)
    return {
        "mean_difference": float(observed),
        "pvalue": float(min(pvalue, 1.0)),
        "exact": exact,
        "resamples": int(len(signs)),
    }


def smallest_exact_wilcoxon_p(n: int) -> float:
    """Smallest two-sided p-value an exact Wilcoxon signed-rank (or sign-flip) test can give with n pairs: 2 / 2^n."""
    return min(1.0, 2.0 / 2.0**n) if n > 0 else 1.0


def pairwise_wilcoxon(
    wide: pd.DataFrame, pairs: list[tuple[str, str]], n_resamples: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """Wilcoxon signed-rank tests (zero_method='pratt') for each pair, Holm-corrected, with effect sizes.

    Wilcoxon (1945) with Pratt's (1959) treatment of zero differences; p-values are
    adjusted by Holm (1979) over all pairs. Effect sizes: matched-pairs rank-biserial r
    (Kerby 2014) and the Hodges-Lehmann (1963) shift of a over b. Each pair also gets the
    paired permutation test (a paired variant of BS.1534-3 Attachment 3), Holm-adjusted in the same way.
    Pairs use every participant who has both conditions (pairwise complete cases).
    """
    rows = []
    for a, b in pairs:
        both = wide[[a, b]].dropna()
        x, y = both[a].to_numpy(dtype=float), both[b].to_numpy(dtype=float)
        d = x - y
        row = {
            "a": a,
            "b": b,
            "n": int(d.size),
            "mean_a": float(x.mean()) if d.size else np.nan,
            "mean_b": float(y.mean()) if d.size else np.nan,
            "mean_difference": float(d.mean()) if d.size else np.nan,
            "statistic": np.nan,
            "pvalue": np.nan,
        }
        if d.size and np.any(d != 0):
            result = stats.wilcoxon(x, y, zero_method="pratt", alternative="two-sided")
            row.update(statistic=float(result.statistic), pvalue=float(result.pvalue))
        elif d.size:
            row.update(statistic=0.0, pvalue=1.0)
        row["effect_size"] = rank_biserial(d) if d.size else np.nan
        row["hodges_lehmann"] = hodges_lehmann(d)
        perm = permutation_test_paired(x, y, n_resamples=n_resamples, seed=seed)
        row["perm_pvalue"] = perm["pvalue"]
        row["perm_exact"] = perm["exact"]
        rows.append(row)
    columns = [
        "a",
        "b",
        "n",
        "mean_a",
        "mean_b",
        "mean_difference",
        "statistic",
        "pvalue",
        "pvalue_holm",
        "effect_size",
        "hodges_lehmann",
        "perm_pvalue",
        "perm_pvalue_holm",
        "perm_exact",
    ]
    table = pd.DataFrame(rows, columns=[c for c in columns if c not in ("pvalue_holm", "perm_pvalue_holm")])
    table["pvalue_holm"] = holm(table["pvalue"].to_numpy()) if len(table) else []
    table["perm_pvalue_holm"] = holm(table["perm_pvalue"].to_numpy()) if len(table) else []
    return table[columns]


def all_pairs(conditions: list[str]) -> list[tuple[str, str]]:
    """Every unordered pair of conditions, in the given order."""
    return list(itertools.combinations(conditions, 2))


def n_pairs(k: int) -> int:
    """Number of unordered pairs among k conditions."""
    return math.comb(k, 2) if k >= 2 else 0

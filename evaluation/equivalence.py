"""Equivalence test (TOST) of two conditions rated by the same participants.

Two one-sided paired t-tests against the margins -delta and +delta (Schuirmann 1987;
Lakens 2017, "Equivalence tests", Soc. Psychol. Personal. Sci. 8(4)). Equivalence is
claimed when both reject at ``alpha``, i.e. when the (1 - 2 alpha) confidence interval
of the mean difference lies inside (-delta, +delta). This is the test behind a claim
such as "pruning does not degrade quality by more than delta MUSHRA points"; a
non-significant difference test is no such evidence.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def tost_paired(a: np.ndarray, b: np.ndarray, margin: float, alpha: float = 0.05) -> dict[str, float | bool | int]:
    """Paired TOST of mean(a - b) within (-margin, +margin) (Schuirmann 1987)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[~np.isnan(d)]
    n = d.size
    out: dict[str, float | bool | int] = {"n": n, "margin": float(margin), "alpha": float(alpha)}
    if n < 2:
        out.update(
            mean_difference=np.nan,
            ci_low=np.nan,
            ci_high=np.nan,
            t_lower=np.nan,
            t_upper=np.nan,
            pvalue_lower=np.nan,
            pvalue_upper=np.nan,
            pvalue=np.nan,
            equivalent=False,
        )
        return out
    mean = d.mean()
    se = d.std(ddof=1) / np.sqrt(n)
    df = n - 1
    if se == 0:
        inside = abs(mean) < margin
        out.update(
            mean_difference=float(mean),
            ci_low=float(mean),
            ci_high=float(mean),
            t_lower=np.inf,
            t_upper=-np.inf,
            pvalue_lower=0.0 if inside else 1.0,
            pvalue_upper=0.0 if inside else 1.0,
            pvalue=0.0 if inside else 1.0,
            equivalent=bool(inside),
        )
        return out
    t_lower = (mean + margin) / se
    t_upper = (mean - margin) / se
    p_lower = stats.t.sf(t_lower, df)
    p_upper = stats.t.cdf(t_upper, df)
    half = stats.t.ppf(1 - alpha, df) * se
    pvalue = max(p_lower, p_upper)
    out.update(
        mean_difference=float(mean),
        ci_low=float(mean - half),
        ci_high=float(mean + half),
        t_lower=float(t_lower),
        t_upper=float(t_upper),
        pvalue_lower=float(p_lower),
        pvalue_upper=float(p_upper),
        pvalue=float(pvalue),
        equivalent=bool(pvalue < alpha),
    )
    return out

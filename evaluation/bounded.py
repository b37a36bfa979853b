"""Ratings on a bounded scale: intervals that stay inside 0..100, a beta model, the ceiling.

MUSHRA ratings live on 0..100 and pile up near the top for good conditions, where a
Student-t interval of the mean can reach past 100 and differences are compressed.

- ``logit_interval``: the mean of per-listener means with a t interval built on the logit
  scale and mapped back (delta method: SE(logit m) = SE(m) / (m (1 - m)) with m on 0..1),
  so both ends lie strictly inside 0..100 and the interval is asymmetric near an end of
  the scale, as the sampling distribution of the mean is there.
- ``beta_by_condition``: beta regression (Ferrari & Cribari-Neto 2004) of the per-listener
  means with a mean and a precision of its own for each condition (logit and log links),
  the saturated model of ``statsmodels.othermod.betareg.BetaModel`` with
  ``exog_precision`` equal to the condition dummies. The model separates into one beta
  maximum-likelihood fit per condition, solved here by Newton's method on the two digamma
  equations (Johnson, Kotz & Balakrishnan 1995, ch. 25), with Wald intervals on the logit
  scale from the Fisher information. When some per-listener mean is exactly 0 or 100 (a
  listener who gave the reference 100 on every item), all values are moved inside the
  interval by the Smithson & Verkuilen (2006) transform y' = (y (N - 1) + 1/2) / N, N the
  number of values fitted; the estimate and its interval are mapped back by the inverse of
  that affine map (and clipped to 0..100), so they estimate the mean rating itself.
- ``ceiling_equivalence``: a TOST pair whose higher mean lies within the margin of 100
  cannot show a difference as large as the margin upwards; the report says so.

The BCa bootstrap interval of ``evaluation.bootstrap`` is bounded by construction: its ends
are quantiles of resampled means, each a mean of ratings inside 0..100.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

BETA_COLUMNS = ["condition", "n", "mean", "ci_low", "ci_high", "precision", "at_bounds", "squeezed", "converged"]


def logit_interval(values: np.ndarray, confidence_level: float = 0.95) -> tuple[float, float]:
    """Interval of the mean of ``values`` (0..100) built on the logit scale, t quantile on n - 1 df.

    Undefined (NaN) with fewer than two values or a mean at 0 or 100; no spread gives [mean, mean].
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = values.size
    if n < 2:
        return (np.nan, np.nan)
    m = values.mean() / 100.0
    if not 0.0 < m < 1.0:
        return (np.nan, np.nan)
    se = values.std(ddof=1) / np.sqrt(n) / 100.0
    half = stats.t.ppf(0.5 + confidence_level / 2, n - 1) * se / (m * (1.0 - m))
    centre = special.logit(m)
    return (float(100.0 * special.expit(centre - half)), float(100.0 * special.expit(centre + half)))


def logit_intervals(wide: pd.DataFrame, conditions: list[str], confidence_level: float = 0.95) -> pd.DataFrame:
    """``logit_interval`` of every condition's per-listener means (columns of ``wide``)."""
    rows = []
    for c in conditions:
        low, high = logit_interval(wide[c].dropna().to_numpy(), confidence_level)
        rows.append({"condition": c, "logit_low": low, "logit_high": high})
    return pd.DataFrame(rows, columns=["condition", "logit_low", "logit_high"])


def squeeze(values: np.ndarray, n: int) -> np.ndarray:
    """Shares 0..1 into the open interval (0, 1): (y (n - 1) + 1/2) / n (Smithson & Verkuilen 2006)."""
    return (np.asarray(values, dtype=float) * (n - 1) + 0.5) / n


def _beta_mle(samples: list[np.ndarray], iterations: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Newton's method on (log a, log b) for every sample at once; start at the method of moments.
    k = len(samples)
    a = np.full(k, np.nan)
    b = np.full(k, np.nan)
    converged = np.zeros(k, dtype=bool)
    ok = np.array([s.size >= 2 and s.std() > 0 for s in samples])
    if not ok.any():
        return a, b, converged
    index = np.flatnonzero(ok)
    mean = np.array([samples[i].mean() for i in index])
    var = np.array([samples[i].var() for i in index])
    s1 = np.array([np.log(samples[i]).mean() for i in index])
    s2 = np.array([np.log1p(-samples[i]).mean() for i in index])
    common = np.maximum(mean * (1 - mean) / var - 1.0, 1e-3)
    x = np.log(np.column_stack([mean * common, (1 - mean) * common]))
    done = np.zeros(len(index), dtype=bool)
    for _ in range(iterations):
        ea, eb = np.exp(x[:, 0]), np.exp(x[:, 1])
        # Gradient of the mean log-likelihood in (a, b), then in (log a, log b).
        ga = s1 - special.digamma(ea) + special.digamma(ea + eb)
        gb = s2 - special.digamma(eb) + special.digamma(ea + eb)
        t_ab = special.polygamma(1, ea + eb)
        haa = -special.polygamma(1, ea) + t_ab
        hbb = -special.polygamma(1, eb) + t_ab
        grad = np.column_stack([ga * ea, gb * eb])
        h11 = haa * ea * ea + ga * ea
        h22 = hbb * eb * eb + gb * eb
        h12 = t_ab * ea * eb
        det = h11 * h22 - h12 * h12
        step0 = (h22 * grad[:, 0] - h12 * grad[:, 1]) / det
        step1 = (h11 * grad[:, 1] - h12 * grad[:, 0]) / det
        step = np.clip(np.column_stack([step0, step1]), -1.0, 1.0)
        x = x - step
        done = np.max(np.abs(step), axis=1) < 1e-12
        if done.all():
            break
    a[index], b[index] = np.exp(x[:, 0]), np.exp(x[:, 1])
    converged[index] = done
    return a, b, converged


def beta_by_condition(wide: pd.DataFrame, conditions: list[str], confidence_level: float = 0.95) -> pd.DataFrame:
    """Beta regression of per-listener means with a mean and a precision per condition (Ferrari & Cribari-Neto 2004).

    ``mean`` is 100 mu, its interval the Wald interval of logit(mu) mapped back; ``precision``
    is phi = a + b (Var y = mu (1 - mu) / (1 + phi) on 0..1, on the squeezed scale when
    ``squeezed``); ``at_bounds`` counts values at 0 or 100. A condition without spread gets NaN.
    """
    shares = [wide[c].dropna().to_numpy(dtype=float) / 100.0 for c in conditions]
    total = int(sum(v.size for v in shares))
    at_bounds = [int(np.count_nonzero((v <= 0) | (v >= 1))) for v in shares]
    squeezed = sum(at_bounds) > 0
    samples = [squeeze(v, total) if squeezed else v for v in shares]
    a, b, converged = _beta_mle(samples)
    n = np.array([s.size for s in samples], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Inverse Fisher information of (a, b) per observation, then the delta method for log(a / b).
        t_ab = special.polygamma(1, a + b)
        i_aa = special.polygamma(1, a) - t_ab
        i_bb = special.polygamma(1, b) - t_ab
        det = i_aa * i_bb - t_ab * t_ab
        var_a, var_b, cov_ab = i_bb / det / n, i_aa / det / n, t_ab / det / n
        var_logit = var_a / a**2 + var_b / b**2 - 2 * cov_ab / (a * b)
        centre = np.log(a / b)
        half = stats.norm.ppf(0.5 + confidence_level / 2) * np.sqrt(var_logit)

    def back(logit: np.ndarray) -> np.ndarray:
        share = special.expit(logit)
        if squeezed:
            share = np.clip((share * total - 0.5) / (total - 1), 0.0, 1.0)
        return np.asarray(100.0 * share)

    return pd.DataFrame(
        {
            "condition": conditions,
            "n": n.astype(int),
            "mean": back(centre),
            "ci_low": back(centre - half),
            "ci_high": back(centre + half),
            "precision": a + b,
            "at_bounds": at_bounds,
            "squeezed": squeezed,
            "converged": converged,
        },
        columns=BETA_COLUMNS,
    )


def ceiling_equivalence(
    equivalence: pd.DataFrame, wide: pd.DataFrame, margin: float | None
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Add each TOST pair's means and ``near_ceiling`` (higher mean >= 100 - margin); a warning for flagged pairs."""
    if equivalence is None or equivalence.empty or margin is None:
        return equivalence, []
    table = equivalence.copy()
    table["mean_a"] = [float(wide[a].mean()) for a in table["a"]]
    table["mean_b"] = [float(wide[b].mean()) for b in table["b"]]
    table["near_ceiling"] = np.maximum(table["mean_a"], table["mean_b"]) >= 100.0 - margin
    flagged = table[table["near_ceiling"]]
    if flagged.empty:
        return table, []
    pairs = ", ".join(f"{r.a} ({r.mean_a:.1f}) and {r.b} ({r.mean_b:.1f})" for r in flagged.itertuples())
    return table, [
        {
            "code": "equivalence_near_ceiling",
            "message": (
                f"Equivalence near the ceiling: {pairs} have a mean within the margin ({margin:g} points) of 100. "
                "The scale cannot show the better one ahead by the full margin, so the ceiling compresses the "
                "difference towards zero and makes equivalence easier to claim; read the equivalence with the "
                "box plots and the rank-based tests."
            ),
        }
    ]


def bounded_stats(beta: pd.DataFrame | None) -> dict[str, Any]:
    """The ``bounded`` block of stats.json: the logit interval's method and the beta model's estimates."""
    model = None
    if beta is not None:
        model = {
            "family": "beta",
            "links": {"mean": "logit", "precision": "log"},
            "unit": "per-listener means across items",
            "squeezed": bool(beta["squeezed"].any()),
            "estimates": [
                {
                    "condition": r["condition"],
                    "n": int(r["n"]),
                    "mean": r["mean"],
                    "ci95": [r["ci_low"], r["ci_high"]],
                    "precision": r["precision"],
                    "at_bounds": int(r["at_bounds"]),
                    "converged": bool(r["converged"]),
                }
                for r in beta.to_dict("records")
            ],
        }
    return {
        "logit_method": "t interval of the mean of per-listener means on the logit scale (delta method), mapped back",
        "beta_model": model,
    }

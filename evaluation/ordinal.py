"""Cumulative link (proportional-odds, logit) model of the ratings binned to the scale's five intervals.

A model for the ratings as ordered categories rather than numbers (McCullagh 1980; Agresti,
Categorical Data Analysis, 3rd ed. 2013, §8.2): every rating is binned into the five labelled
intervals of the BS.1534-3 continuous quality scale, Bad [0, 20), Poor [20, 40), Fair
[40, 60), Good [60, 80), Excellent [80, 100] (left-closed, 100 counts as Excellent). Those
are the bins listeners see labelled on the slider, so the model assumes nothing about the
spacing of the numbers inside or between them; deciles would double the thresholds and
leave most of them thin at the ends of the scale. Categories nobody used are left out
(a threshold next to an empty category is not estimable) and the thresholds are those
between the categories that occur. A condition whose ratings all lie in the top (or bottom)
category in use, as the hidden reference's often do, or more generally whose ratings no other
condition's ratings pass on one side (the low anchor alone in Bad, say), has no finite estimate
(quasi-complete separation, Agresti 2013 §6.5) and is left out of the fit and named, with the
reason, in ``left_out``; this is repeated until no condition is separated.

With ``theta_1 < ... < theta_{J-1}`` the thresholds and ``beta_c`` the effect of condition
``c`` (``beta_baseline = 0``), ``logit P(Y <= j | c) = theta_j - beta_c``: a positive
``beta_c`` is a log odds ratio of a higher category than the baseline's, the same at every
cut (proportional odds). Fitted by maximum likelihood with Newton's method on the analytic
score and Hessian (the log-likelihood is concave, Pratt 1981), the same parametrisation as
``statsmodels.miscmodels.ordinal_model.OrderedModel`` with ``distr='logit'``.

The repeated ratings of one listener are not independent. They are handled by a
cluster-robust (sandwich) covariance clustered by listener (Liang & Zeger 1986; Cameron &
Miller 2015), not by a random intercept: ``V = H^-1 (sum_g s_g s_g') H^-1 G / (G - 1)``
with ``H`` the observed information, ``s_g`` a listener's summed scores and ``G`` listeners,
and t quantiles on ``G - 1`` df for the intervals and tests. The estimates are therefore
population-averaged log odds ratios, which are smaller in size than the subject-specific
ones of a cumulative link mixed model. Excerpts enter neither as clusters nor as effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import special, stats

from .errors import EvaluationError

#: The five intervals of the BS.1534-3 continuous quality scale: (label, lower edge).
CATEGORIES = (("Bad", 0.0), ("Poor", 20.0), ("Fair", 40.0), ("Good", 60.0), ("Excellent", 80.0))
METHOD = (
    "cumulative logit (proportional odds) of the ratings binned to the five BS.1534-3 intervals; "
    "cluster-robust (sandwich) covariance clustered by listener, t on listeners - 1 df"
)


@dataclass
class OrdinalResult:
    """The fitted model: the plain ``ordinal`` block of stats.json and its three tables."""

    stats: dict[str, Any]
    thresholds: pd.DataFrame
    effects: pd.DataFrame
    pairwise: pd.DataFrame


def bin_ratings(ratings: npt.ArrayLike) -> np.ndarray:
    """Category 0..4 (Bad..Excellent) of each rating: [0, 20) -> 0, ..., [80, 100] -> 4."""
    values = np.asarray(ratings, dtype=float)
    return np.clip(np.floor(values / 20.0), 0, len(CATEGORIES) - 1).astype(np.int64)


def _holm(pvalues: np.ndarray) -> np.ndarray:
    order = np.argsort(pvalues)
    m = len(pvalues)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * pvalues[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _parts(params: np.ndarray, y: np.ndarray, X: np.ndarray, n_cuts: int) -> tuple[np.ndarray, ...]:
    # Rows A, B of d(upper)/d(params), d(lower)/d(params) and the two linear predictors.
    n = len(y)
    cuts = np.concatenate([[-np.inf], params[:n_cuts], [np.inf]])
    eta = X @ params[n_cuts:]
    upper, lower = cuts[y + 1] - eta, cuts[y] - eta
    A = np.zeros((n, len(params)))
    B = np.zeros((n, len(params)))
    top, bottom = y < n_cuts, y > 0
    A[np.flatnonzero(top), y[top]] = 1.0
    B[np.flatnonzero(bottom), y[bottom] - 1] = 1.0
    A[:, n_cuts:] = -X
    B[:, n_cuts:] = -X
    return upper, lower, A, B


def _loglik(params: np.ndarray, y: np.ndarray, X: np.ndarray, n_cuts: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Log-likelihood, per-rating scores (n x m) and the Hessian (m x m)."""
    upper, lower, A, B = _parts(params, y, X, n_cuts)
    fu, fl = special.expit(upper), special.expit(lower)
    # P(y) as a difference of upper tails where that keeps digits (both cuts above eta).
    prob = np.where(lower > 0, special.expit(-lower) - special.expit(-upper), fu - fl)
    du, dl = fu * (1 - fu), fl * (1 - fl)
    d2u, d2l = du * (1 - 2 * fu), dl * (1 - 2 * fl)
    scores = (du[:, None] * A - dl[:, None] * B) / prob[:, None]
    hess = (A.T @ ((d2u / prob)[:, None] * A)) - (B.T @ ((d2l / prob)[:, None] * B)) - scores.T @ scores
    return float(np.sum(np.log(prob))), scores, hess


def fit_cumulative_logit(
    y: np.ndarray, X: np.ndarray, n_cuts: int, iterations: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, bool]:
    """ML fit of ``logit P(y <= j) = theta_j - X beta``: params (thresholds, beta), scores, Hessian, loglik, converged.

    ``y`` holds categories 0..n_cuts, each present; ``X`` has no intercept (Agresti 2013 §8.2).
    """
    counts = np.bincount(y, minlength=n_cuts + 1)
    params = np.concatenate([special.logit(np.cumsum(counts)[:-1] / len(y)), np.zeros(X.shape[1])])
    value, scores, hess = _loglik(params, y, X, n_cuts)
    converged = False
    for _ in range(iterations):
        gradient = scores.sum(axis=0)
        try:
            step = np.linalg.solve(-hess, gradient)
        except np.linalg.LinAlgError:
            break
        size = 1.0
        while size > 1e-8:
            trial = params + size * step
            if np.all(np.diff(trial[:n_cuts]) > 0):
                t_value, t_scores, t_hess = _loglik(trial, y, X, n_cuts)
                if np.isfinite(t_value) and t_value >= value - 1e-12 * abs(value):
                    break
            size /= 2
        else:
            break
        params, value, scores, hess = trial, t_value, t_scores, t_hess
        if np.max(np.abs(size * step)) < 1e-10:
            converged = True
            break
    converged = converged or bool(np.max(np.abs(scores.sum(axis=0))) < 1e-6)
    return params, scores, hess, value, converged


def cluster_robust_cov(scores: np.ndarray, hess: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Sandwich ``H^-1 M H^-1 G / (G - 1)``, ``M`` the outer products of per-cluster score sums (Liang & Zeger 1986)."""
    codes, groups = pd.factorize(pd.Series(clusters), sort=True)
    n_groups = len(groups)
    summed = np.zeros((n_groups, scores.shape[1]))
    np.add.at(summed, codes, scores)
    bread = np.linalg.inv(-hess)
    return np.asarray(bread @ (summed.T @ summed) @ bread * n_groups / (n_groups - 1))


def ordinal_by_condition(
    ratings: pd.DataFrame, conditions: list[str], baseline: str | None = None, confidence_level: float = 0.95
) -> OrdinalResult:
    """Proportional-odds model of binned ratings with listener-clustered SEs (McCullagh 1980; Agresti 2013 §8.2).

    ``ratings`` is the long table (participant, item, condition, rating); ``effects`` are
    log odds ratios against ``baseline`` (the first condition when None, or when the baseline
    is left out for separation), ``pairwise`` every pair with Holm-adjusted p-values.
    """
    baseline = conditions[0] if baseline is None else baseline
    if baseline not in conditions:
        raise EvaluationError(f"the ordinal model's baseline {baseline!r} is not among the conditions")
    data = ratings[ratings["condition"].isin(conditions)]
    data = data[np.isfinite(data["rating"].astype(float))]
    # A condition whose ratings all lie in the highest (or lowest) category in use has an
    # infinite ML log odds ratio (separation; Agresti 2013 §6.5): typically the hidden
    # reference, all Excellent. It is left out and named, and the rest is fitted.
    left_out: dict[str, str] = {}
    while True:
        raw = bin_ratings(data["rating"].to_numpy(dtype=float))
        used = np.flatnonzero(np.bincount(raw, minlength=len(CATEGORIES)))
        if len(used) < 2:
            raise EvaluationError("the ordinal model needs ratings in at least two of the five scale intervals")
        names = list(pd.unique(data["condition"]))
        if len(names) < 2:
            break
        codes = pd.Categorical(data["condition"], categories=names).codes
        low = np.array([raw[codes == k].min() for k in range(len(names))])
        high = np.array([raw[codes == k].max() for k in range(len(names))])
        separated = []
        for k, c in enumerate(names):
            rest = np.arange(len(names)) != k
            if high[k] <= low[rest].min():
                separated.append((c, f"no other condition has a rating below its highest, {CATEGORIES[high[k]][0]}"))
            elif low[k] >= high[rest].max():
                separated.append((c, f"no other condition has a rating above its lowest, {CATEGORIES[low[k]][0]}"))
        if not separated:
            break
        for c, why in separated:
            left_out[str(c)] = f"{why}: the log odds ratio is infinite (separation)"
        data = data[~data["condition"].isin([c for c, _ in separated])]
    fitted = [c for c in conditions if c not in left_out]
    if len(fitted) < 2:
        raise EvaluationError(
            "the ordinal model needs two conditions whose ratings are not all in the top or bottom interval"
        )
    if baseline in left_out:
        baseline = fitted[0]
    y = np.searchsorted(used, raw)
    n_cuts = len(used) - 1
    others = [c for c in fitted if c != baseline]
    X = np.column_stack([(data["condition"] == c).to_numpy(dtype=float) for c in others])
    n_listeners = int(data["participant"].nunique())
    if n_listeners < 2:
        raise EvaluationError("the ordinal model's listener-clustered covariance needs at least two listeners")
    params, scores, hess, loglik, converged = fit_cumulative_logit(y, X, n_cuts)
    try:
        model_cov = np.linalg.inv(-hess)
        cov = cluster_robust_cov(scores, hess, data["participant"].to_numpy())
    except np.linalg.LinAlgError:
        converged = False
    if not converged or not np.all(np.diag(cov) > 0) or np.max(np.abs(params)) > 30:
        # Separation of groups of conditions (several together below or above the rest).
        raise EvaluationError("the ordinal model's estimates do not converge (the conditions' ratings separate)")
    df = n_listeners - 1
    q = float(stats.t.ppf(0.5 + confidence_level / 2, df))
    se = np.sqrt(np.diag(cov))
    labels = [CATEGORIES[k][0] for k in used]
    thresholds = pd.DataFrame(
        {
            "between": [f"{labels[j]}|{labels[j + 1]}" for j in range(n_cuts)],
            "estimate": params[:n_cuts],
            "se": se[:n_cuts],
            "ci_low": params[:n_cuts] - q * se[:n_cuts],
            "ci_high": params[:n_cuts] + q * se[:n_cuts],
        }
    )
    beta = np.concatenate([[0.0], params[n_cuts:]])
    beta_cov = np.zeros((len(fitted), len(fitted)))
    beta_cov[1:, 1:] = cov[n_cuts:, n_cuts:]
    beta_se = np.sqrt(np.diag(beta_cov))
    model_se = np.concatenate([[0.0], np.sqrt(np.diag(model_cov))[n_cuts:]])
    order = [baseline] + others
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(beta_se > 0, beta / beta_se, np.nan)
    effects = pd.DataFrame(
        {
            "condition": order,
            "baseline": baseline,
            "log_odds_ratio": beta,
            "se": beta_se,
            "model_se": model_se,
            "ci_low": beta - q * beta_se,
            "ci_high": beta + q * beta_se,
            "odds_ratio": np.exp(beta),
            "t": t,
            "pvalue": 2 * stats.t.sf(np.abs(t), df),
        }
    )
    effects = effects.set_index("condition").loc[fitted].reset_index()
    position = {c: k for k, c in enumerate(order)}
    rows = []
    for a, b in combinations(fitted, 2):
        i, j = position[a], position[b]
        estimate = beta[i] - beta[j]
        pair_se = float(np.sqrt(beta_cov[i, i] + beta_cov[j, j] - 2 * beta_cov[i, j]))
        t_ab = estimate / pair_se if pair_se > 0 else np.nan
        rows.append(
            {
                "a": a,
                "b": b,
                "log_odds_ratio": estimate,
                "se": pair_se,
                "ci_low": estimate - q * pair_se,
                "ci_high": estimate + q * pair_se,
                "t": t_ab,
                "pvalue": float(2 * stats.t.sf(abs(t_ab), df)),
            }
        )
    pairwise = pd.DataFrame(rows, columns=["a", "b", "log_odds_ratio", "se", "ci_low", "ci_high", "t", "pvalue"])
    pairwise["pvalue_holm"] = _holm(pairwise["pvalue"].to_numpy(dtype=float)) if len(pairwise) else []
    counts = np.bincount(raw, minlength=len(CATEGORIES))
    ci = "ci95"  # the key stats.json uses at every level, as elsewhere
    block = {
        "family": "cumulative logit (proportional odds)",
        "method": METHOD,
        "unit": "individual ratings",
        "categories": [
            {"label": label, "from": low, "to": CATEGORIES[k + 1][1] if k + 1 < len(CATEGORIES) else 100.0, "n": int(n)}
            for k, ((label, low), n) in enumerate(zip(CATEGORIES, counts))
        ],
        "baseline": baseline,
        "left_out": [{"condition": c, "reason": why} for c, why in left_out.items()],
        "n_obs": int(len(y)),
        "n_listeners": n_listeners,
        "df": df,
        "loglik": loglik,
        "converged": converged,
        "thresholds": [
            {"between": r["between"], "estimate": r["estimate"], "se": r["se"], ci: [r["ci_low"], r["ci_high"]]}
            for r in thresholds.to_dict("records")
        ],
        "effects": [
            {
                "condition": r["condition"],
                "log_odds_ratio": r["log_odds_ratio"],
                "se": r["se"],
                ci: [r["ci_low"], r["ci_high"]],
                "odds_ratio": r["odds_ratio"],
                "pvalue": r["pvalue"],
            }
            for r in effects.to_dict("records")
        ],
        "pairwise": [
            {
                "a": r["a"],
                "b": r["b"],
                "log_odds_ratio": r["log_odds_ratio"],
                "se": r["se"],
                ci: [r["ci_low"], r["ci_high"]],
                "pvalue": r["pvalue"],
                "pvalue_holm": r["pvalue_holm"],
            }
            for r in pairwise.to_dict("records")
        ],
    }
    return OrdinalResult(block, thresholds, effects, pairwise)

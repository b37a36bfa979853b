"""AB and ABN preference: which of two conditions is preferred, optionally "no preference".

Scores are Bradley-Terry (1952) log-worths fitted by maximum likelihood (Newton's method
with step halving); with "no preference" answers the ties follow Davidson's (1970) model,
P(i over j) = pi_i / (pi_i + pi_j + nu sqrt(pi_i pi_j)), P(tie) = nu sqrt(pi_i pi_j) / (same).
The scores are identified by a sum of zero (or by fixing one condition's score at 0), and
their intervals are Wald intervals from the observed information. The MLE exists only when
every condition both wins and loses within one strongly connected comparison graph (Ford
1957; Hunter 2004); when it does not, the scores are reported as null with the reason.
Each participant's consistency is the number of circular triads in their judgments
(Kendall & Babington Smith 1940) with its probability under random judgments.

Input columns: participant, item, condition_a, condition_b, choice (A, B or none).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from ..errors import EvaluationError
from ..io import _rows
from .common import ParadigmResult, check_levels, choice_column, read_table, start, text_columns

COLUMNS = ("participant", "item", "condition_a", "condition_b", "choice")
CHOICES = {
    "a": "a",
    "b": "b",
    "none": "none",
    "n": "none",
    "no preference": "none",
    "tie": "none",
    "equal": "none",
}
#: Complete judgment sets up to this many conditions get the exact null distribution of the
#: circular triads (2^(k(k-1)/2) tournaments); larger ones a seeded Monte Carlo one.
EXACT_TRIADS_MAX_K = 6
TRIADS_DRAWS = 200_000


def validate_preference(frame: pd.DataFrame, source: str = "(in memory)") -> pd.DataFrame:
    """Check an AB / ABN table; ``choice`` becomes a, b or none and ``winner`` names the preferred condition."""
    what = "preference"
    frame = start(frame, COLUMNS, what, source)
    text_columns(frame, ("participant", "item", "condition_a", "condition_b"), what, source)
    same = frame["condition_a"] == frame["condition_b"]
    if same.any():
        raise EvaluationError(f"{what} table {source}: condition_a equals condition_b at {_rows(frame.index[same])}")
    frame["choice"] = choice_column(frame, "choice", CHOICES, what, source)
    frame["winner"] = np.where(
        frame["choice"] == "a", frame["condition_a"], np.where(frame["choice"] == "b", frame["condition_b"], "")
    )
    return frame


def read_preference(path: str) -> pd.DataFrame:
    """Read and check an AB / ABN CSV table."""
    return validate_preference(read_table(path), source=str(path))


def count_matrices(frame: pd.DataFrame, conditions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``wins[i, j]``: times i was preferred over j; ``ties[i, j]`` (symmetric): "no preference" answers."""
    index = {c: k for k, c in enumerate(conditions)}
    k = len(conditions)
    wins = np.zeros((k, k))
    ties = np.zeros((k, k))
    a = frame["condition_a"].map(index).to_numpy()
    b = frame["condition_b"].map(index).to_numpy()
    choice = frame["choice"].to_numpy()
    np.add.at(wins, (a[choice == "a"], b[choice == "a"]), 1)
    np.add.at(wins, (b[choice == "b"], a[choice == "b"]), 1)
    np.add.at(ties, (a[choice == "none"], b[choice == "none"]), 1)
    return wins, ties + ties.T


def mle_exists(
    wins: np.ndarray, ties: np.ndarray | None = None, names: Sequence[str] | None = None
) -> tuple[bool, str]:
    """Whether the Bradley-Terry / Davidson MLE exists, with the reason when it does not.

    Bradley-Terry: the graph with an edge i -> j whenever i beat j must be strongly connected
    (Ford 1957; Hunter 2004, Assumption 1). A tie bounds both directions, so it adds both edges;
    Davidson's tie parameter also needs at least one tie and one preference.
    """
    k = wins.shape[0]
    names = list(names) if names is not None else [str(c) for c in range(k)]
    if k < 2:
        return False, "fewer than two conditions"
    if ties is not None and ties.sum() > 0 and wins.sum() == 0:
        return False, "every answer was 'no preference', so the tie parameter is infinite and the scores undefined"
    edges = (wins > 0) | ((ties > 0) if ties is not None else False)
    n, labels = connected_components(csr_matrix(edges.astype(float)), directed=True, connection="strong")
    if n > 1:
        groups = " | ".join(", ".join(names[c] for c in np.flatnonzero(labels == g)) for g in range(n))
        return False, (
            f"the conditions split into {n} groups ({groups}) and some group was never preferred over another "
            "(a perfect winner or loser), so its score runs off to infinity (Ford 1957)"
        )
    return True, ""


#: Log-worths beyond this mean the fit ran off to infinity (worth ratios above e^30).
_RUNAWAY = 30.0
_RUNS_OFF = (
    "the estimates run off to infinity: some condition never lost except by 'no preference' answers "
    "(Davidson's likelihood has no maximum)"
)


def _pairs(wins: np.ndarray, ties: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, j = np.triu_indices(wins.shape[0], 1)
    counts = np.stack([wins[i, j], wins[j, i], ties[i, j]], axis=1)
    keep = counts.sum(axis=1) > 0
    return i[keep], j[keep], counts[keep]


def _design(i: np.ndarray, j: np.ndarray, k: int, with_ties: bool) -> np.ndarray:
    """Design vectors of the three outcomes of each pair over (theta_1..theta_k[, log nu])."""
    width = k + int(with_ties)
    x = np.zeros((i.size, 3, width))
    rows = np.arange(i.size)
    x[rows, 0, i] = 1.0
    x[rows, 1, j] = 1.0
    if with_ties:
        x[rows, 2, i] = 0.5
        x[rows, 2, j] = 0.5
        x[rows, 2, k] = 1.0
    return x


def _loglik(beta: np.ndarray, x: np.ndarray, counts: np.ndarray, outcomes: int) -> float:
    eta = x[:, :outcomes] @ beta
    return float((counts[:, :outcomes] * eta).sum() - (counts[:, :outcomes].sum(1) * _logsumexp(eta)).sum())


def _logsumexp(eta: np.ndarray) -> np.ndarray:
    top = eta.max(axis=1)
    return np.asarray(top + np.log(np.exp(eta - top[:, None]).sum(axis=1)))


def _derivatives(beta: np.ndarray, x: np.ndarray, counts: np.ndarray, outcomes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and observed information of the multinomial-logit log-likelihood of the pairs."""
    x = x[:, :outcomes]
    eta = x @ beta
    p = np.exp(eta - _logsumexp(eta)[:, None])
    total = counts[:, :outcomes].sum(1)
    mean_x = np.einsum("po,pod->pd", p, x)
    gradient = np.einsum("po,pod->d", counts[:, :outcomes], x) - (total[:, None] * mean_x).sum(0)
    information = np.einsum("p,po,pod,poe->de", total, p, x, x) - np.einsum("p,pd,pe->de", total, mean_x, mean_x)
    return gradient, information


def fit_bradley_terry(
    wins: np.ndarray,
    ties: np.ndarray | None = None,
    reference: int | None = None,
    max_iter: int = 200,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Bradley-Terry (1952), or Davidson (1970) when ``ties`` has any, fitted by Newton's method.

    Returns log-worth ``scores`` (sum zero, or 0 at ``reference``), their covariance from the
    inverse observed information, the tie parameter ``nu`` and the log-likelihood; ``exists``
    False (with ``reason``) when the MLE does not exist, and then no estimates.
    """
    k = wins.shape[0]
    ties = np.zeros_like(wins) if ties is None else ties
    with_ties = bool(ties.sum() > 0)
    exists, reason = mle_exists(wins, ties if with_ties else None, names)
    out: dict[str, Any] = {"exists": exists, "reason": reason, "model": "davidson" if with_ties else "bradley-terry"}
    if not exists:
        return out
    i, j, counts = _pairs(wins, ties)
    outcomes = 3 if with_ties else 2
    free = [c for c in range(k) if c != (0 if reference is None else reference)] + ([k] if with_ties else [])
    x = _design(i, j, k, with_ties)[:, :, free]
    beta = np.zeros(len(free))
    current = _loglik(beta, x, counts, outcomes)
    converged = False
    iterations = 0
    while iterations < max_iter and not converged:
        iterations += 1
        gradient, information = _derivatives(beta, x, counts, outcomes)
        try:
            step = np.linalg.solve(information, gradient)
        except np.linalg.LinAlgError:
            return {**out, "exists": False, "reason": _RUNS_OFF}
        size = 1.0
        # Step halving keeps every iterate uphill (the log-likelihood is concave, so it converges).
        while True:
            candidate = beta + size * step
            value = _loglik(candidate, x, counts, outcomes)
            if value >= current - 1e-12 or size < 1e-8:
                break
            size /= 2
        beta, current = candidate, value
        converged = bool(np.max(np.abs(size * step)) < 1e-10)
    _, information = _derivatives(beta, x, counts, outcomes)
    # The graph test above is exact for Bradley-Terry; with ties a condition that never lost
    # except by ties still has no finite MLE (Davidson's likelihood keeps rising as its score and
    # the tie parameter grow together): Newton's steps then run off and the information turns
    # singular.
    if np.max(np.abs(beta)) > _RUNAWAY or np.linalg.cond(information) > 1e12:
        return {**out, "exists": False, "reason": _RUNS_OFF}
    covariance = np.linalg.inv(information)
    n_theta = k - 1
    # theta (k) = embed @ beta_theta, then centred when no reference is fixed.
    embed = np.zeros((k, n_theta))
    embed[[c for c in range(k) if c != (0 if reference is None else reference)], np.arange(n_theta)] = 1.0
    transform = embed if reference is not None else (np.eye(k) - 1.0 / k) @ embed
    scores = transform @ beta[:n_theta]
    score_cov = transform @ covariance[:n_theta, :n_theta] @ transform.T
    out.update(
        scores=scores,
        covariance=score_cov,
        loglik=current,
        iterations=iterations,
        converged=converged,
        log_nu=float(beta[-1]) if with_ties else None,
        log_nu_se=float(math.sqrt(covariance[-1, -1])) if with_ties else None,
    )
    if not converged:
        out.update(exists=False, reason=f"Newton's method did not converge in {max_iter} iterations")
    return out


def circular_triads(wins: np.ndarray) -> int:
    """Circular triads of a complete tournament, C(k,3) - sum C(a_i, 2) (Kendall & Babington Smith 1940).

    ``wins[i, j]`` true when i is preferred over j; a_i is the number of conditions i beats.
    """
    k = wins.shape[0]
    scores = (wins > wins.T).sum(axis=1)
    return int(math.comb(k, 3) - sum(math.comb(int(a), 2) for a in scores))


def max_circular_triads(k: int) -> int:
    """Largest possible number of circular triads among k conditions (Kendall & Babington Smith 1940)."""
    return (k**3 - k) // 24 if k % 2 else (k**3 - 4 * k) // 24


@lru_cache(maxsize=32)
def triads_null(k: int, seed: int = 1940) -> tuple[np.ndarray, bool]:
    """Null distribution of the circular triads when every pair is decided at random (pmf over 0..max).

    Exact by enumerating all 2^(k(k-1)/2) tournaments for k <= EXACT_TRIADS_MAX_K, else from
    TRIADS_DRAWS seeded random tournaments. Returns (pmf, exact).
    """
    i, j = np.triu_indices(k, 1)
    m = i.size
    exact = k <= EXACT_TRIADS_MAX_K
    if exact:
        bits = ((np.arange(2**m)[:, None] >> np.arange(m)) & 1).astype(np.int8)
    else:
        bits = np.random.default_rng(seed).integers(0, 2, size=(TRIADS_DRAWS, m), dtype=np.int8)
    incidence = np.zeros((m, k), dtype=np.int16)
    incidence[np.arange(m), i] = 1
    scores = bits.astype(np.int16) @ incidence + (1 - bits).astype(np.int16) @ np.eye(k, dtype=np.int16)[j]
    d = math.comb(k, 3) - (scores * (scores - 1) // 2).sum(axis=1)
    pmf = np.bincount(d, minlength=max_circular_triads(k) + 1).astype(float)
    return pmf / pmf.sum(), exact


def _decided(frame: pd.DataFrame, conditions: list[str]) -> np.ndarray:
    """+1 / -1 / 0 per ordered pair: the majority of the set's strict choices (0: undecided or unjudged)."""
    wins, _ = count_matrices(frame, conditions)
    direction: np.ndarray = np.sign(wins - wins.T)
    return direction


def _brute_force_triads(direction: np.ndarray) -> int:
    count = 0
    for a, b, c in itertools.combinations(range(direction.shape[0]), 3):
        ab, bc, ca = direction[a, b], direction[b, c], direction[c, a]
        if ab and bc and ca and ab == bc == ca:
            count += 1
    return count


def consistency(frame: pd.DataFrame, by: str = "auto") -> tuple[pd.DataFrame, str]:
    """Circular triads per judgment set with their significance; returns (table, the grouping used).

    A judgment set is one participant's judgments (``by="participant"``) or one participant's on
    one item (``"participant_item"``); ``"auto"`` uses participants unless one of them judged a pair
    more than once. Within a set a pair judged more than once counts by its majority. A set with
    every pair decided gets the coefficient of consistency zeta = 1 - d / d_max and
    P(D <= d) under random judgments; others get the count over the decided triads only.
    """
    if by == "auto":
        low = np.minimum(frame["condition_a"].to_numpy(), frame["condition_b"].to_numpy())
        high = np.maximum(frame["condition_a"].to_numpy(), frame["condition_b"].to_numpy())
        keys = pd.DataFrame({"participant": frame["participant"].to_numpy(), "low": low, "high": high})
        by = "participant" if not keys.duplicated().any() else "participant_item"
    if by not in ("participant", "participant_item"):
        raise EvaluationError(f"triads grouping must be participant, participant_item or auto, got {by!r}")
    group_keys = ["participant"] if by == "participant" else ["participant", "item"]
    rows = []
    for key, group in frame.groupby(group_keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        conditions = sorted(set(group["condition_a"]) | set(group["condition_b"]))
        k = len(conditions)
        direction = _decided(group, conditions)
        decided = int((direction > 0).sum())
        complete = decided == math.comb(k, 2)
        row: dict[str, Any] = dict(zip(group_keys, key)) | {
            "conditions": k,
            "pairs_decided": decided,
            "pairs": math.comb(k, 2),
            "complete": complete,
            "circular_triads": circular_triads(direction > 0) if complete else _brute_force_triads(direction),
            "max_triads": max_circular_triads(k) if k >= 3 else 0,
            "zeta": np.nan,
            "pvalue": np.nan,
            "min_pvalue": np.nan,
            "pvalue_exact": None,
        }
        if complete and k >= 3:
            pmf, exact = triads_null(k)
            row.update(
                zeta=1 - row["circular_triads"] / row["max_triads"],
                pvalue=float(min(1.0, pmf[: row["circular_triads"] + 1].sum())),
                min_pvalue=float(pmf[0]),
                pvalue_exact=exact,
            )
        rows.append(row)
    return pd.DataFrame(rows), by


def analyse_preference(
    frame: pd.DataFrame,
    *,
    alpha: float = 0.05,
    confidence_level: float = 0.95,
    reference: str | None = None,
    triads_by: str = "auto",
) -> ParadigmResult:
    """Bradley-Terry / Davidson scores with Wald intervals and circular triads per participant."""
    check_levels(alpha, confidence_level)
    if "winner" not in frame.columns:
        frame = validate_preference(frame)
    conditions = sorted(set(frame["condition_a"]) | set(frame["condition_b"]))
    if reference is not None and reference not in conditions:
        raise EvaluationError(f"reference condition {reference!r} is not in the table; it has {', '.join(conditions)}")
    wins, ties = count_matrices(frame, conditions)
    fit = fit_bradley_terry(wins, ties, None if reference is None else conditions.index(reference), names=conditions)
    z = float(stats.norm.ppf(0.5 + confidence_level / 2))
    table = pd.DataFrame(
        {
            "condition": conditions,
            "comparisons": (wins + wins.T + ties).sum(axis=1).astype(int),
            "wins": wins.sum(axis=1).astype(int),
            "losses": wins.sum(axis=0).astype(int),
            "ties": ties.sum(axis=1).astype(int),
        }
    )
    table["win_share"] = (table["wins"] + table["ties"] / 2) / table["comparisons"]
    if fit["exists"]:
        se = np.sqrt(np.clip(np.diag(fit["covariance"]), 0, None))
        worth = np.exp(fit["scores"])
        table["score"] = fit["scores"]
        table["se"] = se
        table["ci_low"] = fit["scores"] - z * se
        table["ci_high"] = fit["scores"] + z * se
        table["worth"] = worth / worth.sum()
    else:
        for column in ("score", "se", "ci_low", "ci_high", "worth"):
            table[column] = np.nan
    triads, grouping = consistency(frame, triads_by)
    warnings = []
    if not fit["exists"]:
        warnings.append(
            {
                "code": "bradley_terry_no_mle",
                "message": f"No paired-comparison scores: {fit['reason']}. The win shares are reported; "
                "the scores are null.",
            }
        )
    # Only sets whose most consistent outcome could reach alpha can fail the test (k >= 6 at 0.05).
    testable = triads[triads["min_pvalue"] <= alpha] if len(triads) else triads
    inconsistent = testable[testable["pvalue"] > alpha] if len(testable) else testable
    if len(inconsistent):
        warnings.append(
            {
                "code": "preference_inconsistent",
                "message": (
                    f"{len(inconsistent)} of {len(testable)} judgment sets that could show consistency do not have "
                    f"significantly fewer circular triads than random choices (P(D <= d) > {alpha:g}): "
                    + ", ".join(sorted({str(v) for v in inconsistent["participant"]})[:10])
                ),
            }
        )
    nu: dict[str, Any] | None = None
    if fit["exists"] and fit["log_nu"] is not None:
        lo, hi = fit["log_nu"] - z * fit["log_nu_se"], fit["log_nu"] + z * fit["log_nu_se"]
        nu = {"estimate": math.exp(fit["log_nu"]), "ci": [math.exp(lo), math.exp(hi)]}
    level = f"{100 * confidence_level:g} %"
    identification = f"the score of {reference} fixed at 0" if reference else "scores summing to zero"
    method = (
        f"{'Davidson (1970) ties model' if fit['model'] == 'davidson' else 'Bradley-Terry (1952) model'} fitted by "
        f"maximum likelihood (Newton's method), log-worth scores identified by {identification}, {level} Wald "
        "intervals from the observed information; worth = exp(score) normalised to sum 1. Consistency: circular "
        "triads per judgment set (Kendall & Babington Smith 1940), zeta = 1 - d / d_max, and P(D <= d) when every "
        f"pair is decided at random (exact up to {EXACT_TRIADS_MAX_K} conditions, else {TRIADS_DRAWS} seeded "
        "random tournaments); min_pvalue is P(D = 0) = k! / 2^C(k,2), so with fewer than 6 conditions no set "
        "can reach 0.05."
    )
    summary = {
        "model": fit["model"],
        "identification": "reference" if reference else "sum_to_zero",
        "reference": reference,
        "mle_exists": fit["exists"],
        "reason": fit["reason"] or None,
        "loglik": fit.get("loglik"),
        "iterations": fit.get("iterations"),
        "ties_parameter": nu,
        "participants": int(frame["participant"].nunique()),
        "judgments": len(frame),
        "no_preference": int((frame["choice"] == "none").sum()),
        "triads_by": grouping,
        "confidence_level": confidence_level,
    }
    tables = {"scores": table, "consistency": triads}
    return ParadigmResult("preference", "Paired preference (AB / ABN)", method, tables, summary, warnings)

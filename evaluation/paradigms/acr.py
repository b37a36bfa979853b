"""Absolute and degradation category rating: MOS (ACR) and DMOS (DCR), ITU-T P.800 and P.808.

ACR (P.800 Annex B): each stimulus alone on the five-point scale 5 excellent .. 1 bad; the mean
opinion score (MOS) of a condition is the mean of its votes. DCR (P.800 Annex D): the
reference then the stimulus, graded 5 inaudible .. 1 very annoying; the mean is the DMOS.
Each mean has its Student-t interval over the votes, as ITU-T reports a MOS (P.1401), and a
second one over per-participant means, which does not treat one listener's votes as
independent. P.808's screening (gold-standard and trapping questions of a crowdsourced
session) is done when the answers come in; here it arrives as the flag ``passed_checks``
and participants with a failed check are left out.

Input columns: participant, item, condition, rating (1..5, whole numbers; 1..points for a
category scale of another length, as a webMUSHRA likert page may have), optionally
passed_checks (true / false).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..descriptives import t_interval
from ..errors import EvaluationError
from .common import (
    ParadigmResult,
    check_levels,
    flag_column,
    numeric_column,
    participant_counts,
    read_table,
    start,
    text_columns,
    unique_rows,
)

COLUMNS = ("participant", "item", "condition", "rating")
METHODS = {"acr": "mos", "dcr": "dmos"}
#: The categories of P.800's scales (ACR Annex B, DCR Annex D).
POINTS = 5
#: The fewest and most categories a scale may have.
POINT_RANGE = (2, 11)


def _check_points(points: int) -> int:
    if isinstance(points, bool) or not isinstance(points, int) or not (POINT_RANGE[0] <= points <= POINT_RANGE[1]):
        raise EvaluationError(
            f"points must be a whole number from {POINT_RANGE[0]} to {POINT_RANGE[1]}, got {points!r}"
        )
    return points


def validate_acr(frame: pd.DataFrame, source: str = "(in memory)", points: int = POINTS) -> pd.DataFrame:
    """Check an ACR / DCR table: whole-number ratings 1..points, one per (participant, item, condition)."""
    what = "ACR/DCR"
    points = _check_points(points)
    frame = start(frame, COLUMNS, what, source)
    text_columns(frame, ("participant", "item", "condition"), what, source)
    frame["rating"] = numeric_column(frame, "rating", what, source, 1, points, integer=True)
    unique_rows(frame, ("participant", "item", "condition"), what, source)
    if "passed_checks" in frame.columns:
        frame["passed_checks"] = flag_column(frame, "passed_checks", what, source)
    else:
        frame["passed_checks"] = True
    return frame


def read_acr(path: str, points: int = POINTS) -> pd.DataFrame:
    """Read and check an ACR / DCR CSV table."""
    return validate_acr(read_table(path), source=str(path), points=points)


def mos_table(
    frame: pd.DataFrame, keys: list[str], statistic: str, confidence_level: float, points: int = POINTS
) -> pd.DataFrame:
    """Per group: votes, the mean (MOS or DMOS) with its t interval over votes (P.1401), and the vote counts."""
    rows = []
    for key, group in frame.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        votes = group["rating"].to_numpy(dtype=float)
        low, high = t_interval(votes, confidence_level)
        row: dict[str, Any] = dict(zip(keys, key)) | {
            "n_votes": int(votes.size),
            "n_participants": int(group["participant"].nunique()),
            statistic: float(votes.mean()),
            "sd": float(votes.std(ddof=1)) if votes.size > 1 else np.nan,
            "ci_low": low,
            "ci_high": high,
        }
        if keys == ["condition"]:
            means = group.groupby("participant")["rating"].mean().to_numpy(dtype=float)
            row["ci_participant_low"], row["ci_participant_high"] = t_interval(means, confidence_level)
            for category in range(1, points + 1):
                row[f"votes_{category}"] = int((votes == category).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def analyse_acr(
    frame: pd.DataFrame,
    *,
    alpha: float = 0.05,
    confidence_level: float = 0.95,
    method: str = "acr",
    apply_screening: bool = True,
    points: int = POINTS,
) -> ParadigmResult:
    """MOS (ACR) or DMOS (DCR) per condition and per (condition, item), after P.808 screening by flag."""
    check_levels(alpha, confidence_level)
    points = _check_points(points)
    if method not in METHODS:
        raise EvaluationError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if points != POINTS and method == "dcr":
        raise EvaluationError("a DCR table uses P.800 Annex D's five categories (points=5)")
    if "passed_checks" not in frame.columns or frame["passed_checks"].dtype != bool or points != POINTS:
        frame = validate_acr(frame, points=points)
    statistic = METHODS[method]
    passed = frame.groupby("participant", sort=True)["passed_checks"].all()
    screening = pd.DataFrame(
        {
            "participant": passed.index,
            "votes": frame.groupby("participant", sort=True).size().to_numpy(),
            "passed_checks": passed.to_numpy(),
            "excluded": (~passed.to_numpy()) & apply_screening,
        }
    )
    excluded = screening.loc[screening["excluded"], "participant"].tolist()
    used = frame[~frame["participant"].isin(excluded)]
    warnings = []
    if used.empty:
        warnings.append(
            {"code": "acr_all_excluded", "message": "Every participant failed a P.808 check; no scores are reported."}
        )
        conditions = pd.DataFrame(columns=["condition", "n_votes", statistic])
        by_item = pd.DataFrame(columns=["condition", "item", "n_votes", statistic])
    else:
        conditions = mos_table(used, ["condition"], statistic, confidence_level, points)
        by_item = mos_table(used, ["condition", "item"], statistic, confidence_level, points)
    level = f"{100 * confidence_level:g} %"
    scale = "ACR, ITU-T P.800 Annex B" if method == "acr" else "DCR, ITU-T P.800 Annex D"
    if points != POINTS:
        scale = f"a {points}-point category scale of the experiment's own"
    method_text = (
        f"{statistic.upper()} = mean of the votes per condition ({scale}; 1..{points}), with the {level} Student-t "
        "interval over the votes (ci, as ITU-T P.1401 reports a MOS) and over per-participant means "
        "(ci_participant: the listener as the unit). P.808 gold-standard / trapping questions enter as the "
        f"passed_checks flag; participants with a failed check are {'excluded' if apply_screening else 'kept'}."
    )
    summary = {
        "method": method,
        "statistic": statistic,
        "confidence_level": confidence_level,
        "apply_screening": apply_screening,
        "points": points,
        "participants": participant_counts(frame, used, excluded),
        "votes": {"total": len(frame), "used": len(used)},
    }
    title = "Absolute category rating (MOS)" if method == "acr" else "Degradation category rating (DMOS)"
    tables = {"conditions": conditions, "by_item": by_item, "screening": screening}
    return ParadigmResult(method, title, method_text, tables, summary, warnings)

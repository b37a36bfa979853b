"""ITU-R BS.1116-3: double-blind triple stimulus with hidden reference, small impairments.

Each trial plays A (the reference, known) and B and C, one of them the hidden reference and the
other the condition, in random order; the assessor grades both B and C on the continuous
five-grade impairment scale 1.0-5.0 (BS.1116-3 §5.1). The difference grade of a trial is the
condition's grade minus the hidden reference's, the subjective difference grade of BS.1116-3's
analysis: 0 means no difference heard, negative values an impairment.

Post-screening (BS.1116-3 §4.2, with Attachment 1 to Annex 1): an assessor is kept when they can
identify the hidden reference, tested by a one-sided t-test on their difference grades
(H1: mean difference grade < 0). An assessor whose mean is not significantly below zero at
alpha is excluded; §4.2 rules out post-screening on agreement with the panel's mean, so no
such rule is offered. Per condition: the mean of per-assessor mean difference grades with
its Student-t interval (the assessor is the unit).

Input columns: participant, item, condition, reference_is (B or C), grade_b, grade_c.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..descriptives import t_interval
from .common import (
    ParadigmResult,
    check_levels,
    choice_column,
    numeric_column,
    participant_counts,
    read_table,
    start,
    text_columns,
    unique_rows,
)

COLUMNS = ("participant", "item", "condition", "reference_is", "grade_b", "grade_c")
SIDES = {"b": "B", "c": "C"}
GRADE_RANGE = (1.0, 5.0)


def validate_bs1116(frame: pd.DataFrame, source: str = "(in memory)") -> pd.DataFrame:
    """Check a BS.1116 table; adds the condition's grade, the hidden reference's and their ``difference``."""
    what = "BS.1116"
    frame = start(frame, COLUMNS, what, source)
    text_columns(frame, ("participant", "item", "condition"), what, source)
    frame["reference_is"] = choice_column(frame, "reference_is", SIDES, what, source)
    for column in ("grade_b", "grade_c"):
        frame[column] = numeric_column(frame, column, what, source, *GRADE_RANGE)
    unique_rows(frame, ("participant", "item", "condition"), what, source)
    reference_b = frame["reference_is"] == "B"
    frame["grade_condition"] = np.where(reference_b, frame["grade_c"], frame["grade_b"])
    frame["grade_reference"] = np.where(reference_b, frame["grade_b"], frame["grade_c"])
    frame["difference"] = frame["grade_condition"] - frame["grade_reference"]
    return frame


def read_bs1116(path: str) -> pd.DataFrame:
    """Read and check a BS.1116 CSV table."""
    return validate_bs1116(read_table(path), source=str(path))


def identification_test(differences: np.ndarray) -> dict[str, Any]:
    """One-sided one-sample t-test of the difference grades against 0, H1: mean < 0 (BS.1116-3 §4.2).

    With no spread the test is decided by the sign of the mean (p = 0 below zero, else 1);
    with fewer than two grades it cannot be run (p is NaN).
    """
    d = np.asarray(differences, dtype=float)
    n = d.size
    out: dict[str, Any] = {"n": n, "mean_difference": float(d.mean()) if n else np.nan, "sd": np.nan}
    out |= {"t": np.nan, "df": max(n - 1, 0), "pvalue": np.nan}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    out["sd"] = sd
    if sd == 0.0:
        below = out["mean_difference"] < 0
        out.update(t=-np.inf if below else (np.inf if out["mean_difference"] > 0 else np.nan))
        out["pvalue"] = 0.0 if below else 1.0
        return out
    t = out["mean_difference"] / (sd / np.sqrt(n))
    out.update(t=float(t), pvalue=float(stats.t.cdf(t, n - 1)))
    return out


def post_screen(frame: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per assessor: the BS.1116-3 §4.2 identification t-test, trials reversed, and whether they are excluded."""
    rows = []
    for participant, group in frame.groupby("participant", sort=True):
        d = group["difference"].to_numpy(dtype=float)
        test = identification_test(d)
        if np.isnan(test["pvalue"]):
            excluded, reason = False, "fewer than two trials: the identification test cannot be run (kept)"
        elif test["pvalue"] > alpha:
            excluded = True
            reason = (
                f"hidden reference not reliably identified: mean difference grade {test['mean_difference']:.2f} "
                f"is not below 0 (one-sided t-test p = {test['pvalue']:.3g} > {alpha:g})"
            )
        else:
            excluded, reason = False, ""
        rows.append(
            {"participant": participant}
            | test
            | {
                "identified": int((d < 0).sum()),
                "reversed": int((d > 0).sum()),
                "no_difference": int((d == 0).sum()),
                "excluded": excluded,
                "reason": reason,
            }
        )
    return pd.DataFrame(rows)


def _describe(groups: Any, confidence_level: float, keys: list[str]) -> pd.DataFrame:
    rows = []
    for key, values in groups:
        key = key if isinstance(key, tuple) else (key,)
        v = values.to_numpy(dtype=float)
        low, high = t_interval(v, confidence_level)
        row = dict(zip(keys, key)) | {
            "n": int(v.size),
            "mean_difference": float(v.mean()),
            "sd": float(v.std(ddof=1)) if v.size > 1 else np.nan,
            "ci_low": low,
            "ci_high": high,
        }
        rows.append(row)
    return pd.DataFrame(rows, columns=keys + ["n", "mean_difference", "sd", "ci_low", "ci_high"])


def analyse_bs1116(
    frame: pd.DataFrame, *, alpha: float = 0.05, confidence_level: float = 0.95, apply_screening: bool = True
) -> ParadigmResult:
    """BS.1116-3 analysis: difference grades, §4.2 post-screening, per-condition means with t intervals."""
    check_levels(alpha, confidence_level)
    if "difference" not in frame.columns:
        frame = validate_bs1116(frame)
    screening = post_screen(frame, alpha)
    excluded = screening.loc[screening["excluded"], "participant"].tolist() if apply_screening else []
    used = frame[~frame["participant"].isin(excluded)]
    per_participant = used.groupby(["condition", "participant"], sort=True)["difference"].mean().reset_index()
    conditions = _describe(
        per_participant.groupby("condition", sort=True)["difference"], confidence_level, ["condition"]
    )
    grades = used.groupby("condition", sort=True)[["grade_condition", "grade_reference"]].mean().reset_index()
    conditions = conditions.merge(grades, on="condition", how="left")
    conditions.insert(
        2, "n_trials", conditions["condition"].map(used.groupby("condition").size()).fillna(0).astype(int)
    )
    by_item = _describe(
        used.groupby(["condition", "item"], sort=True)["difference"], confidence_level, ["condition", "item"]
    )
    warnings = []
    if apply_screening and excluded and not len(used):
        warnings.append(
            {
                "code": "bs1116_all_excluded",
                "message": "Every assessor failed the BS.1116-3 §4.2 identification test; no means are reported.",
            }
        )
    level = f"{100 * confidence_level:g} %"
    method = (
        "Difference grade = grade of the condition - grade of the hidden reference (1.0-5.0 impairment scale, "
        "ITU-R BS.1116-3). Post-screening (BS.1116-3 §4.2): one-sided one-sample t-test per assessor of their "
        f"difference grades against 0 (H1: mean < 0); assessors with p > {alpha:g} did not reliably identify the "
        f"hidden reference and are {'excluded' if apply_screening else 'only flagged'}. Per condition: mean of "
        f"per-assessor mean difference grades with its {level} Student-t interval."
    )
    summary = {
        "alpha": alpha,
        "confidence_level": confidence_level,
        "apply_screening": apply_screening,
        "participants": participant_counts(frame, used, excluded),
        "trials": len(frame),
    }
    tables = {"conditions": conditions, "screening": screening, "by_item": by_item}
    return ParadigmResult(
        "bs1116", "ITU-R BS.1116-3 (hidden reference, impairment grades)", method, tables, summary, warnings
    )

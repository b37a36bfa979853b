"""Reading and validating the two long tables the analysis works on.

Ratings: one row per (participant, item, condition) with a ``rating`` on the 0..100
MUSHRA scale (ITU-R BS.1534-3 §5.4), optionally ``kind``, ``page``, ``started_at`` and
``submitted_at``. Metrics: one row per (condition, item, metric) with a ``value``.

``read_ratings`` also reads webMUSHRA's ``mushra.csv`` (recognised by its columns
``session_uuid``, ``trial_id``, ``rating_stimulus``, ``rating_score``): the session is
the participant, the trial the item, the stimulus the condition.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import EvaluationError
from .kinds import KINDS, infer_kind

RATING_COLUMNS = ("participant", "item", "condition", "rating")
OPTIONAL_RATING_COLUMNS = ("kind", "page", "started_at", "submitted_at")
METRIC_COLUMNS = ("condition", "item", "metric", "value")
WEBMUSHRA_COLUMNS = ("session_uuid", "trial_id", "rating_stimulus", "rating_score")
#: webMUSHRA column -> our column; the rest of its columns (form answers) are kept as they are.
WEBMUSHRA_RENAME = {
    "session_uuid": "participant",
    "trial_id": "item",
    "rating_stimulus": "condition",
    "rating_score": "rating",
    "session_test_id": "test_id",
}


def _read_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise EvaluationError(f"file {path} does not exist")
    try:
        # Identifiers stay text: an item called "01" must not become 1.
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise EvaluationError(f"file {path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"file {path} is not a readable CSV file: {exc}") from None


def is_webmushra(frame: pd.DataFrame) -> bool:
    """True when the table has webMUSHRA's mushra.csv columns."""
    return all(c in frame.columns for c in WEBMUSHRA_COLUMNS)


def from_webmushra(frame: pd.DataFrame) -> pd.DataFrame:
    """Rename webMUSHRA's mushra.csv columns to the ratings long table's columns."""
    clashes = [ours for theirs, ours in WEBMUSHRA_RENAME.items() if ours in frame.columns and theirs in frame.columns]
    if clashes:
        raise EvaluationError(f"webMUSHRA table also has column(s) {', '.join(clashes)}; cannot tell which to use")
    return frame.rename(columns=WEBMUSHRA_RENAME)


def read_ratings(path: str | Path, kinds: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Read a ratings CSV (ours or webMUSHRA's mushra.csv) and validate it."""
    frame = _read_csv(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    if is_webmushra(frame):
        frame = from_webmushra(frame)
    return validate_ratings(frame, kinds=kinds, source=str(path))


def read_metrics(path: str | Path) -> pd.DataFrame:
    """Read a metrics CSV (condition, item, metric, value) and validate it."""
    frame = _read_csv(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    return validate_metrics(frame, source=str(path))


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str, source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise EvaluationError(
            f"{what} table {source} lacks column(s) {', '.join(missing)}; "
            f"it has {', '.join(map(str, frame.columns)) or 'no columns'}"
        )


def _rows(index: pd.Index, limit: int = 5) -> str:
    # Row numbers as a researcher sees them in a spreadsheet: header is line 1.
    shown = ", ".join(str(int(i) + 2) for i in list(index)[:limit])
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return f"line(s) {shown}{more}"


def _numeric(frame: pd.DataFrame, column: str, what: str, source: str) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        example = frame.loc[bad, column].iloc[0]
        raise EvaluationError(
            f"{what} table {source}: column {column} is not numeric at {_rows(frame.index[bad])} (e.g. {example!r})"
        )
    return values.astype(float)


def condition_kinds(ratings: pd.DataFrame) -> dict[str, str]:
    """Each condition of a validated ratings table with its kind, in order of appearance."""
    first = ratings.drop_duplicates("condition")
    return {str(c): str(k) for c, k in zip(first["condition"], first["kind"])}


def validate_ratings(
    frame: pd.DataFrame, kinds: Mapping[str, str] | None = None, source: str = "(in memory)"
) -> pd.DataFrame:
    """Check and normalise a ratings long table; returns a new frame with a ``kind`` column.

    Rows whose rating is empty are dropped (a missing cell, counted in
    ``attrs["dropped_empty"]``); ratings outside 0..100, duplicate
    (participant, item, condition) rows, missing columns and unknown kinds are errors.
    """
    if not isinstance(frame, pd.DataFrame):
        raise EvaluationError(f"ratings must be a pandas DataFrame, got {type(frame).__name__}")
    _require(frame, RATING_COLUMNS, "ratings", source)
    frame = frame.reset_index(drop=True).copy()
    for column in ("participant", "item", "condition"):
        empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            raise EvaluationError(f"ratings table {source}: column {column} is empty at {_rows(frame.index[empty])}")
        frame[column] = frame[column].astype(str).str.strip()
    frame["rating"] = _numeric(frame, "rating", "ratings", source)
    empty = frame["rating"].isna()
    dropped = int(empty.sum())
    frame = frame.loc[~empty]
    outside = (frame["rating"] < 0) | (frame["rating"] > 100) | ~np.isfinite(frame["rating"])
    if outside.any():
        example = frame.loc[outside, "rating"].iloc[0]
        raise EvaluationError(
            f"ratings table {source}: rating outside 0..100 at {_rows(frame.index[outside])} (e.g. {example:g})"
        )
    # A trial presented again is told apart by a ``repeat`` column (evaluation.reliability).
    repeated = ["repeat"] if "repeat" in frame.columns else []
    duplicated = frame.duplicated(["participant", "item", "condition"] + repeated, keep=False)
    if duplicated.any():
        first = frame.loc[duplicated].iloc[0]
        raise EvaluationError(
            f"ratings table {source}: duplicate (participant, item, condition{', repeat' if repeated else ''}) rows "
            f"at {_rows(frame.index[duplicated])}, e.g. ({first['participant']}, {first['item']}, "
            f"{first['condition']}); number the presentations of a repeated trial in a repeat column (0, 1, ...)"
        )
    if frame.empty:
        raise EvaluationError(f"ratings table {source} has no ratings")
    if "kind" in frame.columns and frame["kind"].notna().any():
        given = frame["kind"].astype(str).str.strip().str.lower()
        unknown = sorted(set(given) - set(KINDS))
        if unknown:
            raise EvaluationError(
                f"ratings table {source}: unknown kind(s) {', '.join(unknown)}; expected {', '.join(KINDS)}"
            )
        if kinds:
            given = pd.Series([kinds.get(c, k) for c, k in zip(frame["condition"], given)], index=frame.index)
        frame["kind"] = given
        conflicting = frame.groupby("condition")["kind"].nunique()
        conflicting = conflicting[conflicting > 1]
        if len(conflicting):
            raise EvaluationError(
                f"ratings table {source}: condition(s) {', '.join(conflicting.index)} have more than one kind"
            )
    else:
        mapping = {c: infer_kind(c, kinds) for c in frame["condition"].unique()}
        frame["kind"] = frame["condition"].map(mapping)
    ordered = list(RATING_COLUMNS) + ["kind"] + [c for c in frame.columns if c not in RATING_COLUMNS and c != "kind"]
    # A canonical row order makes every resampling result independent of the input order.
    frame = frame[ordered].sort_values(["participant", "item", "condition"], kind="stable").reset_index(drop=True)
    frame.attrs["dropped_empty"] = dropped
    return frame


def validate_metrics(frame: pd.DataFrame, source: str = "(in memory)") -> pd.DataFrame:
    """Check and normalise a metrics long table (condition, item, metric, value)."""
    if not isinstance(frame, pd.DataFrame):
        raise EvaluationError(f"metrics must be a pandas DataFrame, got {type(frame).__name__}")
    _require(frame, METRIC_COLUMNS, "metrics", source)
    frame = frame.reset_index(drop=True).copy()
    for column in ("condition", "item", "metric"):
        empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            raise EvaluationError(f"metrics table {source}: column {column} is empty at {_rows(frame.index[empty])}")
        frame[column] = frame[column].astype(str).str.strip()
    frame["value"] = _numeric(frame, "value", "metrics", source)
    bad = ~np.isfinite(frame["value"])
    if bad.any():
        raise EvaluationError(f"metrics table {source}: value missing or not finite at {_rows(frame.index[bad])}")
    duplicated = frame.duplicated(["condition", "item", "metric"], keep=False)
    if duplicated.any():
        first = frame.loc[duplicated].iloc[0]
        raise EvaluationError(
            f"metrics table {source}: duplicate (condition, item, metric) rows at {_rows(frame.index[duplicated])}, "
            f"e.g. ({first['condition']}, {first['item']}, {first['metric']})"
        )
    return frame[list(METRIC_COLUMNS) + [c for c in frame.columns if c not in METRIC_COLUMNS]]

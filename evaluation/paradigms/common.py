"""What the paradigm analyses share: reading and checking a long table, and a JSON-ready result.

Each paradigm reads one long CSV table (one row per trial or judgment; the columns are
documented in docs/statistics.md) and returns a :class:`ParadigmResult`: named tables
(pandas), a summary and warnings, all of it plain data once passed through ``as_dict``
(NaN and infinities become ``None``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import EvaluationError
from ..io import _numeric, _read_csv, _require, _rows


@dataclass
class ParadigmResult:
    """One paradigm's analysis: tables by name, a summary, warnings and the methods in words."""

    paradigm: str
    title: str
    method: str
    tables: dict[str, pd.DataFrame]
    summary: dict[str, Any]
    warnings: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: tables as lists of records, NaN and infinities as None."""
        return {
            "paradigm": self.paradigm,
            "title": self.title,
            "method": self.method,
            "summary": jsonable(self.summary),
            "tables": {name: records(frame) for name, frame in self.tables.items()},
            "warnings": [dict(w) for w in self.warnings],
        }


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers, tuples as lists and NaN / infinities as None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is None or value is pd.NA:
        return None
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A table as JSON-ready records."""
    out: list[dict[str, Any]] = jsonable(frame.to_dict(orient="records"))
    return out


def read_table(path: str | Path) -> pd.DataFrame:
    """A paradigm's CSV table, every cell as text (identifiers such as "01" stay text)."""
    frame = _read_csv(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def start(frame: pd.DataFrame, columns: Sequence[str], what: str, source: str) -> pd.DataFrame:
    """Check that ``frame`` is a non-empty table with ``columns``; returns a copy with a fresh index."""
    if not isinstance(frame, pd.DataFrame):
        raise EvaluationError(f"{what} table must be a pandas DataFrame, got {type(frame).__name__}")
    _require(frame, tuple(columns), what, source)
    frame = frame.reset_index(drop=True).copy()
    if frame.empty:
        raise EvaluationError(f"{what} table {source} has no rows")
    return frame


def text_columns(frame: pd.DataFrame, columns: Sequence[str], what: str, source: str) -> None:
    """Strip identifier columns in place; an empty identifier is an error naming the lines."""
    for column in columns:
        empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            raise EvaluationError(f"{what} table {source}: column {column} is empty at {_rows(frame.index[empty])}")
        frame[column] = frame[column].astype(str).str.strip()


def numeric_column(
    frame: pd.DataFrame, column: str, what: str, source: str, low: float, high: float, integer: bool = False
) -> pd.Series:
    """A numeric column whose every value lies in [low, high] (whole numbers when ``integer``)."""
    values = _numeric(frame, column, what, source)
    missing = values.isna()
    if missing.any():
        raise EvaluationError(f"{what} table {source}: column {column} is empty at {_rows(frame.index[missing])}")
    outside = (values < low) | (values > high) | ~np.isfinite(values)
    if integer:
        outside |= values != np.round(values)
    if outside.any():
        example = values[outside].iloc[0]
        kind = "whole number" if integer else "value"
        raise EvaluationError(
            f"{what} table {source}: column {column} needs a {kind} in {low:g}..{high:g} at "
            f"{_rows(frame.index[outside])} (e.g. {example:g})"
        )
    return values


def choice_column(frame: pd.DataFrame, column: str, allowed: Mapping[str, str], what: str, source: str) -> pd.Series:
    """A column of answers mapped through ``allowed`` (keys compared lower-case); anything else is an error."""
    given = frame[column].fillna("").astype(str).str.strip().str.lower()
    mapped = given.map(dict(allowed))
    bad = mapped.isna()
    if bad.any():
        example = frame.loc[bad, column].iloc[0]
        names = ", ".join(sorted({v for v in allowed.values()}))
        raise EvaluationError(
            f"{what} table {source}: column {column} must be one of {names} at {_rows(frame.index[bad])} "
            f"(e.g. {example!r})"
        )
    return mapped.astype(str)


def unique_rows(frame: pd.DataFrame, keys: Sequence[str], what: str, source: str) -> None:
    """Refuse duplicate rows on ``keys``, naming the lines and the first duplicate."""
    duplicated = frame.duplicated(list(keys), keep=False)
    if duplicated.any():
        first = frame.loc[duplicated].iloc[0]
        example = ", ".join(str(first[k]) for k in keys)
        raise EvaluationError(
            f"{what} table {source}: duplicate ({', '.join(keys)}) rows at {_rows(frame.index[duplicated])}, "
            f"e.g. ({example})"
        )


def check_levels(alpha: float, confidence_level: float) -> None:
    """Refuse a significance or confidence level outside (0, 1)."""
    for name, value in (("alpha", alpha), ("confidence_level", confidence_level)):
        if not (isinstance(value, (int, float)) and 0 < float(value) < 1):
            raise EvaluationError(f"{name} must lie strictly between 0 and 1, got {value!r}")


def flag_column(frame: pd.DataFrame, column: str, what: str, source: str) -> pd.Series:
    """A true/false column (true, false, yes, no, 1, 0, pass, fail); empty cells count as true."""
    words = {"true": True, "yes": True, "1": True, "pass": True, "passed": True, "": True}
    words |= {"false": False, "no": False, "0": False, "fail": False, "failed": False}
    given = frame[column].fillna("").astype(str).str.strip().str.lower()
    bad = ~given.isin(list(words))
    if bad.any():
        example = frame.loc[bad, column].iloc[0]
        raise EvaluationError(
            f"{what} table {source}: column {column} must be true or false at {_rows(frame.index[bad])} "
            f"(e.g. {example!r})"
        )
    return given.map(words).astype(bool)


def format_text(result: ParadigmResult, tables: Sequence[str] | None = None) -> str:
    """The result in plain text for a terminal: title, methods, the tables, the warnings."""
    lines = [result.title, result.method, ""]
    for name in tables or list(result.tables):
        frame = result.tables[name]
        lines.append(f"{name}:")
        lines.append("  (none)" if frame.empty else frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        lines.append("")
    lines += [f"warning: {w['message']}" for w in result.warnings]
    return "\n".join(lines).rstrip()


def participant_counts(frame: pd.DataFrame, used: pd.DataFrame, excluded: list[Any]) -> dict[str, Any]:
    """Participants in the input, excluded by screening (listed), and retained."""
    return {
        "total": int(frame["participant"].nunique()),
        "excluded": excluded,
        "retained": int(used["participant"].nunique()),
    }

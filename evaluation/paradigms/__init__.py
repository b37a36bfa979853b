"""Listening-test paradigms besides MUSHRA: ABX, AB / ABN preference, BS.1116, ACR / DCR and ranking.

One module per paradigm, each reading its own long table (columns in docs/statistics.md) and
returning a :class:`~evaluation.paradigms.common.ParadigmResult`. ``analyse(name, table)``
and ``read(name, path)`` reach them by name; the modules are imported when first used.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import EvaluationError
from .common import ParadigmResult

#: name -> (module, reader, analysis, fixed options, title for help texts)
PARADIGMS: dict[str, tuple[str, str, str, dict[str, Any], str]] = {
    "abx": ("abx", "read_abx", "analyse_abx", {}, "ABX discrimination (exact binomial, d')"),
    "preference": (
        "preference",
        "read_preference",
        "analyse_preference",
        {},
        "AB / ABN preference (Bradley-Terry, Davidson ties, circular triads)",
    ),
    "bs1116": ("bs1116", "read_bs1116", "analyse_bs1116", {}, "ITU-R BS.1116-3 hidden reference (difference grades)"),
    "acr": ("acr", "read_acr", "analyse_acr", {"method": "acr"}, "ACR mean opinion scores (ITU-T P.800, P.808)"),
    "dcr": ("acr", "read_acr", "analyse_acr", {"method": "dcr"}, "DCR degradation MOS (ITU-T P.800 Annex D)"),
    "ranking": ("ranking", "read_ranking", "analyse_ranking", {}, "ranking (Friedman, pairwise Wilcoxon-Holm)"),
}

__all__ = ["PARADIGMS", "ParadigmResult", "analyse", "read"]


def _entry(name: str) -> tuple[Any, tuple[str, str, str, dict[str, Any], str]]:
    if name not in PARADIGMS:
        raise EvaluationError(f"unknown paradigm {name!r}; expected one of {', '.join(PARADIGMS)}")
    entry = PARADIGMS[name]
    return importlib.import_module(f".{entry[0]}", __name__), entry


def read(name: str, path: str | Path, **options: Any) -> pd.DataFrame:
    """Read and check the CSV table of paradigm ``name`` (``options``: the reader's, such as ACR's ``points``)."""
    module, entry = _entry(name)
    frame: pd.DataFrame = getattr(module, entry[1])(str(path), **options)
    return frame


def analyse(name: str, frame: pd.DataFrame, **options: Any) -> ParadigmResult:
    """Analyse a table of paradigm ``name``; ``options`` go to the paradigm's analysis function."""
    module, entry = _entry(name)
    result: ParadigmResult = getattr(module, entry[2])(frame, **(entry[3] | options))
    return result

"""Statistics and reports for MUSHRA listening tests (ITU-R BS.1534-3).

Plain pandas / scipy / statsmodels: usable from a notebook, a training script or the
web app. Input: a ratings long table (participant, item, condition, rating) and an
optional metrics long table (condition, item, metric, value).

The top-level names are imported lazily, so ``evaluation.kinds`` stays cheap to import.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Analysis", "EvaluationError", "Settings", "analyse"]

_LAZY = {"Analysis": "analysis", "analyse": "analysis", "EvaluationError": "errors", "Settings": "settings"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'evaluation' has no attribute {name!r}")

"""Knob settings: the one check of a value against a model's knobs and declared ranges.

No torch here, so the platform can check a condition's knobs without loading a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import RenderError


def check_knobs(
    names: Sequence[str], ranges: Sequence[Sequence[float]], knobs: Mapping[str, Any] | None
) -> dict[str, float]:
    """Knob settings checked against a model's knobs and their declared ranges, as floats.

    The one check of knob values: the renderer applies it, and the platform applies it when a
    condition is defined, so a value a model cannot take is refused before anything renders.
    Raises ``RenderError`` naming the knob, the value and the range.
    """
    out: dict[str, float] = {}
    for name, value in (knobs or {}).items():
        if name not in names:
            known = ", ".join(names) or "none"
            raise RenderError(f"unknown knob {name!r} (this model's knobs: {known})")
        if isinstance(value, bool):
            raise RenderError(f"knob {name!r} must be a number, got {value!r}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise RenderError(f"knob {name!r} must be a number, got {value!r}") from None
        lo, hi = (float(b) for b in ranges[list(names).index(name)])
        if not (v == v and lo <= v <= hi):
            raise RenderError(f"knob {name!r}={value!r} is outside its range [{lo:g}, {hi:g}]")
        out[name] = v
    return out

"""The condition kinds of a MUSHRA test and how they are recognised by name.

ITU-R BS.1534-3 §5 and §5.1 ask for a hidden reference and at least two anchors: a
3.5 kHz low-pass (low-range anchor) and a 7 kHz low-pass (mid-range anchor) of the
reference. Every other condition is a system under test (here: a model). webMUSHRA
names them ``reference``, ``anchor35`` and ``anchor70``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errors import EvaluationError

HIDDEN_REFERENCE = "hidden_reference"
ANCHOR35 = "anchor35"
ANCHOR70 = "anchor70"
MODEL = "model"
KINDS = (HIDDEN_REFERENCE, ANCHOR35, ANCHOR70, MODEL)

#: Display order in tables and plots: reference first, anchors last.
KIND_ORDER = {HIDDEN_REFERENCE: 0, MODEL: 1, ANCHOR70: 2, ANCHOR35: 3}

_NAME_TO_KIND = {
    "reference": HIDDEN_REFERENCE,
    "hidden_reference": HIDDEN_REFERENCE,
    "hidden reference": HIDDEN_REFERENCE,
    "hidden-reference": HIDDEN_REFERENCE,
    "hiddenreference": HIDDEN_REFERENCE,
    "anchor35": ANCHOR35,
    "anchor_35": ANCHOR35,
    "anchor 35": ANCHOR35,
    "lp35": ANCHOR35,
    "anchor70": ANCHOR70,
    "anchor_70": ANCHOR70,
    "anchor 70": ANCHOR70,
    "lp70": ANCHOR70,
    "anchor7": ANCHOR70,
}


def infer_kind(condition: str, explicit: Mapping[str, str] | None = None) -> str:
    """Kind of one condition: the explicit mapping first, then the conventional names."""
    if explicit and condition in explicit:
        kind = explicit[condition]
        if kind not in KINDS:
            raise EvaluationError(
                f"condition {condition!r} is mapped to unknown kind {kind!r}; expected one of {', '.join(KINDS)}"
            )
        return kind
    return _NAME_TO_KIND.get(str(condition).strip().lower(), MODEL)


def kind_map(conditions: Iterable[str], explicit: Mapping[str, str] | None = None) -> dict[str, str]:
    """Kind of every condition name, as ``{condition: kind}``."""
    return {c: infer_kind(c, explicit) for c in conditions}


def order_conditions(kinds: Mapping[str, str]) -> list[str]:
    """Conditions sorted for display: hidden reference, models (by name), 7 kHz, 3.5 kHz anchor."""
    return sorted(kinds, key=lambda c: (KIND_ORDER[kinds[c]], str(c)))

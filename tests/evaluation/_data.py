"""Hand-built and generated tables shared by the evaluation tests."""

from __future__ import annotations

import pandas as pd

from evaluation.io import validate_ratings
from evaluation.kinds import kind_map
from evaluation.simulate import simulate_ratings


def screening_table(
    reference: dict[str, list[float]], anchor: dict[str, list[float]] | None = None, items: list[str] | None = None
) -> pd.DataFrame:
    """Ratings of a hidden reference and a 7 kHz anchor per assessor; None marks a skipped item."""
    rows = []
    for participant, values in reference.items():
        names = items or [f"i{k:02d}" for k in range(len(values))]
        for item, value in zip(names, values):
            if value is not None:
                rows.append((participant, item, "reference", value))
                rows.append((participant, item, "model_a", 50.0))
    for participant, values in (anchor or {}).items():
        names = items or [f"i{k:02d}" for k in range(len(values))]
        for item, value in zip(names, values):
            if value is not None:
                rows.append((participant, item, "anchor70", value))
    return validate_ratings(pd.DataFrame(rows, columns=["participant", "item", "condition", "rating"]))


def known(n_participants: int = 16, n_items: int = 4, seed: int = 3, **kwargs) -> pd.DataFrame:
    """Validated generated ratings with true means 97 (reference), 80, 60, 40 (models), 55 and 20 (anchors)."""
    frame = simulate_ratings(n_participants, n_items, seed=seed, **kwargs)
    if kwargs.get("clip", True):
        return validate_ratings(frame)
    # Unclipped ratings may leave 0..100 (the model tests want exact Gaussian data).
    frame["kind"] = frame["condition"].map(kind_map(frame["condition"].unique()))
    return frame

"""Generated MUSHRA ratings with known structure, for tests, benchmarks and examples.

Each rating is ``true mean of the condition + participant offset + item offset + noise``,
clipped to 0..100: a random-intercept model (Laird & Ware 1982) whose parameters are
known, so estimates can be checked against them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .kinds import ANCHOR35, ANCHOR70, HIDDEN_REFERENCE

DEFAULT_MEANS = {
    "reference": 97.0,
    "model_a": 80.0,
    "model_b": 60.0,
    "model_c": 40.0,
    "anchor70": 55.0,
    "anchor35": 20.0,
}


def simulate_ratings(
    n_participants: int = 20,
    n_items: int = 6,
    means: dict[str, float] | None = None,
    participant_sd: float = 5.0,
    item_sd: float = 3.0,
    noise_sd: float = 8.0,
    seed: int = 0,
    clip: bool = True,
) -> pd.DataFrame:
    """Long ratings table (participant, item, condition, rating) from a random-intercept model."""
    means = dict(means or DEFAULT_MEANS)
    rng = np.random.default_rng(seed)
    participants = [f"p{i:03d}" for i in range(n_participants)]
    items = [f"item{j:02d}" for j in range(n_items)]
    conditions = list(means)
    p_off = rng.normal(0.0, participant_sd, n_participants)
    i_off = rng.normal(0.0, item_sd, n_items)
    mu = np.array([means[c] for c in conditions])
    values = (
        mu[None, None, :]
        + p_off[:, None, None]
        + i_off[None, :, None]
        + rng.normal(0.0, noise_sd, (n_participants, n_items, len(conditions)))
    )
    # The hidden reference of an attentive listener sits near the top of the scale.
    for k, c in enumerate(conditions):
        if c in ("reference", HIDDEN_REFERENCE):
            values[:, :, k] = means[c] + rng.normal(0.0, 2.0, (n_participants, n_items))
    if clip:
        values = np.clip(values, 0.0, 100.0)
    index = pd.MultiIndex.from_product([participants, items, conditions], names=["participant", "item", "condition"])
    frame = index.to_frame(index=False)
    frame["rating"] = np.round(values.ravel(), 1)
    return frame


def simulate_metrics(ratings: pd.DataFrame, seed: int = 0, metric: str = "esr") -> pd.DataFrame:
    """Metrics table whose values fall as the cell's mean rating rises (log-linear in ESR)."""
    rng = np.random.default_rng(seed)
    cells = ratings.groupby(["condition", "item"], as_index=False)["rating"].mean()
    skip = {"reference", HIDDEN_REFERENCE, ANCHOR35, ANCHOR70}
    cells = cells[~cells["condition"].isin(skip)]
    log_esr = -0.5 - 0.03 * cells["rating"].to_numpy() + rng.normal(0.0, 0.1, len(cells))
    return pd.DataFrame(
        {
            "condition": cells["condition"].to_numpy(),
            "item": cells["item"].to_numpy(),
            "metric": metric,
            "value": 10**log_esr,
        }
    )

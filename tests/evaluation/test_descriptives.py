"""Descriptives checked against scipy and numpy on generated data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evaluation.bootstrap import bca_mean
from evaluation.descriptives import describe_by_condition_item, describe_overall, participant_means
from evaluation.settings import Settings

from ._data import known


def test_bca_matches_scipy_bootstrap_with_the_same_draws() -> None:
    rng = np.random.default_rng(0)
    samples = rng.gamma(2.0, 10.0, (3, 25))
    ours = bca_mean(samples, n_resamples=3000, seed=11)
    for row, interval in zip(samples, ours):
        reference = stats.bootstrap(
            (row,), np.mean, n_resamples=3000, method="BCa", rng=np.random.default_rng(11), vectorized=True
        ).confidence_interval
        assert interval == pytest.approx([reference.low, reference.high], rel=1e-12)


def test_bca_is_undefined_without_spread() -> None:
    assert np.isnan(bca_mean(np.full((1, 10), 100.0))).all()


def test_cell_descriptives_match_scipy_and_numpy() -> None:
    ratings = known()
    settings = Settings(seed=5)
    table = describe_by_condition_item(ratings, settings)
    assert len(table) == 6 * 4
    row = table[(table["condition"] == "model_b") & (table["item"] == "item02")].iloc[0]
    values = ratings[(ratings["condition"] == "model_b") & (ratings["item"] == "item02")]["rating"].to_numpy()
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert (row["n"], row["mean"], row["sd"]) == (
        len(values),
        pytest.approx(values.mean()),
        pytest.approx(values.std(ddof=1)),
    )
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert (row["median"], row["q1"], row["q3"]) == tuple(
        pytest.approx(v) for v in np.percentile(values, [25, 50, 75])[[1, 0, 2]]
    )
    boot = stats.bootstrap((values,), np.mean, n_resamples=20_000, method="BCa", rng=np.random.default_rng(1))
    # Different draws: the intervals agree to bootstrap precision.
    assert row["bca_low"] == pytest.approx(boot.confidence_interval.low, abs=0.6)
    assert row["bca_high"] == pytest.approx(boot.confidence_interval.high, abs=0.6)
    assert row["bca_low"] < row["mean"] < row["bca_high"]


def test_overall_uses_per_participant_means_so_each_listener_counts_once() -> None:
    ratings = known(n_participants=10)
    # p000 rated only one item of model_a, at 0: a pooled mean would weight them 1/37, the
    # per-participant mean weights them 1/10.
    keep = ~((ratings["participant"] == "p000") & (ratings["condition"] == "model_a") & (ratings["item"] != "item00"))
    ratings = ratings[keep].copy()
    ratings.loc[(ratings["participant"] == "p000") & (ratings["condition"] == "model_a"), "rating"] = 0.0
    overall = describe_overall(ratings).set_index("condition")
    wide = participant_means(ratings)
    assert overall.loc["model_a", "mean"] == pytest.approx(wide["model_a"].mean())
    assert overall.loc["model_a", "n"] == 10
    pooled = ratings[ratings["condition"] == "model_a"]["rating"].mean()
    assert overall.loc["model_a", "mean"] < pooled - 5
    assert list(overall.index) == ["reference", "model_a", "model_b", "model_c", "anchor70", "anchor35"]


def test_known_means_are_recovered() -> None:
    overall = describe_overall(known(n_participants=40, n_items=6)).set_index("condition")
    for condition, truth in {"model_a": 80, "model_b": 60, "model_c": 40, "anchor35": 20}.items():
        assert overall.loc[condition, "ci_low"] - 4 < truth < overall.loc[condition, "ci_high"] + 4

"""ACR / DCR (ITU-T P.800, P.808): MOS and DMOS with t intervals against scipy, the P.808 check flag."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evaluation.errors import EvaluationError
from evaluation.paradigms.acr import analyse_acr, validate_acr

TRUE_MOS = {"clean": 4.4, "light": 3.6, "heavy": 2.1}


@pytest.fixture(scope="module")
def votes() -> pd.DataFrame:
    rng = np.random.default_rng(800)
    rows = []
    for p in range(10):
        bias = rng.normal(0, 0.4)
        for condition, mos in TRUE_MOS.items():
            for item in ("i1", "i2", "i3"):
                vote = int(np.clip(np.round(mos + bias + rng.normal(0, 0.7)), 1, 5))
                rows.append((f"p{p}", item, condition, vote, "false" if p == 9 else "true"))
    return pd.DataFrame(rows, columns=["participant", "item", "condition", "rating", "passed_checks"])


def test_mos_and_both_intervals_match_scipy(votes: pd.DataFrame) -> None:
    result = analyse_acr(votes, confidence_level=0.95)
    table = result.tables["conditions"].set_index("condition")
    used = votes[votes["participant"] != "p9"]
    for condition, group in used.groupby("condition"):
        v = group["rating"].astype(float)
        low, high = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
        assert table.loc[condition, "mos"] == pytest.approx(v.mean())
        assert (table.loc[condition, "ci_low"], table.loc[condition, "ci_high"]) == pytest.approx((low, high))
        means = group.assign(rating=v).groupby("participant")["rating"].mean()
        low, high = stats.t.interval(0.95, len(means) - 1, loc=means.mean(), scale=stats.sem(means))
        assert (table.loc[condition, "ci_participant_low"], table.loc[condition, "ci_participant_high"]) == (
            pytest.approx((low, high))
        )
        counts = v.value_counts()
        assert [table.loc[condition, f"votes_{c}"] for c in range(1, 6)] == [int(counts.get(c, 0)) for c in range(1, 6)]
        assert table.loc[condition, "n_votes"] == 27 and table.loc[condition, "n_participants"] == 9
    by_item = result.tables["by_item"]
    assert len(by_item) == 9 and set(by_item.columns) >= {"condition", "item", "mos", "ci_low", "ci_high"}


def test_p808_flag_excludes_and_keep_all_keeps(votes: pd.DataFrame) -> None:
    result = analyse_acr(votes)
    assert result.summary["participants"]["excluded"] == ["p9"]
    screening = result.tables["screening"].set_index("participant")
    assert not screening.loc["p9", "passed_checks"] and screening.loc["p9", "excluded"]
    kept = analyse_acr(votes, apply_screening=False)
    assert kept.summary["participants"]["excluded"] == []
    assert kept.tables["conditions"]["n_votes"].tolist() == [30, 30, 30]
    failing = votes.assign(passed_checks="no")
    nobody = analyse_acr(failing)
    assert nobody.tables["conditions"].empty and [w["code"] for w in nobody.warnings] == ["acr_all_excluded"]


def test_dcr_reports_dmos_and_a_single_vote_has_no_interval() -> None:
    frame = pd.DataFrame(
        [("p1", "i1", "x", 5), ("p2", "i1", "x", 4), ("p1", "i1", "y", 2)],
        columns=["participant", "item", "condition", "rating"],
    )
    result = analyse_acr(frame, method="dcr")
    table = result.tables["conditions"].set_index("condition")
    assert result.paradigm == "dcr" and table.loc["x", "dmos"] == 4.5 and table.loc["y", "dmos"] == 2.0
    assert np.isnan(table.loc["y", "ci_low"])
    record = next(r for r in result.as_dict()["tables"]["conditions"] if r["condition"] == "y")
    assert record["ci_low"] is None and record["ci_high"] is None
    json.dumps(result.as_dict(), allow_nan=False)


@pytest.mark.parametrize(("value", "message"), [("3.5", "whole number in 1..5"), ("6", "1..5"), ("x", "not numeric")])
def test_bad_ratings_are_refused(value: str, message: str) -> None:
    frame = pd.DataFrame(
        [("p1", "i1", "x", "4"), ("p1", "i2", "x", value)], columns=["participant", "item", "condition", "rating"]
    )
    with pytest.raises(EvaluationError, match=message):
        validate_acr(frame)
    with pytest.raises(EvaluationError, match="method must be one of acr, dcr"):
        analyse_acr(frame.iloc[:1], method="ccr")
    flag = frame.iloc[:1].assign(passed_checks="perhaps")
    with pytest.raises(EvaluationError, match="passed_checks must be true or false"):
        validate_acr(flag)

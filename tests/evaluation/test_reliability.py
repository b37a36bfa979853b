"""ICC of the panel against pingouin, test-retest of repeated trials against scipy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats

from evaluation import analyse
from evaluation.errors import EvaluationError
from evaluation.io import validate_ratings
from evaluation.reliability import icc, panel_icc, retest_agreement, split_repeats
from evaluation.report import build_report

from ._data import known

PINGOUIN = {"ICC(2,1)": "ICC(A,1)", "ICC(2,k)": "ICC(A,k)", "ICC(3,1)": "ICC(C,1)", "ICC(3,k)": "ICC(C,k)"}
SETTINGS = {"bootstrap_resamples": 300, "permutation_resamples": 500}


def _pingouin(ratings: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:
    # pingouin rounds its intervals to two decimals unless told otherwise.
    monkeypatch.setitem(pg.options, "round.column.CI95", None)
    data = ratings.assign(target=ratings["condition"] + "/" + ratings["item"])
    return pg.intraclass_corr(data, targets="target", raters="participant", ratings="rating").set_index("Type")


def test_icc_matches_pingouin(monkeypatch: pytest.MonkeyPatch) -> None:
    """pingouin.intraclass_corr (Shrout & Fleiss 1979; McGraw & Wong 1996 intervals) on the same table."""
    ratings = known(n_participants=9, n_items=3, seed=8)
    ours = panel_icc(ratings, {"all": sorted(ratings["condition"].unique())}).set_index("type")
    reference = _pingouin(ratings, monkeypatch)
    for name, theirs in PINGOUIN.items():
        row, ref = ours.loc[name], reference.loc[theirs]
        assert row["icc"] == pytest.approx(ref["ICC"], rel=1e-10)
        assert (row["F"], row["df1"], row["df2"]) == (pytest.approx(ref["F"], rel=1e-10), ref["df1"], ref["df2"])
        assert row["pvalue"] == pytest.approx(ref["pval"], rel=1e-8)
        assert [row["ci_low"], row["ci_high"]] == pytest.approx(list(ref["CI95"]), rel=1e-10)
    assert ours["n_targets"].iloc[0] == 18 and ours["n_raters"].iloc[0] == 9


def test_icc_leaves_out_listeners_with_gaps_and_still_matches_pingouin(monkeypatch: pytest.MonkeyPatch) -> None:
    ratings = known(n_participants=8, n_items=3, seed=9)
    gap = (ratings["participant"] == "p003") & (ratings["condition"] == "model_b") & (ratings["item"] == "item01")
    gappy = ratings[~gap]
    ours = panel_icc(gappy, {"models": ["model_a", "model_b", "model_c"]}).set_index("type")
    complete = ratings[(ratings["participant"] != "p003") & ratings["condition"].str.startswith("model")]
    reference = _pingouin(complete, monkeypatch)
    assert ours["n_raters"].iloc[0] == 7 and ours["n_raters_left_out"].iloc[0] == 1
    for name, theirs in PINGOUIN.items():
        assert ours.loc[name, "icc"] == pytest.approx(reference.loc[theirs, "ICC"], rel=1e-10)
        assert ours.loc[name, "ci_low"] == pytest.approx(reference.loc[theirs, "CI95"][0], rel=1e-10)


def test_icc_intervals_cover_the_true_value() -> None:
    """Monte Carlo: targets N(0, 4), rater offsets N(0, 1), errors N(0, 1): ICC(2,1) = 4 / 6, ICC(3,1) = 0.8."""
    rng = np.random.default_rng(4)
    hits = {"ICC(2,1)": 0, "ICC(3,1)": 0}
    truth = {"ICC(2,1)": 4 / 6, "ICC(3,1)": 0.8}
    reps = 400
    for _ in range(reps):
        matrix = rng.normal(0, 2, (15, 1)) + rng.normal(0, 1, (1, 6)) + rng.normal(0, 1, (15, 6))
        table = icc(matrix).set_index("type")
        for name in hits:
            hits[name] += table.loc[name, "ci_low"] <= truth[name] <= table.loc[name, "ci_high"]
    # Exact F interval for consistency, Satterthwaite's approximation for agreement; MC SE 0.011.
    assert hits["ICC(3,1)"] / reps == pytest.approx(0.95, abs=0.03)
    assert hits["ICC(2,1)"] / reps == pytest.approx(0.95, abs=0.03)


def _with_repeats() -> tuple[pd.DataFrame, pd.DataFrame]:
    ratings = known(n_participants=6, n_items=4, seed=2)
    again = ratings[ratings["item"].isin(["item00", "item01"])].copy()
    noise = np.random.default_rng(5).normal(0, 6, len(again))
    again["rating"] = np.clip(again["rating"] + noise + np.where(again["participant"] == "p001", 5.0, 0.0), 0, 100)
    again["repeat"] = 1
    return ratings, pd.concat([ratings.assign(repeat=0), again], ignore_index=True)


def test_repeated_trials_feed_test_retest_and_leave_the_analysis_alone() -> None:
    """Per-listener Pearson r (scipy.stats.pearsonr), mean absolute and mean differences by hand."""
    first, both = _with_repeats()
    primary, repeats = split_repeats(validate_ratings(both))
    assert len(primary) == len(first) and len(repeats) == 6 * 2 * 6
    table, pooled = retest_agreement(primary, repeats)
    for participant in ("p000", "p001"):
        again = repeats[repeats["participant"] == participant].sort_values(["item", "condition"])
        before = (
            first[first["participant"] == participant]
            .set_index(["item", "condition"])
            .loc[list(zip(again["item"], again["condition"])), "rating"]
        )
        row = table[table["participant"] == participant].iloc[0]
        assert row["n_pairs"] == 12
        assert row["r"] == pytest.approx(stats.pearsonr(before.to_numpy(), again["rating"].to_numpy())[0], rel=1e-10)
        diff = again["rating"].to_numpy() - before.to_numpy()
        assert row["mean_abs_difference"] == pytest.approx(np.abs(diff).mean(), rel=1e-12)
        assert row["mean_difference"] == pytest.approx(diff.mean(), rel=1e-12)
    assert pooled is not None and pooled["n_pairs"] == 72
    plain = analyse(first, None, SETTINGS).stats()
    repeated = analyse(both, None, SETTINGS).stats()
    assert repeated["conditions"] == plain["conditions"]
    assert repeated["n_ratings"]["repeats"] == 72 and plain["reliability"]["test_retest"] is None
    per_listener = repeated["reliability"]["test_retest"]["per_listener"]
    assert [r["participant"] for r in per_listener] == [f"p00{k}" for k in range(6)]


def test_repeated_rows_need_a_repeat_column_with_whole_numbers() -> None:
    first, both = _with_repeats()
    with pytest.raises(EvaluationError, match="number the presentations of a repeated trial in a repeat column"):
        validate_ratings(both.drop(columns="repeat"))
    with pytest.raises(EvaluationError, match="column repeat must hold whole numbers"):
        split_repeats(validate_ratings(both.assign(repeat=both["repeat"] + 0.5)))
    with pytest.raises(EvaluationError, match="duplicate \\(participant, item, condition, repeat\\)"):
        validate_ratings(both.assign(repeat=0))


def test_report_bundle_carries_the_checks(tmp_path: Path) -> None:
    _, both = _with_repeats()
    result = build_report(both, None, SETTINGS, tmp_path)
    for name in ("bounded.csv", "residuals.csv", "icc.csv", "retest.csv", "figures/residuals-qq.svg"):
        assert name in result["files"] and (tmp_path / name).stat().st_size > 0, name
    page = (tmp_path / "report.html").read_text()
    for heading in ("<h2>Bounded scale</h2>", "<h2>Listener reliability</h2>", "Normal Q-Q plot"):
        assert heading in page
    assert "p < 0.001" not in page  # every "<" of the text is escaped
    icc_csv = pd.read_csv(tmp_path / "icc.csv")
    assert set(icc_csv["type"]) == set(PINGOUIN)
    assert len(pd.read_csv(tmp_path / "retest.csv")) == 6

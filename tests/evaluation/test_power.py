"""Power and sample-size planner (evaluation.power) against analytic power, SciPy's tests and
statsmodels' ANOVA."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.power import TTestPower

from evaluation.__main__ import main
from evaluation.errors import EvaluationError
from evaluation.power import (
    Plan,
    VarianceComponents,
    components_from_pilot,
    plan_sample_size,
    t_pvalues,
    wilcoxon_pvalues,
)

ONLY_LISTENER_AND_RESIDUAL = VarianceComponents(
    listener=8.0, item=0.0, listener_condition=0.0, item_condition=0.0, residual=12.0
)


class Cell(NamedTuple):
    listeners: int
    excerpts: int
    power: float
    mc_se: float


def _cells(plan: Plan) -> list[Cell]:
    t = plan.table
    columns = [t[c].to_numpy().tolist() for c in ("listeners", "excerpts", "power", "mc_se")]
    return [Cell(int(n), int(i), float(p), float(s)) for n, i, p, s in zip(*columns)]


def _within(simulated: float, expected: float, replicates: int, k: float = 4.0) -> bool:
    se = math.sqrt(max(expected * (1 - expected), 1e-4) / replicates)
    return abs(simulated - expected) <= k * se


def test_t_power_matches_statsmodels_with_listener_and_residual_variance() -> None:
    """statsmodels TTestPower (noncentral t): listener offsets cancel, d_p ~ N(delta, 2 s_e^2 / I)."""
    replicates = 4000
    plan = plan_sample_size(
        5.0, ONLY_LISTENER_AND_RESIDUAL, test="t", listeners=(6, 12, 20), excerpts=(2, 4, 8), replicates=replicates
    )
    assert len(plan.table) == 9
    for row in _cells(plan):
        dz = 5.0 / math.sqrt(2 * 12.0**2 / row.excerpts)
        expected = TTestPower().power(effect_size=dz, nobs=row.listeners, alpha=0.05)
        assert _within(row.power, expected, replicates), (row, expected)
        assert row.mc_se == pytest.approx(math.sqrt(row.power * (1 - row.power) / replicates))


def _integrated_t_power(delta: float, c: VarianceComponents, n: int, excerpts: int, alpha: float) -> float:
    # Conditional on the excerpts' shared shift w ~ N(0, 2 s_ic^2 / I), each listener's mean
    # difference is N(delta + w, 2 s_pc^2 + 2 s_e^2 / I): noncentral t, averaged over w.
    within = math.sqrt(2 * c.listener_condition**2 + 2 * c.residual**2 / excerpts)
    shared = math.sqrt(2 * c.item_condition**2 / excerpts)
    nodes, weights = np.polynomial.hermite_e.hermegauss(24)
    crit = stats.t.ppf(1 - alpha / 2, n - 1)
    nc = (delta + shared * nodes) / (within / math.sqrt(n))
    # The lower tail by symmetry: nct.cdf loses precision for large noncentralities.
    power = stats.nct.sf(crit, n - 1, nc) + stats.nct.sf(crit, n - 1, -nc)
    return float(np.sum(weights * power) / np.sum(weights))


def test_t_power_matches_integrated_noncentral_t_with_every_component() -> None:
    """Noncentral t (scipy.stats.nct) averaged over the excerpt x condition shift by Gauss-Hermite quadrature."""
    c = VarianceComponents(listener=8.0, item=5.0, listener_condition=6.0, item_condition=4.0, residual=12.0)
    replicates = 4000
    plan = plan_sample_size(8.0, c, test="t", listeners=(8, 16, 32), excerpts=(3, 6, 12), replicates=replicates)
    for row in _cells(plan):
        expected = _integrated_t_power(8.0, c, row.listeners, row.excerpts, 0.05)
        assert _within(row.power, expected, replicates), (row, expected)


@pytest.mark.parametrize("test", ["t", "wilcoxon"])
def test_a_null_effect_is_declared_at_rate_alpha(test: str) -> None:
    """Under no difference (and no excerpt x condition term) a level-alpha test rejects about alpha of the time."""
    c = VarianceComponents(listener=8.0, item=5.0, listener_condition=6.0, item_condition=0.0, residual=12.0)
    replicates = 6000
    plan = plan_sample_size(0.0, c, test=test, listeners=(12, 30), excerpts=(4,), replicates=replicates, seed=7)
    for row in _cells(plan):
        assert _within(row.power, 0.05, replicates), row
    two = plan_sample_size(0.0, c, test=test, listeners=(30,), excerpts=(4,), replicates=replicates, comparisons=2)
    assert _within(float(two.table["power"].iloc[0]), 0.025, replicates)


def test_comparisons_apply_the_first_holm_threshold() -> None:
    """Holm (1979) rejects whatever has p <= alpha / m: m comparisons at alpha equal one at alpha / m."""
    kw: dict[str, Any] = dict(listeners=(10, 20), excerpts=(4, 8), replicates=500, seed=3)
    three = plan_sample_size(7.0, comparisons=3, alpha=0.06, **kw)
    one = plan_sample_size(7.0, comparisons=1, alpha=0.02, **kw)
    np.testing.assert_array_equal(three.table["power"].to_numpy(), one.table["power"].to_numpy())
    assert (three.table["power"] < plan_sample_size(7.0, comparisons=1, alpha=0.06, **kw).table["power"]).any()


def test_more_listeners_or_excerpts_never_lower_power_beyond_monte_carlo_error() -> None:
    plan = plan_sample_size(6.0, listeners=(6, 10, 16, 24, 36), excerpts=(2, 4, 8), replicates=800)
    table = plan.table.set_index(["listeners", "excerpts"]).sort_index()
    for i in (2, 4, 8):
        column = table.xs(i, level="excerpts")
        power, se = column["power"].to_numpy(), column["mc_se"].to_numpy()
        tolerance = 3 * np.sqrt(se[1:] ** 2 + se[:-1] ** 2)
        assert (np.diff(power) >= -tolerance).all(), column
    for n in (6, 10, 16, 24, 36):
        row = table.xs(n, level="listeners")
        assert (row["power"].diff().dropna() >= -3 * math.sqrt(2) * row["mc_se"].max()).all(), row
    assert table["power"].iloc[-1] > table["power"].iloc[0] + 0.3


def test_recommendation_is_the_smallest_design_reaching_the_target() -> None:
    plan = plan_sample_size(8.0, listeners=(8, 16, 24, 32, 48), excerpts=(4, 8, 12), replicates=400)
    reached = plan.table[plan.table["power"] >= 0.8]
    assert len(reached) and plan.recommendation is not None
    fewest = (reached["listeners"] * reached["excerpts"]).min()
    assert plan.recommendation["listeners"] * plan.recommendation["excerpts"] == fewest
    by = {b["excerpts"]: b["listeners"] for b in plan.by_excerpts}
    for i in (4, 8, 12):
        got = reached[reached["excerpts"] == i]["listeners"]
        assert by[i] == (int(got.min()) if len(got) else None)
    hopeless = plan_sample_size(1.0, listeners=(4, 6), excerpts=(2,), replicates=200)
    assert hopeless.recommendation is None


def test_clipping_at_the_top_of_the_scale_costs_power() -> None:
    small = VarianceComponents(listener=4.0, item=3.0, listener_condition=4.0, item_condition=3.0, residual=8.0)
    kw: dict[str, Any] = dict(listeners=(12,), excerpts=(4,), replicates=1000, seed=5)
    free = plan_sample_size(8.0, small, **kw)
    middle = plan_sample_size(8.0, small, level=50.0, **kw)
    top = plan_sample_size(8.0, small, level=92.0, **kw)
    # Far from both ends no rating is clipped: the very same draws, the very same power.
    assert middle.table["power"].iloc[0] == free.table["power"].iloc[0]
    # Same draws, clipped at 100: a paired comparison, so a few points of power is a real loss.
    assert top.table["power"].iloc[0] < free.table["power"].iloc[0] - 0.03


def test_wilcoxon_pvalues_match_scipy_row_by_row() -> None:
    """scipy.stats.wilcoxon(zero_method='pratt') on each row, as the report calls it, ties and zeros included."""
    rng = np.random.default_rng(11)
    for n, rows in ((4, 60), (9, 60), (13, 4), (20, 60), (60, 20)):
        d = np.round(rng.normal(0.3, 1.5, (rows, n))) / 2
        d[: rows // 3] = rng.normal(0.3, 1.0, (rows // 3, n))
        d[-1] = 0.0
        ours = wilcoxon_pvalues(d)
        reference = [
            1.0 if not np.any(row != 0) else float(stats.wilcoxon(row, zero_method="pratt").pvalue) for row in d
        ]
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-15)


def test_t_pvalues_match_scipy() -> None:
    """scipy.stats.ttest_1samp on each row."""
    d = np.random.default_rng(2).normal(0.4, 1.0, (50, 9))
    np.testing.assert_allclose(t_pvalues(d), stats.ttest_1samp(d, 0.0, axis=1).pvalue, rtol=1e-10)


# --------------------------------------------------------------------------- pilot estimates


def _pilot(n_p: int, n_i: int, n_c: int, sds: dict[str, float], seed: int = 0, pi: float = 3.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (
        50.0
        + np.arange(n_c) * 2.0
        + rng.normal(0, sds["listener"], (n_p, 1, 1))
        + rng.normal(0, sds["item"], (1, n_i, 1))
        + rng.normal(0, pi, (n_p, n_i, 1))
        + rng.normal(0, sds["listener_condition"], (n_p, 1, n_c))
        + rng.normal(0, sds["item_condition"], (1, n_i, n_c))
        + rng.normal(0, sds["residual"], (n_p, n_i, n_c))
    )
    index = pd.MultiIndex.from_product(
        [[f"p{p}" for p in range(n_p)], [f"i{i}" for i in range(n_i)], [f"model_{c}" for c in range(n_c)]],
        names=["participant", "item", "condition"],
    )
    frame = index.to_frame(index=False)
    # Beyond 3 SDs of 50 a rating would leave the scale; so few are clipped that it does not show.
    frame["rating"] = np.clip(y.ravel(), 0.0, 100.0)
    return frame


TRUE = {"listener": 8.0, "item": 5.0, "listener_condition": 6.0, "item_condition": 4.0, "residual": 10.0}


def test_pilot_estimates_follow_from_statsmodels_mean_squares() -> None:
    """Mean squares from statsmodels' OLS ANOVA table, turned into variances by the expected mean squares."""
    frame = _pilot(7, 5, 3, TRUE, seed=4)
    fit = smf.ols(
        "rating ~ C(participant) + C(item) + C(condition) + C(participant):C(item)"
        " + C(participant):C(condition) + C(item):C(condition)",
        data=frame,
    ).fit()
    ms = anova_lm(fit, typ=1)["mean_sq"]
    n_p, n_i, n_c = 7, 5, 3
    e = ms["Residual"]
    expected = {
        "residual": e,
        "listener_condition": (ms["C(participant):C(condition)"] - e) / n_i,
        "item_condition": (ms["C(item):C(condition)"] - e) / n_p,
        "listener": (ms["C(participant)"] - ms["C(participant):C(item)"] - ms["C(participant):C(condition)"] + e)
        / (n_i * n_c),
        "item": (ms["C(item)"] - ms["C(participant):C(item)"] - ms["C(item):C(condition)"] + e) / (n_p * n_c),
    }
    got = components_from_pilot(frame).components.as_dict()
    for name, variance in expected.items():
        assert got[name] == pytest.approx(math.sqrt(max(variance, 0.0)), rel=1e-9, abs=1e-9), name


def test_pilot_estimates_recover_known_components_in_a_large_pilot() -> None:
    estimate = components_from_pilot(_pilot(80, 40, 4, TRUE, seed=9))
    got = estimate.components.as_dict()
    for name, sd in TRUE.items():
        low, high = estimate.intervals[name]
        assert low <= sd <= high, (name, got[name], estimate.intervals[name])
        assert got[name] == pytest.approx(sd, rel=0.25), name
    assert estimate.notes == []


def test_a_tiny_pilot_says_how_little_it_pins_down() -> None:
    frame = _pilot(3, 2, 2, TRUE, seed=1)
    reference = frame.drop_duplicates(["participant", "item"]).assign(condition="reference", rating=98.0)
    frame = pd.concat([frame, reference])
    estimate = components_from_pilot(frame)
    assert estimate.conditions == ["model_0", "model_1"]
    assert estimate.listeners == 3 and estimate.items == 2
    assert any("small pilot" in n for n in estimate.notes)
    assert all(estimate.df[k] < 10 for k in ("listener_condition", "item_condition"))
    assert all(hi > 1.5 * lo for lo, hi in estimate.intervals.values() if lo > 0)


def test_a_pilot_with_gaps_keeps_its_largest_complete_block() -> None:
    frame = _pilot(6, 4, 3, TRUE, seed=2)
    frame = frame[~((frame["participant"] == "p5") & (frame["item"] == "i0"))]
    estimate = components_from_pilot(frame)
    assert (estimate.listeners, estimate.items) == (5, 4)
    assert estimate.left_out == {"listeners": ["p5"], "items": []}
    assert any("Left out" in n for n in estimate.notes)


def test_a_negative_anova_estimate_is_set_to_zero_and_said() -> None:
    no_item_condition = {**TRUE, "item_condition": 0.0, "listener_condition": 0.0}
    estimates = [components_from_pilot(_pilot(6, 4, 3, no_item_condition, seed=s)) for s in range(6)]
    zeroed = [e for e in estimates if e.components.item_condition == 0.0 or e.components.listener_condition == 0.0]
    assert zeroed and all(any("negative" in n for n in e.notes) for e in zeroed)


@pytest.mark.parametrize(
    ("frame", "conditions", "message"),
    [
        (pd.DataFrame(columns=["participant", "item", "condition", "rating"]), None, "no ratings"),
        (_pilot(1, 4, 3, TRUE), None, "at least 2 listeners"),
        (_pilot(4, 1, 3, TRUE), None, "2 excerpts"),
        (_pilot(4, 3, 3, TRUE), ["model_0", "nope"], "no condition"),
        (_pilot(4, 3, 3, TRUE), ["model_0"], "at least two conditions"),
    ],
)
def test_bad_pilots_are_refused_clearly(frame: pd.DataFrame, conditions: list[str] | None, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        components_from_pilot(frame, conditions)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"power": 1.0}, "power must lie strictly between 0 and 1"),
        ({"power": 0.0}, "power must lie strictly between 0 and 1"),
        ({"power": float("nan")}, "power must be a finite number"),
        ({"alpha": 1.5}, "alpha must lie strictly between 0 and 1"),
        ({"comparisons": 0}, "comparisons must be a whole number of at least 1"),
        ({"replicates": 10}, "replicates must lie between 100"),
        ({"listeners": (1, 8)}, "listeners must lie between 2"),
        ({"excerpts": ()}, "excerpts: give at least one value"),
        ({"excerpts": (2.5,)}, "excerpts must be whole numbers"),
        ({"test": "anova"}, "test must be one of"),
        ({"level": 98.0}, "must both lie within 0..100"),
        ({"difference": 150.0}, "difference must lie within"),
    ],
)
def test_bad_planner_input_is_refused_clearly(kwargs: dict[str, Any], message: str) -> None:
    args = {"difference": 5.0, "replicates": 100, **kwargs}
    with pytest.raises(EvaluationError, match=message):
        plan_sample_size(**args)


@pytest.mark.parametrize(
    ("sds", "message"),
    [({"residual": -1.0}, "residual_sd must not be negative"), ({"listener": float("inf")}, "listener_sd must be")],
)
def test_bad_sds_are_refused_clearly(sds: dict[str, float], message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        VarianceComponents(**sds)


# --------------------------------------------------------------------------- command line


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_plan_prints_the_table_and_the_recommendation() -> None:
    code, out, err = _run(
        ["plan", "--difference", "8", "--listeners", "8,16,32", "--excerpts", "4,8", "--replicates", "300"]
    )
    assert code == 0, err
    assert "listeners \\ excerpts" in out and "Smallest design reaching power 0.8" in out
    assert "SDs (stated" in out and "[100%]" in err
    rows = [line.split() for line in out.splitlines() if line.strip().split(" ")[0] in ("8", "16", "32")]
    assert [r[0] for r in rows] == ["8", "16", "32"] and all(len(r) == 5 for r in rows)


def test_cli_plan_json_from_a_pilot(tmp_path: Path) -> None:
    path = tmp_path / "pilot.csv"
    _pilot(6, 4, 3, TRUE, seed=3).to_csv(path, index=False)
    code, out, err = _run(
        [
            "plan",
            "--difference",
            "6",
            "--pilot",
            str(path),
            "--residual-sd",
            "11",
            "--listeners",
            "10,20",
            "--excerpts",
            "4",
            "--replicates",
            "200",
            "--comparisons",
            "3",
            "--json",
            "--quiet",
        ]
    )
    assert code == 0, err
    assert err == ""
    data = json.loads(out)
    assert data["pilot"]["listeners"] == 6 and data["pilot"]["items"] == 4
    assert data["components"]["residual"] == 11.0
    assert data["components"]["listener"] == pytest.approx(data["pilot"]["components"]["listener"])
    assert data["threshold"] == pytest.approx(0.05 / 3)
    assert [(r["listeners"], r["excerpts"]) for r in data["table"]] == [(10, 4), (20, 4)]
    assert all(0 <= r["power"] <= 1 and r["mc_se"] >= 0 for r in data["table"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan", "--difference", "5", "--power", "1.2"], "power must lie strictly between 0 and 1"),
        (["plan", "--difference", "5", "--residual-sd", "-2"], "residual_sd must not be negative"),
        (["plan", "--difference", "5", "--pilot", "/nonexistent/pilot.csv"], "does not exist"),
    ],
)
def test_cli_plan_bad_input_exits_2(argv: list[str], message: str) -> None:
    code, out, err = _run(argv + ["--quiet"])
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err


def test_cli_plan_bad_grid_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "--difference", "5", "--listeners", "8,x"])
    assert exit_info.value.code == 2
    assert "whole numbers separated by commas" in capsys.readouterr().err

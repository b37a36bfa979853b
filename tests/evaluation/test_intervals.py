"""Intervals of every difference: simultaneous t intervals, Holm-compatible bounds, d_z and rank-biserial intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests

from evaluation.intervals import (
    cohen_dz_interval,
    holm_compatible_intervals,
    interval_records,
    interval_table,
    noncentral_t_interval,
    pairwise_intervals,
    rank_biserial_interval,
)


@pytest.fixture(scope="module")
def differences() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.normal(shift, 8.0, 18) for shift in (0.0, 2.0, 6.0, -7.0, 0.5)]


def test_t_tests_and_intervals_match_scipy_and_statsmodels(differences) -> None:
    """Paired t, marginal and Bonferroni intervals against scipy.stats.ttest_rel; Holm against statsmodels."""
    table = interval_table(differences, 0.95)
    m = len(differences)
    for row, d in zip(table.itertuples(), differences):
        reference = stats.ttest_rel(d, np.zeros_like(d))
        assert row.t == pytest.approx(reference.statistic, rel=1e-12)
        assert row.pvalue_t == pytest.approx(reference.pvalue, rel=1e-10)
        marginal = reference.confidence_interval(0.95)
        assert (row.ci_low, row.ci_high) == pytest.approx((marginal.low, marginal.high), abs=1e-10)
        joint = reference.confidence_interval(1 - 0.05 / m)
        assert (row.ci_sim_low, row.ci_sim_high) == pytest.approx((joint.low, joint.high), abs=1e-10)
    expected = multipletests(table["pvalue_t"], method="holm")[1]
    np.testing.assert_allclose(table["pvalue_t_holm"], expected, rtol=1e-12)


def test_holm_compatible_intervals_reject_exactly_where_holm_does(differences) -> None:
    """Strassburger & Bretz (2008): a bound excludes 0 iff Holm on the 2m one-sided t tests rejects that side."""
    rng = np.random.default_rng(5)
    for trial in range(30):
        data = [rng.normal(shift, 8.0, 14) for shift in rng.normal(0.0, 6.0, 4)]
        table = interval_table(data, 0.95)
        greater = [stats.ttest_1samp(d, 0.0, alternative="greater").pvalue for d in data]
        less = [stats.ttest_1samp(d, 0.0, alternative="less").pvalue for d in data]
        rejected = _holm_rejects(np.array(greater + less), 0.05)
        assert list(table["ci_holm_low"] >= 0) == list(rejected[:4]), trial
        assert list(table["ci_holm_high"] <= 0) == list(rejected[4:]), trial
        # Every bound not set to 0 is theta -/+ t(1 - alpha / (2m - #rejected)) se.
        critical = stats.t.ppf(1 - 0.05 / (8 - rejected.sum()), table["df"])
        se = table["sd"] / np.sqrt(table["n"])
        free = ~rejected[:4]
        np.testing.assert_allclose(
            table["ci_holm_low"][free], (table["mean_difference"] - critical * se)[free], rtol=1e-12
        )


def _holm_rejects(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm (1979) step-down, written out: reject in order while p_(k) <= alpha / (m - k)."""
    rejected = np.zeros(p.size, dtype=bool)
    for k, index in enumerate(np.argsort(p)):
        if p[index] > alpha / (p.size - k):
            break
        rejected[index] = True
    return rejected


def test_written_out_holm_agrees_with_statsmodels() -> None:
    """The reference step-down above against statsmodels' multipletests (called once: it runs gc.collect)."""
    p = np.array([0.001, 0.02, 0.013, 0.3, 0.0125, 0.04, 0.011, 0.6])
    np.testing.assert_array_equal(_holm_rejects(p, 0.05), multipletests(p, alpha=0.05, method="holm")[0])


def test_simultaneous_intervals_hold_their_joint_coverage() -> None:
    """Joint coverage of the Holm-compatible and Bonferroni intervals is at least 95 % (simulation, 1000 runs)."""
    rng = np.random.default_rng(2)
    truth = np.array([0.0, 0.0, 3.0, -5.0])
    n, runs = 12, 1000
    data = truth[None, :, None] + rng.normal(0.0, 6.0, (runs, 4, n))
    mean, sd = data.mean(axis=2), data.std(axis=2, ddof=1)
    se, df = sd / np.sqrt(n), np.full(4, n - 1.0)
    holm_cover = bonf_cover = 0
    for k in range(runs):
        low, high = holm_compatible_intervals(mean[k], se[k], df)
        holm_cover += bool(np.all((low <= truth) & (truth <= high)))
        table = interval_table(list(data[k]), 0.95) if k < 100 else None
        if table is not None:
            bonf_cover += bool(np.all((table["ci_sim_low"] <= truth) & (truth <= table["ci_sim_high"])))
    assert holm_cover / runs >= 0.94
    assert bonf_cover / 100 >= 0.9


def test_cohen_dz_exact_interval_matches_a_root_finder_and_pingouin() -> None:
    """d_z = t / sqrt(n); its interval inverts the noncentral t cdf (scipy.stats.nct + brentq); near pingouin's."""
    rng = np.random.default_rng(3)
    d = rng.normal(4.0, 8.0, 30)
    t = stats.ttest_1samp(d, 0.0).statistic
    dz, low, high = cohen_dz_interval(np.array([t]), np.array([30.0]))
    assert dz[0] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)

    def solve(q: float) -> float:
        return optimize.brentq(lambda nc: stats.nct.cdf(t, 29, nc) - q, t - 10, t + 10, xtol=1e-12)

    assert low[0] == pytest.approx(solve(0.975) / np.sqrt(30), abs=1e-8)
    assert high[0] == pytest.approx(solve(0.025) / np.sqrt(30), abs=1e-8)
    approx = pg.compute_esci(stat=dz[0], nx=30, ny=30, paired=True, eftype="cohen", confidence=0.95, decimals=6)
    assert (low[0], high[0]) == pytest.approx(tuple(approx), abs=0.05)


def test_noncentral_interval_handles_extreme_and_missing_t() -> None:
    """Large t with few df (slow tails) and NaN; every root checked against scipy.stats.nct.cdf."""
    t = np.array([0.0, -2.5, 112.0, -40.0, np.nan])
    df = np.array([19.0, 10.0, 11.0, 199.0, 5.0])
    low, high = noncentral_t_interval(t, df)
    finite = np.isfinite(t)
    np.testing.assert_allclose(stats.nct.cdf(t[finite], df[finite], low[finite]), 0.975, atol=1e-9)
    np.testing.assert_allclose(stats.nct.cdf(t[finite], df[finite], high[finite]), 0.025, atol=1e-9)
    assert np.isnan(low[-1]) and np.isnan(high[-1])


def test_cohen_dz_interval_covers() -> None:
    """The exact interval covers the true d_z about 95 % of the time (simulation, 4000 runs, one vectorised call)."""
    rng = np.random.default_rng(8)
    n, true = 15, 0.5
    data = rng.normal(true, 1.0, (4000, n))
    t = data.mean(axis=1) / (data.std(axis=1, ddof=1) / np.sqrt(n))
    _, low, high = cohen_dz_interval(t, np.full(4000, float(n)))
    assert np.mean((low <= true) & (true <= high)) == pytest.approx(0.95, abs=0.015)


def test_rank_biserial_and_its_interval() -> None:
    """r against pingouin's RBC; r / SE(r) equals scipy's normal-approximation Wilcoxon z (no ties, no zeros)."""
    rng = np.random.default_rng(4)
    d = rng.normal(1.0, 3.0, 25)
    row = interval_table([d]).iloc[0]
    assert row["rank_biserial"] == pytest.approx(pg.wilcoxon(d, np.zeros(25))["RBC"].iloc[0], abs=1e-12)
    z = stats.wilcoxon(d, method="approx", correction=False).zstatistic
    se = np.sqrt(25 * 26 * 51 / 6) / (25 * 26 / 2)
    assert abs(row["rank_biserial"]) / se == pytest.approx(abs(z), rel=1e-10)
    expected = np.tanh(np.arctanh(row["rank_biserial"]) + np.array([-1, 1]) * stats.norm.ppf(0.975) * se)
    assert (row["rank_biserial_low"], row["rank_biserial_high"]) == pytest.approx(tuple(expected), abs=1e-12)
    low, high = rank_biserial_interval(np.array([0.5]), np.array([1.0]))
    assert np.isnan(low[0]) and np.isnan(high[0])


def test_pairwise_intervals_and_records() -> None:
    """Pairs of a wide table, pairwise complete; intervals fold into [low, high] entries for stats.json."""
    wide = pd.DataFrame({"a": [60.0, 70, 65, 80, np.nan], "b": [50.0, 66, 60, 71, 40], "c": [40.0, 41, 55, 50, 39]})
    table = pairwise_intervals(wide, [("a", "b"), ("b", "c")])
    assert list(table["n"]) == [4, 5]
    assert table["mean_difference"].iloc[0] == pytest.approx(np.mean([10, 4, 5, 9]))
    record = interval_records(table)[0]
    assert record["ci_simultaneous"] == [table["ci_sim_low"].iloc[0], table["ci_sim_high"].iloc[0]]
    assert {"ci", "ci_holm", "cohen_dz_ci", "rank_biserial_ci"} <= set(record)
    assert "ci_low" not in record and "rank_biserial_high" not in record
    empty = interval_table([])
    assert empty.empty and "ci_sim_low" in empty.columns

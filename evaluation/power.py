"""Power and sample size for a MUSHRA test, by simulating the data the test will produce.

The data-generating model is the crossed random-effects model of a MUSHRA test (Baayen,
Davidson & Bates 2008, "Mixed-effects modeling with crossed random effects for subjects
and items"): the rating of listener ``p`` on excerpt ``i`` under condition ``c`` is

    y[p, i, c] = mu[c] + u[p] + v[i] + uc[p, c] + vc[i, c] + e[p, i, c]

with independent normal listener (``u``), item (``v``), listener x condition (``uc``),
item x condition (``vc``) and residual (``e``) terms, each with its own SD. The planned
comparison is between two conditions whose means differ by ``difference`` rating points.
Listener and item main effects cancel in a within-listener, within-item difference; they
matter only when ratings are clipped to the 0..100 scale (``level`` given).

Each replicate draws a whole test (``listeners`` x ``excerpts`` x 2 conditions), averages
each listener's ratings across excerpts, and applies the test the report uses as its
primary pairwise test (``evaluation.nonparametric.pairwise_wilcoxon``: Wilcoxon signed-rank,
Pratt's zeros, two-sided, on per-listener means) or a paired t-test. With ``comparisons``
= m > 1 the comparison is declared when p <= alpha / m: Holm (1979) rejects every
hypothesis whose p is at most alpha / m, so this is a lower bound on the Holm power,
reached when the other comparisons show nothing. Power is the share of replicates
declared, with Monte Carlo SE sqrt(P (1 - P) / R).

Replicates are drawn once for the largest design and the smaller designs use its first
listeners and excerpts (common random numbers), so neighbouring cells differ by their
design, not by their noise; each cell's estimate is still an average of R independent
replicates.

Variance components can be stated or estimated from a pilot with the ANOVA
(method-of-moments) estimator of a balanced listener x item x condition table (Searle,
Casella & McCulloch 1992, "Variance Components", ch. 4): unbiased, but negative
estimates are set to zero and a pilot of a few listeners pins them down poorly; each
estimate carries Satterthwaite (1946) degrees of freedom and an approximate 95 % interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .errors import EvaluationError
from .io import condition_kinds, validate_ratings
from .kinds import MODEL, order_conditions

Progress = Callable[[str, float], None]

COMPONENTS = ("listener", "item", "listener_condition", "item_condition", "residual")
COMPONENT_LABELS = {
    "listener": "listener",
    "item": "excerpt",
    "listener_condition": "listener x condition",
    "item_condition": "excerpt x condition",
    "residual": "residual",
}
TESTS = {
    "wilcoxon": "Wilcoxon signed-rank (Pratt), two-sided, on per-listener means (the report's pairwise test)",
    "t": "paired t-test, two-sided, on per-listener means",
}
DEFAULT_LISTENERS = (8, 12, 16, 20, 24, 32, 40, 48)
DEFAULT_EXCERPTS = (4, 6, 8, 12)
#: Stated defaults (rating points) for planning without a pilot: the order of magnitude of
#: per-rating spread in MUSHRA tests of codecs and effects. A pilot's estimate is better.
DEFAULT_COMPONENTS = {"listener": 8.0, "item": 5.0, "listener_condition": 6.0, "item_condition": 5.0, "residual": 12.0}
#: Upper bound on random numbers held at once (per chunk of replicates).
CHUNK_ELEMENTS = 2_000_000
MAX_LISTENERS = 1000
MAX_EXCERPTS = 500
MAX_REPLICATES = 100_000


@dataclass(frozen=True)
class VarianceComponents:
    """SDs (rating points) of the five random terms of the MUSHRA model (see the module docstring)."""

    listener: float = DEFAULT_COMPONENTS["listener"]
    item: float = DEFAULT_COMPONENTS["item"]
    listener_condition: float = DEFAULT_COMPONENTS["listener_condition"]
    item_condition: float = DEFAULT_COMPONENTS["item_condition"]
    residual: float = DEFAULT_COMPONENTS["residual"]

    def __post_init__(self) -> None:
        for name in COMPONENTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise EvaluationError(f"{name}_sd must be a finite number, got {value!r}")
            if value < 0:
                raise EvaluationError(f"{name}_sd must not be negative, got {value:g}")
            if value > 1000:
                raise EvaluationError(f"{name}_sd of {value:g} rating points is beyond any 0..100 scale")

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    def difference_sd(self, excerpts: int) -> tuple[float, float]:
        """SDs of one listener's mean difference between two conditions over ``excerpts`` excerpts:
        (across listeners, shared by all listeners through the excerpts drawn)."""
        within = math.sqrt(2 * self.listener_condition**2 + 2 * self.residual**2 / excerpts)
        shared = math.sqrt(2 * self.item_condition**2 / excerpts)
        return within, shared


@dataclass
class PilotEstimate:
    """Variance components estimated from a pilot, with what they rest on."""

    components: VarianceComponents
    listeners: int
    items: int
    conditions: list[str]
    df: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    left_out: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "components": self.components.as_dict(),
            "listeners": self.listeners,
            "items": self.items,
            "conditions": list(self.conditions),
            "df": dict(self.df),
            "ci95": {k: [float(lo), float(hi)] for k, (lo, hi) in self.intervals.items()},
            "left_out": {k: list(v) for k, v in self.left_out.items()},
            "notes": list(self.notes),
        }


def _balanced_block(cube: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    # Greedy: drop the listener or excerpt with the largest share of missing cells until
    # every listener rated every excerpt under every condition (the ANOVA needs balance).
    dropped_p: list[str] = []
    dropped_i: list[str] = []
    while len(cube) and cube.isna().to_numpy().any():
        by_p = cube.isna().groupby(level="participant").mean().mean(axis=1)
        by_i = cube.isna().groupby(level="item").mean().mean(axis=1)
        if by_p.max() >= by_i.max():
            worst = str(by_p.idxmax())
            dropped_p.append(worst)
            cube = cube.drop(index=worst, level="participant")
        else:
            worst = str(by_i.idxmax())
            dropped_i.append(worst)
            cube = cube.drop(index=worst, level="item")
    return cube, dropped_p, dropped_i


def _sd_interval(estimate_var: float, df: float) -> tuple[float, float]:
    if estimate_var <= 0 or not math.isfinite(df) or df <= 0:
        return (0.0, math.inf)
    lo = df * estimate_var / stats.chi2.ppf(0.975, df)
    hi = df * estimate_var / stats.chi2.ppf(0.025, df)
    return (math.sqrt(lo), math.sqrt(hi))


def components_from_pilot(ratings: pd.DataFrame, conditions: Sequence[str] | None = None) -> PilotEstimate:
    """ANOVA (method-of-moments) estimates of the five SDs from a pilot's long ratings table.

    ``ratings`` has the analysis's columns (participant, item, condition, rating). The
    estimate uses ``conditions`` if given, else the model conditions when there are at
    least two (the hidden reference and anchors sit at the ends of the scale with little
    spread), else every condition. Listeners and excerpts with missing cells are left out
    until the table is complete. With one rating per cell the expected mean squares of
    the listener (P) x item (I) x condition (C) table are (Searle et al. 1992, ch. 4):
    MS_PIC = s2_e; MS_PC = s2_e + I s2_pc; MS_IC = s2_e + P s2_ic;
    MS_PI = s2_e + C s2_pi; MS_P = s2_e + C s2_pi + I s2_pc + I C s2_p;
    MS_I = s2_e + C s2_pi + P s2_ic + P C s2_i. The listener x item term s2_pi cancels in
    every within-listener, within-item difference and is not returned.
    """
    if not isinstance(ratings, pd.DataFrame) or ratings.empty:
        raise EvaluationError("the pilot has no ratings: run pilot sessions or state the SDs")
    table = validate_ratings(ratings, source="(pilot)")
    kinds = condition_kinds(table)
    notes: list[str] = []
    if conditions is not None:
        chosen = [str(c) for c in conditions]
        unknown = [c for c in chosen if c not in kinds]
        if unknown:
            raise EvaluationError(f"pilot has no condition(s) {', '.join(unknown)}; it has {', '.join(kinds)}")
    else:
        ordered = order_conditions(kinds)
        chosen = [c for c in ordered if kinds[c] == MODEL]
        if len(chosen) < 2:
            chosen = ordered
            notes.append(
                "The pilot has fewer than two model conditions, so every condition (reference and anchors "
                "included) enters the estimate; their spread near the ends of the scale can understate it."
            )
    if len(chosen) < 2:
        raise EvaluationError("the pilot needs at least two conditions to estimate condition-related variance")
    used = table[table["condition"].isin(chosen)]
    cube = used.pivot_table(index=["participant", "item"], columns="condition", values="rating", aggfunc="first")
    cube = cube.reindex(
        pd.MultiIndex.from_product(
            [sorted(used["participant"].unique()), sorted(used["item"].unique())], names=["participant", "item"]
        )
    )[chosen]
    cube, dropped_p, dropped_i = _balanced_block(cube)
    participants = list(dict.fromkeys(cube.index.get_level_values("participant")))
    items = list(dict.fromkeys(cube.index.get_level_values("item")))
    n_p, n_i, n_c = len(participants), len(items), len(chosen)
    if n_p < 2 or n_i < 2:
        raise EvaluationError(
            f"the pilot needs at least 2 listeners who rated the same 2 excerpts under every condition; "
            f"the largest complete block has {n_p} listener(s) and {n_i} excerpt(s)"
        )
    y = cube.to_numpy(dtype=float).reshape(n_p, n_i, n_c)
    m = y.mean()
    mp, mi, mc = y.mean(axis=(1, 2)), y.mean(axis=(0, 2)), y.mean(axis=(0, 1))
    mpi, mpc, mic = y.mean(axis=2), y.mean(axis=1), y.mean(axis=0)
    df = {
        "P": n_p - 1,
        "I": n_i - 1,
        "PI": (n_p - 1) * (n_i - 1),
        "PC": (n_p - 1) * (n_c - 1),
        "IC": (n_i - 1) * (n_c - 1),
        "E": (n_p - 1) * (n_i - 1) * (n_c - 1),
    }
    ss = {
        "P": n_i * n_c * np.sum((mp - m) ** 2),
        "I": n_p * n_c * np.sum((mi - m) ** 2),
        "PI": n_c * np.sum((mpi - mp[:, None] - mi[None, :] + m) ** 2),
        "PC": n_i * np.sum((mpc - mp[:, None] - mc[None, :] + m) ** 2),
        "IC": n_p * np.sum((mic - mi[:, None] - mc[None, :] + m) ** 2),
        "E": np.sum(
            (
                y
                - mpi[:, :, None]
                - mpc[:, None, :]
                - mic[None, :, :]
                + mp[:, None, None]
                + mi[None, :, None]
                + mc[None, None, :]
                - m
            )
            ** 2
        ),
    }
    ms = {k: float(ss[k] / df[k]) for k in ss}
    # Each variance is a linear combination sum(a_k MS_k); Satterthwaite's df for it.
    combos = {
        "residual": {"E": 1.0},
        "listener_condition": {"PC": 1 / n_i, "E": -1 / n_i},
        "item_condition": {"IC": 1 / n_p, "E": -1 / n_p},
        "listener": {"P": 1 / (n_i * n_c), "PI": -1 / (n_i * n_c), "PC": -1 / (n_i * n_c), "E": 1 / (n_i * n_c)},
        "item": {"I": 1 / (n_p * n_c), "PI": -1 / (n_p * n_c), "IC": -1 / (n_p * n_c), "E": 1 / (n_p * n_c)},
    }
    sds: dict[str, float] = {}
    dfs: dict[str, float] = {}
    intervals: dict[str, tuple[float, float]] = {}
    zeroed = []
    for name, combo in combos.items():
        variance = sum(a * ms[k] for k, a in combo.items())
        denominator = sum((a * ms[k]) ** 2 / df[k] for k, a in combo.items())
        dof = variance**2 / denominator if variance > 0 and denominator > 0 else 0.0
        if variance <= 0:
            zeroed.append(COMPONENT_LABELS[name])
        sds[name] = math.sqrt(max(variance, 0.0))
        dfs[name] = float(dof)
        intervals[name] = _sd_interval(variance, dof)
    if zeroed:
        which = " and ".join(zeroed)
        plural = "s" if len(zeroed) > 1 else ""
        notes.append(
            f"The ANOVA estimate{plural} of the {which} variance{plural} came out negative and "
            f"{'are' if plural else 'is'} set to zero: the pilot cannot tell {'them' if plural else 'it'} from zero, "
            "and the true value may well be larger."
        )
    thin = [f"{COMPONENT_LABELS[k]} ({dfs[k]:.1f})" for k in ("listener_condition", "item_condition") if dfs[k] < 10]
    if n_p < 5 or n_i < 3 or thin:
        notes.append(
            f"A small pilot ({n_p} listeners, {n_i} excerpts): the SDs that set the power rest on few degrees of "
            f"freedom{': ' + ', '.join(thin) if thin else ''}; their 95 % intervals are wide, so plan with the "
            "upper ends too."
        )
    if dropped_p or dropped_i:
        notes.append(f"Left out to make the table complete: {len(dropped_p)} listener(s), {len(dropped_i)} excerpt(s).")
    return PilotEstimate(
        components=VarianceComponents(**sds),
        listeners=n_p,
        items=n_i,
        conditions=list(chosen),
        df=dfs,
        intervals=intervals,
        left_out={"listeners": dropped_p, "items": dropped_i},
        notes=notes,
    )


# --------------------------------------------------------------------------- tests on many replicates


def wilcoxon_pvalues(d: np.ndarray) -> np.ndarray:
    """Two-sided Wilcoxon signed-rank p-values (Pratt's zeros) of each row of ``d`` (replicates x listeners).

    Row for row the same p as ``scipy.stats.wilcoxon(row, zero_method="pratt")``, as the
    report computes it (``pairwise_wilcoxon``): exact when a row has no ties or zeros,
    otherwise a permutation (n <= 13) or the normal approximation. SciPy decides the
    method for a whole array at once, so rows with and without ties go in separately.
    A row of zeros gets p = 1, as in the report.
    """
    d = np.asarray(d, dtype=float)
    if d.ndim != 2 or d.shape[1] < 1:
        raise EvaluationError("wilcoxon_pvalues needs a (replicates, listeners) array")
    p = np.ones(d.shape[0])
    nonzero = np.any(d != 0, axis=1)
    a = np.sort(np.abs(d), axis=1)
    tied = np.any(a[:, 1:] == a[:, :-1], axis=1) | np.any(d == 0, axis=1)
    clean, rough = nonzero & ~tied, nonzero & tied
    if clean.any():
        p[clean] = stats.wilcoxon(d[clean], zero_method="pratt", alternative="two-sided", axis=-1).pvalue
    if rough.any():
        small = d.shape[1] <= PERMUTATION_MAX_N
        p[rough] = (
            _signflip_pvalues(d[rough])
            if small
            else stats.wilcoxon(d[rough], zero_method="pratt", alternative="two-sided", axis=-1).pvalue
        )
    return p


#: SciPy's ``wilcoxon`` turns to an exact sign-flip permutation test for tied data up to this n.
PERMUTATION_MAX_N = 13


def _signflip_pvalues(d: np.ndarray, rows_at_once: int = 256) -> np.ndarray:
    # What scipy.stats.wilcoxon does for tied rows with n <= 13 (an exact
    # permutation_test of R+ over all 2^n sign flips, same tolerance), without its
    # per-resample Python loop: R+ of a flip is the sum of the ranks it makes positive.
    n = d.shape[1]
    ranks = stats.rankdata(np.abs(d), axis=1)
    observed = np.sum(ranks * (d > 0), axis=1)
    weights = ranks * (d != 0)
    patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(float)
    gamma = np.abs(np.finfo(float).eps * 100 * observed)
    out = np.empty(d.shape[0])
    for start in range(0, d.shape[0], rows_at_once):
        part = slice(start, start + rows_at_once)
        null = patterns @ weights[part].T
        less = np.mean(null <= observed[part] + gamma[part], axis=0)
        greater = np.mean(null >= observed[part] - gamma[part], axis=0)
        out[part] = np.clip(2 * np.minimum(less, greater), 0.0, 1.0)
    return out


def t_pvalues(d: np.ndarray) -> np.ndarray:
    """Two-sided one-sample (paired) t-test p-values of the mean of each row of ``d`` against zero."""
    d = np.asarray(d, dtype=float)
    n = d.shape[1]
    if n < 2:
        return np.ones(d.shape[0])
    mean = d.mean(axis=1)
    sd = d.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / math.sqrt(n))
    p = 2 * stats.t.sf(np.abs(t), n - 1)
    # No spread: certain when the mean is not zero, nothing to test when it is.
    p = np.where(sd == 0, np.where(mean == 0, 1.0, 0.0), p)
    return np.asarray(p, dtype=float)


PVALUES = {"wilcoxon": wilcoxon_pvalues, "t": t_pvalues}


# --------------------------------------------------------------------------- the planner


@dataclass
class Plan:
    """Simulated power per design and the smallest design that reaches the target."""

    difference: float
    components: VarianceComponents
    alpha: float
    target: float
    comparisons: int
    test: str
    replicates: int
    seed: int
    level: float | None
    table: pd.DataFrame
    recommendation: dict[str, Any] | None
    by_excerpts: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "paradigm": "mushra",
            "difference": self.difference,
            "components": self.components.as_dict(),
            "alpha": self.alpha,
            "target_power": self.target,
            "comparisons": self.comparisons,
            "threshold": self.alpha / self.comparisons,
            "test": self.test,
            "test_description": TESTS[self.test],
            "replicates": self.replicates,
            "seed": self.seed,
            "level": self.level,
            "table": [
                {k: (int(v) if k in ("listeners", "excerpts") else float(v)) for k, v in row.items()}
                for row in self.table.to_dict(orient="records")
            ],
            "recommendation": self.recommendation,
            "by_excerpts": self.by_excerpts,
        }

    def grid(self) -> tuple[list[int], list[int], list[list[tuple[float, float]]]]:
        """(listeners, excerpts, rows of (power, mc_se)) for a listeners x excerpts table."""
        t = self.table
        keys = zip(t["listeners"].to_numpy(dtype=int).tolist(), t["excerpts"].to_numpy(dtype=int).tolist())
        values = zip(t["power"].to_numpy(dtype=float).tolist(), t["mc_se"].to_numpy(dtype=float).tolist())
        cell = dict(zip(keys, values))
        listeners = sorted({n for n, _ in cell})
        excerpts = sorted({i for _, i in cell})
        return listeners, excerpts, [[cell[(n, i)] for i in excerpts] for n in listeners]


def _counts(values: Sequence[int], name: str, smallest: int, largest: int) -> list[int]:
    try:
        counts = sorted({int(v) for v in values})
    except (TypeError, ValueError):
        raise EvaluationError(f"{name} must be whole numbers, got {list(values)!r}") from None
    if not counts:
        raise EvaluationError(f"{name}: give at least one value")
    if any(float(v) != int(v) for v in values):
        raise EvaluationError(f"{name} must be whole numbers, got {list(values)!r}")
    if counts[0] < smallest or counts[-1] > largest:
        raise EvaluationError(f"{name} must lie between {smallest} and {largest}, got {counts[0]}..{counts[-1]}")
    return counts


def _check_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EvaluationError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def plan_sample_size(
    difference: float,
    components: VarianceComponents | None = None,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    comparisons: int = 1,
    listeners: Sequence[int] = DEFAULT_LISTENERS,
    excerpts: Sequence[int] = DEFAULT_EXCERPTS,
    replicates: int = 2000,
    seed: int = 1534,
    test: str = "wilcoxon",
    level: float | None = None,
    progress: Progress | None = None,
) -> Plan:
    """Simulated power of the planned comparison for every (listeners, excerpts) in the grid.

    ``difference``: true mean difference between the two conditions (rating points);
    ``components``: the five SDs (defaults: ``DEFAULT_COMPONENTS``); ``comparisons``: the
    number of comparisons Holm corrects over (the comparison counts as declared when
    p <= alpha / comparisons, a lower bound on its Holm power); ``level``: mean rating of
    the lower condition, when given ratings are clipped to 0..100. Returns a ``Plan``
    whose ``table`` has listeners, excerpts, power and its Monte Carlo SE.
    """
    components = components or VarianceComponents()
    difference = _check_number(difference, "difference")
    if abs(difference) > 100:
        raise EvaluationError(f"difference must lie within -100..100 rating points, got {difference:g}")
    alpha = _check_number(alpha, "alpha")
    if not 0 < alpha < 1:
        raise EvaluationError(f"alpha must lie strictly between 0 and 1, got {alpha:g}")
    target = _check_number(power, "power")
    if not 0 < target < 1:
        raise EvaluationError(f"power must lie strictly between 0 and 1, got {target:g}")
    if isinstance(comparisons, bool) or not isinstance(comparisons, (int, np.integer)) or comparisons < 1:
        raise EvaluationError(f"comparisons must be a whole number of at least 1, got {comparisons!r}")
    if comparisons > 10_000:
        raise EvaluationError(f"comparisons must be at most 10000, got {comparisons}")
    if isinstance(replicates, bool) or not isinstance(replicates, (int, np.integer)):
        raise EvaluationError(f"replicates must be a whole number, got {replicates!r}")
    if not 100 <= replicates <= MAX_REPLICATES:
        raise EvaluationError(f"replicates must lie between 100 and {MAX_REPLICATES}, got {replicates}")
    if test not in TESTS:
        raise EvaluationError(f"test must be one of {', '.join(TESTS)}, got {test!r}")
    if level is not None:
        level = _check_number(level, "level")
        if not 0 <= level <= 100 or not 0 <= level + difference <= 100:
            raise EvaluationError(
                f"level {level:g} and level + difference {level + difference:g} must both lie within 0..100"
            )
    n_list = _counts(listeners, "listeners", 2, MAX_LISTENERS)
    i_list = _counts(excerpts, "excerpts", 1, MAX_EXCERPTS)
    report = progress or (lambda message, fraction: None)
    pvalues = PVALUES[test]
    threshold = alpha / int(comparisons)
    L, imax = n_list[-1], i_list[-1]
    chunk = max(1, min(replicates, CHUNK_ELEMENTS // (2 * L * imax)))
    rng = np.random.default_rng(seed)
    declared = np.zeros((len(n_list), len(i_list)))
    c = components
    base = np.array([0.0, difference]) + (level if level is not None else 0.0)
    done = 0
    while done < replicates:
        r = min(chunk, replicates - done)
        y = (
            base
            + rng.normal(0.0, c.listener, (r, L, 1, 1))
            + rng.normal(0.0, c.item, (r, 1, imax, 1))
            + rng.normal(0.0, c.listener_condition, (r, L, 1, 2))
            + rng.normal(0.0, c.item_condition, (r, 1, imax, 2))
            + rng.normal(0.0, c.residual, (r, L, imax, 2))
        )
        if level is not None:
            np.clip(y, 0.0, 100.0, out=y)
        # Per-listener mean difference over the first I excerpts, for every I at once.
        running = np.cumsum(y[..., 1] - y[..., 0], axis=2)
        for k, n_items in enumerate(i_list):
            means = running[:, :, n_items - 1] / n_items
            for j, n in enumerate(n_list):
                declared[j, k] += np.count_nonzero(pvalues(means[:, :n]) <= threshold)
        done += r
        report(f"simulated {done} of {replicates} replicates", done / replicates)
    estimate = declared / replicates
    se = np.sqrt(estimate * (1 - estimate) / replicates)
    rows = [
        {"listeners": n, "excerpts": i, "power": float(estimate[j, k]), "mc_se": float(se[j, k])}
        for j, n in enumerate(n_list)
        for k, i in enumerate(i_list)
    ]
    table = pd.DataFrame(rows, columns=["listeners", "excerpts", "power", "mc_se"])
    reached = table[table["power"] >= target]
    recommendation = None
    if len(reached):
        ranked = reached.assign(ratings=reached["listeners"] * reached["excerpts"]).sort_values(
            ["ratings", "listeners", "excerpts"], kind="stable"
        )
        best = ranked.iloc[0]
        recommendation = {
            "listeners": int(best["listeners"]),
            "excerpts": int(best["excerpts"]),
            "power": float(best["power"]),
            "mc_se": float(best["mc_se"]),
            # Within 2 Monte Carlo SEs of the target: more replicates would settle it.
            "borderline": bool(best["power"] - 2 * best["mc_se"] < target),
        }
    by_excerpts = []
    for i in i_list:
        rows_i = table[(table["excerpts"] == i) & (table["power"] >= target)]
        by_excerpts.append({"excerpts": i, "listeners": int(rows_i["listeners"].min()) if len(rows_i) else None})
    return Plan(
        difference=difference,
        components=components,
        alpha=alpha,
        target=target,
        comparisons=int(comparisons),
        test=test,
        replicates=int(replicates),
        seed=int(seed),
        level=level,
        table=table,
        recommendation=recommendation,
        by_excerpts=by_excerpts,
    )


def describe(plan: Plan) -> str:
    """The plan in a few sentences, for the command line and the researcher page."""
    m = plan.comparisons
    holm = f" with Holm over {m} comparisons (declared at p <= {plan.alpha / m:.3g})" if m > 1 else ""
    text = (
        f"Power to detect a difference of {plan.difference:g} points with the {TESTS[plan.test]} at alpha = "
        f"{plan.alpha:g}{holm}, from {plan.replicates} simulated tests (Monte Carlo SE at most "
        f"{0.5 / math.sqrt(plan.replicates):.3f})."
    )
    rec = plan.recommendation
    if rec is None:
        largest = plan.table.sort_values("power").iloc[-1]
        return (
            f"{text} No design in the grid reaches power {plan.target:g}; the best is {largest['power']:.2f} with "
            f"{int(largest['listeners'])} listeners x {int(largest['excerpts'])} excerpts. Add listeners or "
            "excerpts, or plan for a larger difference."
        )
    borderline = " (within 2 Monte Carlo SEs of the target: rerun with more replicates to be sure)"
    return (
        f"{text} Smallest design reaching power {plan.target:g}: {rec['listeners']} listeners x "
        f"{rec['excerpts']} excerpts (power {rec['power']:.2f} +- {rec['mc_se']:.2f})"
        f"{borderline if rec['borderline'] else ''}."
    )


def format_table(plan: Plan) -> str:
    """Power (Monte Carlo SE) as a listeners x excerpts text table."""
    listeners, excerpts, cells = plan.grid()
    header = "listeners \\ excerpts" + "".join(f"{i:>16d}" for i in excerpts)
    lines = [header]
    for n, row in zip(listeners, cells):
        lines.append(f"{n:>20d}" + "".join(f"{p:>8.3f} ({s:.3f})" for p, s in row))
    return "\n".join(lines)

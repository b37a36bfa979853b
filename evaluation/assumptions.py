"""The Gaussian model's assumptions checked on its residuals: shape per condition, equal variances.

The residual of a rating is what is left after each condition's listener and excerpt
effects: within each condition, ``y - listener mean - excerpt mean + condition mean`` in a
complete table, and in general the least-squares residual of ``rating ~ participant + item``
fitted to that condition alone (computed by alternating projections, which converge to it;
one sweep in a complete table). These are the residuals of the crossed mixed model of
``evaluation.lmm`` with its listener x condition and excerpt x condition effects taken as
fixed; pooled over conditions their variance is the model's residual variance in a
balanced design. Per condition: the residual SD on ``n - listeners - excerpts + 1`` degrees
of freedom, skewness G1 and excess kurtosis G2 (the adjusted Fisher-Pearson estimators,
Joanes & Gill 1998), the Shapiro & Wilk (1965) test (3 <= n <= 5000) and D'Agostino's K²
test (D'Agostino & Pearson 1973; n >= 20): the check of normality that ITU-R BS.1534-3
§9.3.3 (items 4 and 5) and Attachment 4, A4.2 (skewness and kurtosis of the residuals) ask
for before a parametric analysis. Equal residual variances across conditions are
tested by Brown & Forsythe (1974) (absolute deviations from each condition's median) and by
Levene (1960) (from the mean), on residuals rotated to independence
(``decorrelated_residuals``). With thousands of residuals the normality tests reject
trivial departures: read the skewness, the kurtosis and the Q-Q plot, not only the p-values.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import linalg, stats

#: Beyond these the report warns: |G1| > 1 is highly skewed (Bulmer 1979), |G2| > 3 heavy or light tails.
SKEW_LIMIT = 1.0
KURTOSIS_LIMIT = 3.0
SHAPIRO_MAX_N = 5000

RESIDUAL_COLUMNS = [
    "condition",
    "n",
    "df",
    "residual_sd",
    "skewness",
    "excess_kurtosis",
    "shapiro_w",
    "shapiro_p",
    "dagostino_k2",
    "dagostino_p",
]


def condition_residuals(ratings: pd.DataFrame, conditions: list[str], tol: float = 1e-10) -> pd.DataFrame:
    """Residual of each rating from ``rating ~ participant + item`` fitted within its condition (``residual``)."""
    data = ratings[ratings["condition"].isin(conditions)][["participant", "item", "condition", "kind", "rating"]]
    data = data.reset_index(drop=True)
    cond = pd.Categorical(data["condition"], categories=conditions).codes.astype(np.int64)
    part = pd.factorize(data["participant"])[0].astype(np.int64)
    item = pd.factorize(data["item"])[0].astype(np.int64)
    # Listener and excerpt effects nested in the condition: groups (condition, listener) and (condition, excerpt).
    groups = [
        np.unique(cond * (int(codes.max()) + 1) + codes, return_inverse=True)[1].ravel() for codes in (part, item)
    ]
    sizes = [np.bincount(g).astype(float) for g in groups]
    residual = data["rating"].to_numpy(dtype=float).copy()
    for _ in range(10_000):
        largest = 0.0
        for g, size in zip(groups, sizes):
            means = np.bincount(g, weights=residual) / size
            residual -= means[g]
            largest = max(largest, float(np.max(np.abs(means))) if means.size else 0.0)
        if largest < tol:
            break
    data["residual"] = residual
    return data


def _shape(values: np.ndarray) -> dict[str, float]:
    n = values.size
    out = dict.fromkeys(
        ("skewness", "excess_kurtosis", "shapiro_w", "shapiro_p", "dagostino_k2", "dagostino_p"), np.nan
    )
    if n < 3 or np.ptp(values) == 0:
        return out
    out["skewness"] = float(stats.skew(values, bias=False))
    if n >= 4:
        out["excess_kurtosis"] = float(stats.kurtosis(values, bias=False))
    if n <= SHAPIRO_MAX_N:
        out["shapiro_w"], out["shapiro_p"] = (float(v) for v in stats.shapiro(values))
    if n >= 20:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["dagostino_k2"], out["dagostino_p"] = (float(v) for v in stats.normaltest(values))
    return out


def residual_checks(residuals: pd.DataFrame, conditions: list[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-condition residual SD and shape tests, and the pooled shape of standardised residuals."""
    rows = []
    standardised = []
    for c in conditions:
        frame = residuals[residuals["condition"] == c]
        values = frame["residual"].to_numpy(dtype=float)
        df = len(frame) - frame["participant"].nunique() - frame["item"].nunique() + 1
        sd = float(np.sqrt(np.sum(values**2) / df)) if df > 0 else np.nan
        rows.append({"condition": c, "n": int(values.size), "df": int(max(df, 0)), "residual_sd": sd, **_shape(values)})
        if np.isfinite(sd) and sd > 0:
            # Scaled to unit mean square: a residual's own variance is sd^2 (df / n), not sd^2.
            standardised.append(values / np.sqrt(np.mean(values**2)))
    table = pd.DataFrame(rows, columns=RESIDUAL_COLUMNS)
    pooled_values = np.concatenate(standardised) if standardised else np.zeros(0)
    pooled = {"n": int(pooled_values.size), **_shape(pooled_values)}
    return table, pooled


def decorrelated_residuals(ratings: pd.DataFrame, condition: str) -> np.ndarray:
    """(P - 1)(I - 1) independent residuals of one condition: H_P' Y H_I, H orthonormal Helmert contrasts.

    Y is the listeners x excerpts table of the condition, restricted to the listeners who rated
    every excerpt of it. Under the model its double-centred residuals are correlated (each
    row and column sums to zero); rotated onto orthonormal contrasts they are independent with
    the residual variance (the idea of Theil's (1965) BLUS residuals), which is what a test
    comparing spreads needs.
    """
    frame = ratings.loc[ratings["condition"] == condition]
    listener, listeners = pd.factorize(frame["participant"], sort=True)
    excerpt, excerpts = pd.factorize(frame["item"], sort=True)
    table = np.full((len(listeners), len(excerpts)), np.nan)
    table[listener, excerpt] = frame["rating"].to_numpy(dtype=float)
    table = table[~np.isnan(table).any(axis=1)]
    if table.shape[0] < 2 or table.shape[1] < 2:
        return np.zeros(0)
    return np.asarray(linalg.helmert(table.shape[0]) @ table @ linalg.helmert(table.shape[1]).T).ravel()


def qq_points(residuals: pd.DataFrame, table: pd.DataFrame, max_points: int = 200) -> pd.DataFrame:
    """Normal Q-Q coordinates of each condition's standardised residuals (residual / root mean square).

    Theoretical quantiles at Filliben's (1975) medians of the uniform order statistics, as
    ``scipy.stats.probplot``; at most ``max_points`` evenly spaced order statistics per
    condition (always the two extremes), which keeps the figure's files small.
    """
    frames = []
    for condition, sd in zip(table["condition"], table["residual_sd"].to_numpy(dtype=float)):
        if not (np.isfinite(sd) and sd > 0):
            continue
        values = residuals.loc[residuals["condition"] == condition, "residual"].to_numpy(dtype=float)
        # Divided by their root mean square, not by the SD on df: normal residuals then lie on y = x.
        scaled = np.asarray(values / np.sqrt(np.mean(values**2)), dtype=float)
        theoretical, ordered = stats.probplot(scaled, fit=False)
        keep = np.unique(np.linspace(0, values.size - 1, min(max_points, values.size)).round().astype(int))
        frames.append(pd.DataFrame({"condition": condition, "theoretical": theoretical[keep], "sample": ordered[keep]}))
    if not frames:
        return pd.DataFrame(columns=["condition", "theoretical", "sample"])
    return pd.concat(frames, ignore_index=True)


def equal_variances(ratings: pd.DataFrame, conditions: list[str]) -> dict[str, dict[str, float] | None]:
    """Brown-Forsythe (median-centred) and Levene (mean-centred) tests of equal residual variance across conditions.

    Both run on each condition's decorrelated residuals (``decorrelated_residuals``). On the raw
    residuals, correlated within a listener's row and an excerpt's column, Brown-Forsythe
    rejected true equal variances in 10-14 % of simulated tests at 5 % (300 tests each of 20 x 6,
    20 x 3 and 10 x 4 listeners x excerpts, 3 conditions); on the decorrelated ones in 3-7 %.
    """
    groups = [decorrelated_residuals(ratings, c) for c in conditions]
    groups = [g for g in groups if g.size >= 2]
    total = sum(g.size for g in groups)
    out: dict[str, dict[str, float] | None] = {"brown_forsythe": None, "levene": None}
    if len(groups) < 2:
        return out
    centres: tuple[tuple[str, Literal["median", "mean"]], ...] = (("brown_forsythe", "median"), ("levene", "mean"))
    for name, centre in centres:
        with np.errstate(invalid="ignore", divide="ignore"):
            statistic, pvalue = stats.levene(*groups, center=centre)
        out[name] = {
            "statistic": float(statistic),
            "df1": len(groups) - 1,
            "df2": total - len(groups),
            "pvalue": float(pvalue),
        }
    return out


def check_assumptions(
    ratings: pd.DataFrame, conditions: list[str], alpha: float = 0.05, mixed_residual_variance: float | None = None
) -> tuple[dict[str, Any], pd.DataFrame, list[dict[str, str]]]:
    """Every check at once: the stats.json block, the residuals (for the Q-Q plot) and warnings."""
    residuals = condition_residuals(ratings, conditions)
    table, pooled = residual_checks(residuals, conditions)
    variances = equal_variances(ratings, conditions)
    found: list[dict[str, str]] = []
    bf = variances["brown_forsythe"]
    if bf is not None and np.isfinite(bf["pvalue"]) and bf["pvalue"] < alpha:
        spread = table.dropna(subset=["residual_sd"]).sort_values("residual_sd")
        low, high = spread.iloc[0], spread.iloc[-1]
        found.append(
            {
                "code": "unequal_variances",
                "message": (
                    f"Unequal residual variances across conditions (Brown-Forsythe p {_p(bf['pvalue'])}): residual SD "
                    f"from {low['residual_sd']:.1f} ({low['condition']}) to {high['residual_sd']:.1f} "
                    f"({high['condition']}). The mixed model and the ANOVA assume one residual variance; the "
                    "per-listener paired tests, the rank tests and the bounded intervals do not."
                ),
            }
        )
    shaped = table[(table["skewness"].abs() > SKEW_LIMIT) | (table["excess_kurtosis"].abs() > KURTOSIS_LIMIT)]
    if len(shaped):
        found.append(
            {
                "code": "residual_shape",
                "message": (
                    "Residuals far from normal in "
                    + ", ".join(
                        f"{r.condition} (skewness {r.skewness:.2f}, excess kurtosis {r.excess_kurtosis:.2f})"
                        for r in shaped.itertuples()
                    )
                    + f" (limits |skewness| {SKEW_LIMIT:g}, |excess kurtosis| {KURTOSIS_LIMIT:g}); often ratings piled "
                    "at an end of the scale. See the Q-Q plot; rank tests and bounded intervals are safer there."
                ),
            }
        )
    block = {
        "residuals": "within each condition, rating - listener effect - excerpt effect (least squares)",
        "per_condition": table.to_dict("records"),
        "pooled": pooled,
        "pooled_residual_sd": float(np.sqrt(np.sum(residuals["residual"] ** 2) / table["df"].sum()))
        if table["df"].sum() > 0
        else None,
        "mixed_model_residual_sd": float(np.sqrt(mixed_residual_variance))
        if mixed_residual_variance is not None
        else None,
        "equal_variance": variances,
    }
    return block, residuals, found


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"

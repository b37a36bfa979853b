"""Figures of the report, drawn with matplotlib's Agg backend and returned as PNG bytes.

Colours come from the Okabe & Ito (2008) colour-blind-safe palette; each condition kind
keeps one colour in every figure.
"""

from __future__ import annotations

import io
import math

import matplotlib
import matplotlib.figure
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .kinds import ANCHOR35, ANCHOR70, HIDDEN_REFERENCE, MODEL  # noqa: E402

KIND_COLOURS = {HIDDEN_REFERENCE: "#009E73", MODEL: "#0072B2", ANCHOR70: "#E69F00", ANCHOR35: "#D55E00"}
DPI = 90


def _png(figure: matplotlib.figure.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def boxplots_per_item(ratings: pd.DataFrame, conditions: list[str], kinds: dict[str, str]) -> bytes:
    """One box plot of the ratings per item, conditions side by side (whiskers at 1.5 x IQR)."""
    items = sorted(ratings["item"].unique())
    columns = min(3, len(items))
    rows = math.ceil(len(items) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.9 * rows), squeeze=False, sharey=True)
    grouped = {key: frame["rating"].to_numpy() for key, frame in ratings.groupby(["item", "condition"])}
    for ax, item in zip(axes.ravel(), items):
        data = [grouped.get((item, c), np.array([])) for c in conditions]
        parts = ax.boxplot(
            data, patch_artist=True, widths=0.6, flierprops={"markersize": 2}, medianprops={"color": "black"}
        )
        for patch, c in zip(parts["boxes"], conditions):
            patch.set_facecolor(KIND_COLOURS[kinds[c]])
            patch.set_alpha(0.7)
        ax.set_title(str(item), fontsize=9)
        ax.set_xticks(range(1, len(conditions) + 1))
        ax.set_xticklabels(conditions, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(-2, 102)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.ravel()[len(items) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("Rating")
    figure.tight_layout()
    return _png(figure)


def means_with_ci(overall: pd.DataFrame, kinds: dict[str, str]) -> bytes:
    """Mean of per-participant means with its 95 % t interval, one point per condition."""
    figure, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(overall) + 1.5), 3.6))
    x = np.arange(len(overall))
    for i, row in enumerate(overall.to_dict("records")):
        colour = KIND_COLOURS[kinds[row["condition"]]]
        ax.errorbar(
            i,
            row["mean"],
            yerr=[[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]],
            fmt="o",
            color=colour,
            capsize=4,
            markersize=6,
        )
    ax.set_xticks(x)
    ax.set_xticklabels(overall["condition"], rotation=45, ha="right")
    ax.set_ylabel("Mean rating (95 % CI)")
    ax.set_ylim(0, 100)
    for y in (20, 40, 60, 80):
        ax.axhline(y, color="grey", lw=0.5, alpha=0.4)
    ax.set_title("Means across listeners (per-listener means over items)")
    figure.tight_layout()
    return _png(figure)


def screening_plot(table: pd.DataFrame, reference_limit: float | None, anchor_limit: float | None) -> bytes:
    """Each assessor's share of items failing the reference rule against the anchor rule (BS.1534-3 §4.1.2)."""
    figure, ax = plt.subplots(figsize=(5.0, 4.0))
    x = table["reference_below_fraction"].fillna(0).to_numpy() * 100
    y = table["anchor_above_fraction"].fillna(0).to_numpy() * 100
    excluded = table["excluded"].to_numpy(dtype=bool)
    # A little jitter so assessors with identical shares stay visible.
    jitter = np.random.default_rng(0).uniform(-0.6, 0.6, (2, len(x)))
    ax.scatter(
        x[~excluded] + jitter[0][~excluded],
        y[~excluded] + jitter[1][~excluded],
        s=18,
        color="#0072B2",
        label="kept",
        alpha=0.8,
    )
    ax.scatter(
        x[excluded] + jitter[0][excluded],
        y[excluded] + jitter[1][excluded],
        s=30,
        color="#D55E00",
        marker="x",
        label="excluded",
    )
    if reference_limit is not None:
        ax.axvline(100 * reference_limit, color="grey", ls="--", lw=1)
    if anchor_limit is not None:
        ax.axhline(100 * anchor_limit, color="grey", ls="--", lw=1)
    ax.set_xlabel("Items with hidden reference < threshold (%)")
    ax.set_ylabel("Items with anchor > threshold (%)")
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Post-screening per assessor")
    figure.tight_layout()
    return _png(figure)


def pvalue_heatmap(pairwise: pd.DataFrame, conditions: list[str], column: str = "pvalue_holm") -> bytes:
    """Heat map of Holm-corrected pairwise p-values (log scale), with the values written in."""
    names = [c for c in conditions if c in set(pairwise["a"]) | set(pairwise["b"])]
    k = len(names)
    matrix = np.full((k, k), np.nan)
    where = {c: i for i, c in enumerate(names)}
    for row in pairwise.to_dict("records"):
        value = row[column]
        matrix[where[row["a"]], where[row["b"]]] = matrix[where[row["b"]], where[row["a"]]] = value
    figure, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    with np.errstate(divide="ignore"):
        shown = np.log10(np.clip(matrix, 1e-6, 1))
    image = ax.imshow(shown, cmap="viridis", vmin=-6, vmax=0)
    for i in range(k):
        for j in range(k):
            if np.isfinite(matrix[i, j]):
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2g}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if shown[i, j] < -3 else "black",
                )
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    bar = figure.colorbar(image, ax=ax, fraction=0.046)
    bar.set_label("log10 p (Holm)")
    ax.set_title("Pairwise Wilcoxon, Holm-corrected p")
    figure.tight_layout()
    return _png(figure)


def objective_scatter(points: pd.DataFrame, correlations: pd.DataFrame, metric: str, log_scale: bool) -> bytes:
    """Mean rating against a metric per (model, item) and per model, with Spearman's rho in the titles."""
    figure, axes = plt.subplots(1, 2, figsize=(9.0, 3.6))
    for ax, level, title in ((axes[0], "model_item", "per (model, item)"), (axes[1], "model", "per model")):
        data = points[(points["metric"] == metric) & (points["level"] == level)]
        conditions = sorted(data["condition"].unique())
        palette = plt.get_cmap("tab10")
        for k, c in enumerate(conditions):
            subset = data[data["condition"] == c]
            ax.scatter(
                subset["value"],
                subset["mean_rating"],
                s=16 if level == "model_item" else 40,
                color=palette(k % 10),
                label=c,
            )
        row = correlations[
            (correlations["metric"] == metric)
            & (correlations["level"] == level)
            & (correlations["method"] == "spearman")
        ]
        rho = (
            f"rho = {row['rho'].iloc[0]:.2f} [{row['ci_low'].iloc[0]:.2f}, {row['ci_high'].iloc[0]:.2f}]"
            if len(row) and np.isfinite(row["rho"].iloc[0])
            else "rho undefined"
        )
        ax.set_title(f"{title}: Spearman {rho}", fontsize=9)
        if log_scale:
            ax.set_xscale("log")
            # Minor-tick labels of a short log axis overlap one another.
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(metric)
        ax.set_ylabel("Mean rating")
        ax.grid(alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()
    if len(labels) <= 12:
        axes[1].legend(handles, labels, fontsize=7, loc="best")
    figure.tight_layout()
    return _png(figure)

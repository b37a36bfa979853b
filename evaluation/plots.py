"""Figures of the report at journal sizes, drawn with matplotlib's Agg backend.

Each function returns a ``matplotlib.figure.Figure`` of a fixed width, one column
(``SINGLE_COLUMN_IN``, 3.5 in) or two (``DOUBLE_COLUMN_IN``, 7 in), drawn under ``STYLE``:
no text smaller than ``MIN_FONT_PT`` (8 pt) at that size, and colours from the Okabe & Ito
(2008) colour-blind-safe palette, each condition kind keeping one colour in every figure.
``evaluation.figures`` writes them as SVG, PDF and 300 dpi PNG.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

import matplotlib
import matplotlib.axis
import matplotlib.figure
import matplotlib.ticker
from matplotlib import rcsetup
from matplotlib.collections import LineCollection, PolyCollection

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .kinds import ANCHOR35, ANCHOR70, HIDDEN_REFERENCE, MODEL  # noqa: E402

#: Okabe & Ito (2008), "Color Universal Design": told apart under every common colour-vision deficiency.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
KIND_COLOURS = {HIDDEN_REFERENCE: "#009E73", MODEL: "#0072B2", ANCHOR70: "#E69F00", ANCHOR35: "#D55E00"}
#: The palette in the order series take it: yellow, the faintest on white, last.
SERIES = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442")
#: Grey of guide lines (neutral, so it never reads as a condition's colour).
GUIDE = "#999999"
#: Markers that, with the palette's eight colours, keep up to 40 series apart.
MARKERS = ("o", "s", "^", "D", "v")
SINGLE_COLUMN_IN = 3.5
DOUBLE_COLUMN_IN = 7.0
MIN_FONT_PT = 8.0
#: The most condition names a one-column figure lays out side by side.
SINGLE_COLUMN_CONDITIONS = 10
#: rcParams keys are typed as literals; the Any keys let the dict pass as it is.
STYLE: dict[Any, Any] = {
    "font.size": MIN_FONT_PT,
    "axes.titlesize": MIN_FONT_PT,
    "axes.labelsize": MIN_FONT_PT,
    "xtick.labelsize": MIN_FONT_PT,
    "ytick.labelsize": MIN_FONT_PT,
    "legend.fontsize": MIN_FONT_PT,
    "legend.title_fontsize": MIN_FONT_PT,
    "figure.titlesize": MIN_FONT_PT,
    "axes.prop_cycle": rcsetup.cycler(color=list(SERIES)),
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "lines.linewidth": 1.0,
    "patch.linewidth": 0.6,
    "legend.frameon": False,
    "image.cmap": "viridis",
    # Text stays text: SVG keeps editable <text>, PDF embeds TrueType (journals refuse Type 3).
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
    "svg.hashsalt": "evaluation",
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The report's style for drawing and saving, without touching the process's rcParams."""
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(width_in: float, height_in: float) -> matplotlib.figure.Figure:
    """A figure of a fixed print size with constrained layout (sizes stay as given when saved)."""
    with style():
        return matplotlib.figure.Figure(figsize=(width_in, height_in), layout="constrained")


def width_for(n_labels: int) -> float:
    """One column for up to ``SINGLE_COLUMN_CONDITIONS`` labels side by side, two beyond."""
    return SINGLE_COLUMN_IN if n_labels <= SINGLE_COLUMN_CONDITIONS else DOUBLE_COLUMN_IN


def short(text: object, limit: int = 28) -> str:
    """A label cut to ``limit`` characters (with an ellipsis), so a long name cannot push a panel away."""
    value = str(text)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _grid(n_panels: int, n_rows_each: int) -> tuple[int, int, float]:
    """Columns, rows and height (in) of small multiples, one per item, at double-column width."""
    columns = min(4, n_panels) if n_panels <= 16 else 6
    rows = math.ceil(n_panels / columns)
    return columns, rows, rows * (0.14 * n_rows_each + 0.55) + 0.35


def boxplots_per_item(
    ratings: pd.DataFrame,
    conditions: list[str],
    kinds: dict[str, str],
    by_item: pd.DataFrame | None = None,
    confidence_level: float = 0.95,
) -> matplotlib.figure.Figure:
    """Ratings per item, one panel per item, conditions one above the other.

    Box from the first to the third quartile (numpy's linear interpolation), median line,
    whiskers to the furthest rating within 1.5 x IQR of the box (Tukey 1977), ratings beyond
    them as dots; with ``by_item`` (``describe_by_condition_item``), each cell's mean as a dot
    with its t interval across listeners as a bar, over the box.
    """
    items = sorted(ratings["item"].unique())
    columns, rows, height = _grid(len(items), len(conditions))
    grouped = {key: frame.to_numpy(dtype=float) for key, frame in ratings.groupby(["item", "condition"])["rating"]}
    position = {c: len(conditions) - 1 - k for k, c in enumerate(conditions)}
    means = {} if by_item is None else dict(iter(by_item.groupby("item")))
    with style():
        figure = new_figure(DOUBLE_COLUMN_IN, height)
        # Not shared: the inner panels get no y ticks at all, which draws faster than hidden labels.
        axes = figure.subplots(rows, columns, squeeze=False)
        for ax, item in zip(axes.ravel(), items):
            _boxes(ax, [(position[c], KIND_COLOURS[kinds[c]], grouped.get((item, c))) for c in conditions])
            if item in means:
                _means(ax, means[item], position, kinds)
            ax.set_title(short(item))
            _rating_axis(ax, "x")
        for ax in axes.ravel()[len(items) :]:
            ax.set_visible(False)
        _condition_ticks(axes, conditions)
        figure.supxlabel(
            "Rating" if by_item is None else f"Rating (dot and bar: mean with {_pct(confidence_level)} CI)"
        )
    return figure


def _boxes(ax: matplotlib.axes.Axes, cells: list[tuple[int, str, np.ndarray | None]]) -> None:
    """Horizontal box plots, one collection per part (a few draw calls for any number of boxes)."""
    boxes, faces, whiskers, medians, fliers = [], [], [], [], []
    for y, colour, values in cells:
        if values is None or values.size == 0:
            continue
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        reach = 1.5 * (q3 - q1)
        inside = values[(values >= q1 - reach) & (values <= q3 + reach)]
        low, high = (inside.min(), inside.max()) if inside.size else (q1, q3)
        boxes.append([(q1, y - 0.32), (q3, y - 0.32), (q3, y + 0.32), (q1, y + 0.32)])
        faces.append(colour)
        whiskers += [[(low, y), (q1, y)], [(q3, y), (high, y)]]
        medians.append([(median, y - 0.32), (median, y + 0.32)])
        fliers += [(v, y) for v in values[(values < low) | (values > high)]]
    ax.add_collection(PolyCollection(boxes, facecolors=faces, edgecolors=GUIDE, linewidths=0.4, alpha=0.45))
    ax.add_collection(LineCollection(whiskers, colors=GUIDE, linewidths=0.6))
    ax.add_collection(LineCollection(medians, colors="#000000", linewidths=0.8))
    if fliers:
        spots = np.array(fliers)
        ax.scatter(spots[:, 0], spots[:, 1], s=1.2, color=GUIDE, linewidths=0)


def _means(ax: matplotlib.axes.Axes, cells: pd.DataFrame, position: dict[str, int], kinds: dict[str, str]) -> None:
    """Each condition's mean as a dot and its interval as a bar (none where it is undefined)."""
    cells = cells[cells["condition"].isin(position) & np.isfinite(cells["mean"].to_numpy(dtype=float))]
    y = cells["condition"].map(position).to_numpy(dtype=float)
    colours = np.array([KIND_COLOURS[kinds[c]] for c in cells["condition"]])
    low, high = cells["ci_low"].to_numpy(dtype=float), cells["ci_high"].to_numpy(dtype=float)
    bounded = np.isfinite(low) & np.isfinite(high)
    ax.hlines(y[bounded], low[bounded], high[bounded], colors=colours[bounded], lw=1.4, zorder=3)
    ax.scatter(cells["mean"], y, s=10, c=colours, edgecolors="#000000", linewidths=0.3, zorder=4)


def means_with_ci(
    overall: pd.DataFrame, kinds: dict[str, str], confidence_level: float = 0.95
) -> matplotlib.figure.Figure:
    """Mean of per-participant means with its t interval, one point per condition."""
    with style():
        figure = new_figure(width_for(len(overall)), 2.6)
        ax = figure.subplots()
        for i, row in enumerate(overall.to_dict("records")):
            if np.isfinite(row["mean"]):
                _point(ax, row, i, KIND_COLOURS[kinds[row["condition"]]], horizontal=False)
        ax.set_xticks(range(len(overall)))
        ax.set_xticklabels([short(c, 20) for c in overall["condition"]], rotation=45, ha="right")
        ax.set_xlim(-0.6, len(overall) - 0.4)
        ax.set_ylabel(f"Mean rating ({_pct(confidence_level)} CI)")
        _rating_axis(ax, "y")
    return figure


def _pct(level: float) -> str:
    return f"{100 * level:g} %"


def _point(
    ax: matplotlib.axes.Axes, row: Mapping[Hashable, Any], position: float, colour: str, horizontal: bool
) -> None:
    """A mean with its interval as an error bar (no bar where the interval is undefined)."""
    mean, low, high = row["mean"], row["ci_low"], row["ci_high"]
    error = [[mean - low], [high - mean]] if np.isfinite(low) and np.isfinite(high) else None
    x, y = (mean, position) if horizontal else (position, mean)
    ax.errorbar(
        x,
        y,
        xerr=error if horizontal else None,
        yerr=None if horizontal else error,
        fmt="o",
        color=colour,
        capsize=2 if horizontal else 3,
        markersize=3 if horizontal else 4,
        elinewidth=0.9,
    )


def _rating_axis(ax: matplotlib.axes.Axes, which: str) -> None:
    """The 0..100 MUSHRA scale with guides at the category boundaries (20, 40, 60, 80)."""
    limits, guides = (-2.0, 102.0), (20, 40, 60, 80)
    if which == "x":
        ax.set_xlim(*limits)
        ax.set_xticks([0, 50, 100])
        ax.vlines(guides, 0, 1, transform=ax.get_xaxis_transform(), colors=GUIDE, lw=0.4, alpha=0.6, zorder=0)
    else:
        ax.set_ylim(*limits)
        ax.set_yticks([0, 20, 40, 60, 80, 100])
        ax.hlines(guides, 0, 1, transform=ax.get_yaxis_transform(), colors=GUIDE, lw=0.4, alpha=0.6, zorder=0)


def _condition_ticks(axes: np.ndarray, conditions: list[str]) -> None:
    """Condition names down the left of each row of panels (first condition on top)."""
    positions = np.arange(len(conditions))[::-1]
    for ax in axes.ravel():
        ax.set_ylim(-0.7, len(conditions) - 0.3)
        ax.set_yticks([])
    for ax in axes[:, 0]:
        ax.set_yticks(positions)
        ax.set_yticklabels([short(c, 20) for c in conditions])


def screening_plot(
    table: pd.DataFrame, reference_limit: float | None, anchor_limit: float | None
) -> matplotlib.figure.Figure:
    """Each assessor's share of items failing the reference rule against the anchor rule (BS.1534-3 §4.1.2)."""
    x = table["reference_below_fraction"].fillna(0).to_numpy() * 100
    y = table["anchor_above_fraction"].fillna(0).to_numpy() * 100
    excluded = table["excluded"].to_numpy(dtype=bool)
    # A little jitter so assessors with identical shares stay visible.
    jitter = np.random.default_rng(0).uniform(-0.6, 0.6, (2, len(x)))
    with style():
        figure = new_figure(SINGLE_COLUMN_IN, 3.0)
        ax = figure.subplots()
        ax.scatter(
            x[~excluded] + jitter[0][~excluded],
            y[~excluded] + jitter[1][~excluded],
            s=10,
            color=KIND_COLOURS[MODEL],
            label="kept",
            alpha=0.8,
            linewidths=0,
        )
        ax.scatter(
            x[excluded] + jitter[0][excluded],
            y[excluded] + jitter[1][excluded],
            s=18,
            color=KIND_COLOURS[ANCHOR35],
            marker="x",
            label="excluded",
        )
        if reference_limit is not None:
            ax.axvline(100 * reference_limit, color=GUIDE, ls="--", lw=0.8)
        if anchor_limit is not None:
            ax.axhline(100 * anchor_limit, color=GUIDE, ls="--", lw=0.8)
        ax.set_xlabel("Items with hidden reference\nbelow threshold (%)")
        ax.set_ylabel("Items with anchor above threshold (%)")
        ax.set_xlim(-3, 103)
        ax.set_ylim(-3, 103)
        ax.legend(loc="upper right")
    return figure


#: Cells narrower than this (pt) carry no printed p-value: 8 pt text would not fit.
_CELL_TEXT_PT = 26.0


def pvalue_heatmap(
    pairwise: pd.DataFrame, conditions: list[str], column: str = "pvalue_holm"
) -> matplotlib.figure.Figure:
    """Heat map of Holm-corrected pairwise p-values (log scale), with the values written in where they fit."""
    names = [c for c in conditions if c in set(pairwise["a"]) | set(pairwise["b"])]
    k = len(names)
    matrix = np.full((k, k), np.nan)
    where = {c: i for i, c in enumerate(names)}
    for row in pairwise.to_dict("records"):
        value = row[column]
        matrix[where[row["a"]], where[row["b"]]] = matrix[where[row["b"]], where[row["a"]]] = value
    width = SINGLE_COLUMN_IN if k <= 5 else DOUBLE_COLUMN_IN
    height = min(5.5, 1.6 + 0.42 * k) if k > 5 else 3.2
    with np.errstate(divide="ignore"):
        shown = np.log10(np.clip(matrix, 1e-6, 1))
    with style():
        figure = new_figure(width, height)
        ax = figure.subplots()
        image = ax.imshow(shown, cmap="viridis", vmin=-6, vmax=0)
        cell_pt = 72 * min(width - 1.9, height - 1.3) / max(k, 1)
        if cell_pt >= _CELL_TEXT_PT:
            for i in range(k):
                for j in range(k):
                    if np.isfinite(matrix[i, j]):
                        text = "<.001" if matrix[i, j] < 0.001 else f"{matrix[i, j]:.2g}"
                        colour = "#ffffff" if shown[i, j] < -3 else "#000000"
                        ax.text(j, i, text, ha="center", va="center", color=colour)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels([short(n, 16) for n in names], rotation=60, ha="right")
        ax.set_yticklabels([short(n, 16) for n in names])
        ax.spines[:].set_visible(False)
        bar = figure.colorbar(image, ax=ax, fraction=0.046, shrink=0.9)
        bar.set_label("log10 p (Holm)")
    return figure


def objective_scatter(
    points: pd.DataFrame,
    correlations: pd.DataFrame,
    metric: str,
    log_scale: bool,
    intervals: pd.DataFrame | None = None,
    confidence_level: float = 0.95,
) -> matplotlib.figure.Figure:
    """Mean rating against a metric per (model, item) and per model, with Spearman's rho in the titles.

    ``intervals`` (level, condition, item, ci_low, ci_high) gives each point's rating interval,
    drawn as a vertical bar. ``log_scale`` puts the metric on a log axis labelled in plain numbers.
    """
    series = sorted(points.loc[points["metric"] == metric, "condition"].unique())
    style_of = {c: (SERIES[k % len(SERIES)], MARKERS[(k // len(SERIES)) % len(MARKERS)]) for k, c in enumerate(series)}
    bounds = {}
    if intervals is not None and len(intervals):
        bounds = {
            (r["level"], r["condition"], r["item"]): (r["ci_low"], r["ci_high"]) for r in intervals.to_dict("records")
        }
    with style():
        figure = new_figure(DOUBLE_COLUMN_IN, 3.0)
        axes = figure.subplots(1, 2, sharey=True)
        for ax, level, title in ((axes[0], "model_item", "Per (model, item)"), (axes[1], "model", "Per model")):
            data = points[(points["metric"] == metric) & (points["level"] == level)]
            for c in series:
                subset = data[data["condition"] == c]
                if subset.empty:
                    continue
                colour, marker = style_of[c]
                y = subset["mean_rating"].to_numpy(dtype=float)
                spans = np.array([bounds.get((level, c, i), (np.nan, np.nan)) for i in subset["item"]], dtype=float)
                error = np.clip(np.vstack([y - spans[:, 0], spans[:, 1] - y]), 0, None) if len(spans) else None
                ax.errorbar(
                    subset["value"].to_numpy(dtype=float),
                    y,
                    yerr=None if error is None or np.isnan(error).all() else np.nan_to_num(error),
                    fmt=marker,
                    color=colour,
                    markersize=3 if level == "model_item" else 5,
                    elinewidth=0.6,
                    capsize=0 if level == "model_item" else 2,
                    alpha=0.85,
                    label=short(c, 20),
                )
            row = correlations[
                (correlations["metric"] == metric)
                & (correlations["level"] == level)
                & (correlations["method"] == "spearman")
            ]
            rho = (
                f"ρ = {row['rho'].iloc[0]:.2f} [{row['ci_low'].iloc[0]:.2f}, {row['ci_high'].iloc[0]:.2f}]"
                if len(row) and np.isfinite(row["rho"].iloc[0])
                else "ρ undefined"
            )
            ax.set_title(f"{title}\nSpearman {rho}")
            if log_scale:
                log_axis(ax.xaxis, data["value"].to_numpy(dtype=float))
            ax.set_xlabel(short(metric, 40) + (" (log scale)" if log_scale else ""))
            ax.grid(alpha=0.3, lw=0.4)
        axes[0].set_ylabel(f"Mean rating ({_pct(confidence_level)} CI)")
        if len(series) <= 16:
            figure.legend(*axes[1].get_legend_handles_labels(), loc="outside right upper")
    return figure


def log_axis(axis: matplotlib.axis.Axis, values: np.ndarray) -> None:
    """A log axis labelled in plain numbers (0.01, 0.1, 1): decades, plus 2 and 5 when it spans
    under two decades, so that a short axis still has labels; minor ticks unlabelled."""
    if isinstance(axis, matplotlib.axis.XAxis):
        axis.axes.set_xscale("log")
    else:
        axis.axes.set_yscale("log")
    positive = values[np.isfinite(values) & (values > 0)]
    decades = np.log10(positive.max() / positive.min()) if positive.size else 0.0
    subs = (1.0,) if decades >= 2 else (1.0, 2.0, 5.0)
    axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=subs))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def wants_log_axis(values: np.ndarray, named_log: bool) -> bool:
    """A log axis for positive values named as log metrics or spanning three decades or more."""
    finite = values[np.isfinite(values)]
    if finite.size == 0 or (finite <= 0).any():
        return False
    return named_log or float(finite.max() / finite.min()) >= 1000.0


def qq_residuals(points: pd.DataFrame, conditions: list[str], kinds: dict[str, str]) -> matplotlib.figure.Figure:
    """Normal Q-Q plot of each condition's standardised residuals, one panel per condition.

    ``points`` are ``evaluation.assumptions.qq_points`` (condition, theoretical, sample); the
    grey line is y = x, where normal residuals lie; ratings piled at an end of the scale bend
    the points away from it at that end.
    """
    shown = [c for c in conditions if c in set(points["condition"])]
    # Five across for up to ten conditions (two rows), the items' grid beyond.
    columns, rows = (max(len(shown), 1), 1) if len(shown) <= 5 else (5, 2)
    if len(shown) > 10:
        columns, rows, _ = _grid(len(shown), 1)
    values = np.abs(points[["theoretical", "sample"]].to_numpy(dtype=float))
    reach = 1.05 * max(3.0, float(np.nanmax(values))) if values.size else 3.0
    with style():
        figure = new_figure(DOUBLE_COLUMN_IN, 1.45 * rows + 0.45)
        axes = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
        groups = dict(iter(points.groupby("condition")))
        for ax, c in zip(axes.ravel(), shown):
            ax.plot([-reach, reach], [-reach, reach], color=GUIDE, lw=0.6, zorder=1)
            data = groups[c]
            ax.plot(data["theoretical"], data["sample"], "o", ms=1.6, mew=0, color=KIND_COLOURS[kinds[c]], zorder=2)
            ax.set_title(short(c, 24))
            ax.set_xlim(-reach, reach)
            ax.set_ylim(-reach, reach)
            ax.set_xticks([-2, 0, 2])
            ax.set_yticks([-2, 0, 2])
            # Tick labels on the outer panels only: fewer texts to lay out and draw.
            ax.label_outer()
        for ax in axes.ravel()[len(shown) :]:
            ax.set_visible(False)
        figure.supxlabel("Normal quantile")
        figure.supylabel("Standardised residual")
    return figure

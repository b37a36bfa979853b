"""The report's figures as files a paper can print: SVG, PDF and a 300 dpi PNG per figure.

Each figure of :mod:`evaluation.plots` is drawn once at its journal width (3.5 in, one
column; 7 in, two) with no text below 8 pt, then written to ``figures/<stem>.svg`` (text
kept as text), ``figures/<stem>.pdf`` (TrueType fonts embedded: journals refuse Type 3)
and ``figures/<stem>.png`` (``PNG_DPI``, for slides; the HTML report embeds it). The
files carry no creation date, so the same data give the same SVG and PDF.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import plots
from .descriptives import t_interval

if TYPE_CHECKING:
    import matplotlib.figure

    from .analysis import Analysis

PNG_DPI = 300
FOLDER = "figures"
FORMATS = ("svg", "pdf", "png")


@dataclass(frozen=True)
class PaperFigure:
    """One written figure: its key in the report, file stem, caption (plain text), print size and PNG bytes."""

    key: str
    stem: str
    caption: str
    width_in: float
    height_in: float
    png: bytes

    def files(self) -> list[str]:
        """The figure's files, relative to the bundle."""
        return [f"{FOLDER}/{self.stem}.{fmt}" for fmt in FORMATS]


def write_figure(figure: matplotlib.figure.Figure, key: str, stem: str, caption: str, out_dir: Path) -> PaperFigure:
    """Write ``figure`` as SVG, PDF and PNG into ``out_dir`` at its own (print) size."""
    width, height = (float(v) for v in figure.get_size_inches())
    with plots.style():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=PNG_DPI)
        # The layout is settled by that first draw; keeping it spares two more layout passes.
        figure.set_layout_engine("none")
        figure.savefig(out_dir / f"{stem}.svg", format="svg", metadata={"Date": None})
        figure.savefig(out_dir / f"{stem}.pdf", format="pdf", metadata={"CreationDate": None})
    png = buffer.getvalue()
    (out_dir / f"{stem}.png").write_bytes(png)
    return PaperFigure(key, stem, caption, width, height, png)


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "metric"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def rating_intervals(analysis: Analysis, metric: str) -> pd.DataFrame:
    """The rating interval of each point of a metric's scatter: per (model, item) the t interval of
    the cell's ratings across listeners; per model, that of per-listener means over the items that
    have the metric (the listener is the unit, as for the means)."""
    level = analysis.settings.confidence_level
    points = analysis.correlation_points
    points = points[points["metric"] == metric]
    cells = analysis.descriptives_item.set_index(["condition", "item"])[["ci_low", "ci_high"]]
    rows = []
    for r in points[points["level"] == "model_item"].to_dict("records"):
        key = (r["condition"], r["item"])
        low, high = cells.loc[key].to_numpy(dtype=float) if key in cells.index else (np.nan, np.nan)
        rows.append(
            {"level": "model_item", "condition": r["condition"], "item": r["item"], "ci_low": low, "ci_high": high}
        )
    cell_items = points[points["level"] == "model_item"].groupby("condition")["item"].apply(set)
    used = analysis.used
    for condition, items in cell_items.items():
        chosen = used[(used["condition"] == condition) & used["item"].isin(items)]
        low, high = t_interval(chosen.groupby("participant")["rating"].mean().to_numpy(), level)
        rows.append({"level": "model", "condition": condition, "item": "all", "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["level", "condition", "item", "ci_low", "ci_high"])


def report_figures(analysis: Analysis, out_dir: Path) -> list[PaperFigure]:
    """Draw and write every figure of the report into ``out_dir / FOLDER``; return them in report order."""
    s = analysis.settings
    folder = out_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    level = plots._pct(s.confidence_level)
    n = int(analysis.used["participant"].nunique())
    out = [
        write_figure(
            plots.screening_plot(analysis.screening.table, s.reference_max_fraction, s.anchor_max_fraction),
            "screening",
            "screening",
            f"Post-screening (ITU-R BS.1534-3 §4.1.2): each assessor's share of items with the hidden reference "
            f"below {s.reference_threshold:g} against the share with the {s.anchor_kind} anchor above "
            f"{s.anchor_threshold:g}; dashed lines: the exclusion limits.",
            folder,
        ),
        write_figure(
            plots.means_with_ci(analysis.descriptives_overall, analysis.kinds, s.confidence_level),
            "means",
            "means",
            f"Mean rating per condition (mean of per-listener means across items) with its {level} t confidence "
            f"interval; n = {n} listeners.",
            folder,
        ),
        write_figure(
            plots.boxplots_per_item(
                analysis.used, analysis.conditions, analysis.kinds, analysis.descriptives_item, s.confidence_level
            ),
            "boxplots",
            "items",
            f"Ratings per item and condition: mean with its {level} t confidence interval across listeners (dot "
            "and bar) over the box plot (box from the first to the third quartile, median line, whiskers to the "
            "furthest rating within 1.5 × IQR, ratings beyond them as grey dots).",
            folder,
        ),
    ]
    if len(analysis.pairwise):
        out.append(
            write_figure(
                plots.pvalue_heatmap(analysis.pairwise, analysis.conditions),
                "heatmap",
                "pairwise-p",
                "Holm-corrected p-values of the pairwise Wilcoxon signed-rank tests (colour: log10 p).",
                folder,
            )
        )
    taken: set[str] = set()
    log_metrics = {m.lower() for m in s.log_metrics}
    correlations = analysis.correlations
    for metric in sorted(correlations["metric"].unique()) if len(correlations) else []:
        values = analysis.correlation_points.loc[analysis.correlation_points["metric"] == metric, "value"]
        log_scale = plots.wants_log_axis(values.to_numpy(dtype=float), str(metric).lower() in log_metrics)
        out.append(
            write_figure(
                plots.objective_scatter(
                    analysis.correlation_points,
                    correlations,
                    metric,
                    log_scale,
                    rating_intervals(analysis, metric),
                    s.confidence_level,
                ),
                f"scatter:{metric}",
                f"scatter-{_slug(str(metric), taken)}",
                f"Mean rating against {metric} per (model, item) and per model, with {level} t intervals of the "
                "rating; Spearman's ρ with its bootstrap interval above each panel"
                + (f"; {metric} on a logarithmic axis." if log_scale else "."),
                folder,
            )
        )
    if analysis.checks is not None and len(analysis.checks.qq):
        out.append(
            write_figure(
                plots.qq_residuals(analysis.checks.qq, analysis.conditions, analysis.kinds),
                "qq",
                "residuals-qq",
                "Normal Q-Q plot of the residuals per condition (rating minus its listener and excerpt effects, "
                "divided by their root mean square; at most 200 order statistics each); grey line: y = x.",
                folder,
            )
        )
    return out


def pngs(figures: list[PaperFigure]) -> Mapping[str, bytes]:
    """Key -> PNG bytes, as the HTML report embeds them."""
    return {f.key: f.png for f in figures}

"""Paradigm results for a paper: one booktabs table and one figure per paradigm, and the HTML
sections with the figure inline.

The tables follow ``evaluation.report.latex_tables`` (booktabs, intervals in brackets, Holm p
to three decimals); the figures follow :mod:`evaluation.figures` (one column, 3.5 in, written as
SVG, PDF and PNG into ``figures/``):

- ABX: proportion correct per pair with its Clopper-Pearson interval, chance (0.5) dashed;
- AB / ABN preference: Bradley-Terry (Davidson) scores with their Wald intervals, or the win
  shares when no maximum-likelihood estimate exists;
- BS.1116: mean difference grade per condition with its t interval, 0 (no difference) dashed;
- ACR / DCR: MOS (DMOS) per condition with its t interval on the 1..5 scale;
- ranking: mean rank per condition (1 = best, at the top).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import plots
from ..figures import FOLDER, PaperFigure, write_figure
from ..latex import escape
from . import bundle
from .common import ParadigmResult

if TYPE_CHECKING:
    import matplotlib.figure


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and not math.isfinite(float(value))):
        return "--"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _interval(low: Any, high: Any, digits: int = 2) -> str:
    if any(v is None or not math.isfinite(float(v)) for v in (low, high)):
        return "--"
    return f"[{float(low):.{digits}f}, {float(high):.{digits}f}]"


def _p(value: Any) -> str:
    if value is None or not math.isfinite(float(value)):
        return "--"
    return "$<0.001$" if float(value) < 0.001 else f"{float(value):.3f}"


def _level(result: ParadigmResult) -> int:
    return int(round(100 * float(result.summary.get("confidence_level") or 0.95)))


def _table(key: str, caption: str, spec: str, head: str, rows: list[str]) -> list[str]:
    label = "".join(ch if ch.isalnum() else "-" for ch in key.lower())
    return [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{caption}}}",
        f"\\label{{tab:{label}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        head,
        "\\midrule",
        *(rows or ["\\multicolumn{" + str(spec.count("l") + spec.count("r") + spec.count("c")) + "}{l}{None.} \\\\"]),
        "\\bottomrule",
        "\\end{tabular}",
        "\\end{table}",
        "",
    ]


def latex_table(key: str, result: ParadigmResult) -> list[str]:
    """The main table of one paradigm's result as booktabs LaTeX lines."""
    level = _level(result)
    name = escape(key)
    if result.paradigm == "abx":
        rows = [
            f"{escape(r['comparison'])} & {r['participants']} & {r['trials']} & {r['correct']} & "
            f"{_num(r['proportion'], 3)} & {_interval(r['ci_low'], r['ci_high'], 3)} & {_p(r['pvalue_holm'])} & "
            f"{_num(r['dprime'])} \\\\"
            for r in result.tables["pooled"].to_dict("records")
        ]
        return _table(
            key,
            f"ABX ({name}): proportion correct per pair, pooled over listeners, with its {level}\\,\\% "
            "Clopper--Pearson interval; exact one-sided binomial test against 0.5, Holm-corrected; $d'$ of an "
            f"unbiased observer ({escape(result.summary.get('model', 'differencing'))} model).",
            "lrrrrcrr",
            f"Pair & Listeners & Trials & Correct & Proportion & {level}\\,\\% CI & $p_\\mathrm{{Holm}}$ & $d'$ \\\\",
            rows,
        )
    if result.paradigm == "preference":
        rows = [
            f"{escape(r['condition'])} & {r['comparisons']} & {r['wins']} & {r['losses']} & {r['ties']} & "
            f"{_num(r['win_share'], 3)} & {_num(r['score'])} & {_interval(r['ci_low'], r['ci_high'])} \\\\"
            for r in result.tables["scores"].to_dict("records")
        ]
        model = "Davidson (ties)" if result.summary.get("model") == "davidson" else "Bradley--Terry"
        return _table(
            key,
            f"Paired preference ({name}): wins, losses and no-preference answers per condition, win share "
            f"(ties half), and {model} log-worth score with its {level}\\,\\% Wald interval.",
            "lrrrrrrc",
            f"Condition & Pairs & Wins & Losses & Ties & Win share & Score & {level}\\,\\% CI \\\\",
            rows,
        )
    if result.paradigm == "bs1116":
        rows = [
            f"{escape(r['condition'])} & {r['n']} & {r['n_trials']} & {_num(r['mean_difference'])} & "
            f"{_interval(r['ci_low'], r['ci_high'])} & {_num(r['grade_condition'])} & {_num(r['grade_reference'])} \\\\"
            for r in result.tables["conditions"].to_dict("records")
        ]
        return _table(
            key,
            f"ITU-R BS.1116-3 ({name}): mean difference grade (condition minus hidden reference) of the assessors "
            f"retained by post-screening, with its {level}\\,\\% t interval (the assessor is the unit), and the mean "
            "grades.",
            "lrrrcrr",
            f"Condition & $n$ & Trials & Diff. grade & {level}\\,\\% CI & Grade & Reference \\\\",
            rows,
        )
    if result.paradigm in ("acr", "dcr"):
        statistic = "mos" if result.paradigm == "acr" else "dmos"
        rows = [
            f"{escape(r['condition'])} & {r['n_votes']} & {r['n_participants']} & {_num(r[statistic])} & "
            f"{_interval(r['ci_low'], r['ci_high'])} \\\\"
            for r in result.tables["conditions"].to_dict("records")
        ]
        points = int(result.summary.get("points") or 5)
        scale = "ITU-T P.800 Annex B" if result.paradigm == "acr" else "ITU-T P.800 Annex D"
        if points != 5:
            scale = f"{points}-point category scale"
        return _table(
            key,
            f"{statistic.upper()} ({name}, {scale}, 1..{points}) per condition with its {level}\\,\\% t interval "
            "over the votes.",
            "lrrrc",
            f"Condition & Votes & Listeners & {statistic.upper()} & {level}\\,\\% CI \\\\",
            rows,
        )
    if result.paradigm == "ranking":
        f = result.summary.get("friedman") or {}
        friedman = "Friedman test undefined."
        if f.get("statistic") is not None and f.get("pvalue") is not None:
            p_text = "$p < 0.001$" if f["pvalue"] < 0.001 else f"$p = {f['pvalue']:.3f}$"
            friedman = (
                f"Friedman $\\chi^2({f['df']}) = {f['statistic']:.2f}$, {p_text}, "
                f"Kendall's $W = {f['kendall_w']:.2f}$ ($n = {f['n']}$)."
            )
        rows = [
            f"{escape(r['condition'])} & {r['n']} & {_num(r['mean_rank'])} & {_num(r['median_rank'])} & "
            f"{r['first_places']} \\\\"
            for r in result.tables["conditions"].to_dict("records")
        ]
        return _table(
            key,
            f"Ranking ({name}): mean and median of per-listener mean ranks (1 = best) and first places. {friedman}",
            "lrrrr",
            "Condition & $n$ & Mean rank & Median rank & First places \\\\",
            rows,
        )
    return []


def latex_tables(results: Mapping[str, ParadigmResult]) -> str:
    """Every paradigm's table, ready to \\input (needs booktabs)."""
    lines: list[str] = []
    for key, result in results.items():
        lines += latex_table(key, result)
    return "\n".join(lines)


def _intervals(
    labels: list[str],
    estimate: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    ylabel: str,
    limits: tuple[float, float] | None = None,
    guide: float | None = None,
    invert: bool = False,
) -> matplotlib.figure.Figure:
    """One point per label with its interval (none where undefined), one column wide."""
    with plots.style():
        figure = plots.new_figure(plots.width_for(len(labels)), 2.6)
        ax = figure.subplots()
        if guide is not None:
            ax.axhline(guide, color=plots.GUIDE, lw=0.8, ls="--", zorder=0)
        for i, (mean, lo, hi) in enumerate(zip(estimate, low, high, strict=True)):
            if not np.isfinite(mean):
                continue
            bounded = np.isfinite(lo) and np.isfinite(hi)
            error = [[mean - lo], [hi - mean]] if bounded else None
            ax.errorbar(i, mean, yerr=error, fmt="o", color=plots.SERIES[0], capsize=3, markersize=4, elinewidth=0.9)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([plots.short(c, 20) for c in labels], rotation=45, ha="right")
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_ylabel(ylabel)
        if limits is not None:
            ax.set_ylim(*limits)
        if invert:
            ax.invert_yaxis()
    return figure


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def figure_for(result: ParadigmResult) -> tuple[matplotlib.figure.Figure, str, str] | None:
    """(figure, file stem suffix, caption) of one result; None when its table is empty."""
    level = plots._pct(float(result.summary.get("confidence_level") or 0.95))
    if result.paradigm == "abx":
        t = result.tables["pooled"]
        if t.empty:
            return None
        figure = _intervals(
            [str(c) for c in t["comparison"]],
            _column(t, "proportion"),
            _column(t, "ci_low"),
            _column(t, "ci_high"),
            f"Proportion correct ({level} CI)",
            (0.0, 1.02),
            0.5,
        )
        return (
            figure,
            "proportion-correct",
            f"ABX: proportion correct per pair, pooled over listeners, with its {level} Clopper-Pearson interval; "
            "dashed: chance (0.5).",
        )
    if result.paradigm == "preference":
        t = result.tables["scores"]
        if t.empty:
            return None
        scores = _column(t, "score")
        if np.isfinite(scores).any():
            figure = _intervals(
                [str(c) for c in t["condition"]],
                scores,
                _column(t, "ci_low"),
                _column(t, "ci_high"),
                f"Log-worth score ({level} CI)",
                guide=0.0,
            )
            model = "Davidson (ties)" if result.summary.get("model") == "davidson" else "Bradley-Terry"
            return figure, "scores", f"Paired preference: {model} score per condition with its {level} Wald interval."
        share = _column(t, "win_share")
        figure = _intervals(
            [str(c) for c in t["condition"]],
            share,
            np.full_like(share, np.nan),
            np.full_like(share, np.nan),
            "Win share",
            (0.0, 1.02),
            0.5,
        )
        return figure, "win-share", "Paired preference: win share per condition (no-preference answers count half)."
    if result.paradigm == "bs1116":
        t = result.tables["conditions"]
        if t.empty:
            return None
        figure = _intervals(
            [str(c) for c in t["condition"]],
            _column(t, "mean_difference"),
            _column(t, "ci_low"),
            _column(t, "ci_high"),
            f"Difference grade ({level} CI)",
            (-4.1, 1.0),
            0.0,
        )
        return (
            figure,
            "difference-grades",
            f"ITU-R BS.1116-3: mean difference grade (condition minus hidden reference) per condition with its "
            f"{level} t interval over the retained assessors; dashed: no difference.",
        )
    if result.paradigm in ("acr", "dcr"):
        t = result.tables["conditions"]
        if t.empty:
            return None
        statistic = "mos" if result.paradigm == "acr" else "dmos"
        points = int(result.summary.get("points") or 5)
        figure = _intervals(
            [str(c) for c in t["condition"]],
            _column(t, statistic),
            _column(t, "ci_low"),
            _column(t, "ci_high"),
            f"{statistic.upper()} ({level} CI)",
            (0.9, points + 0.1),
        )
        return (
            figure,
            statistic,
            f"{statistic.upper()} per condition (1..{points}) with its {level} t interval over the votes.",
        )
    if result.paradigm == "ranking":
        t = result.tables["conditions"]
        if t.empty:
            return None
        ranks = _column(t, "mean_rank")
        k = len(t)
        figure = _intervals(
            [str(c) for c in t["condition"]],
            ranks,
            np.full_like(ranks, np.nan),
            np.full_like(ranks, np.nan),
            "Mean rank (1 = best)",
            (0.8, k + 0.2),
            invert=True,
        )
        return figure, "mean-ranks", "Ranking: mean of per-listener mean ranks per condition (1 = best, at the top)."
    return None


def write_figures(results: Mapping[str, ParadigmResult], out_dir: Path) -> list[PaperFigure]:
    """Each paradigm's figure written into ``out_dir / figures`` (key ``paradigm:<name>``)."""
    folder = Path(out_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for key, result in results.items():
        drawn = figure_for(result)
        if drawn is None:
            continue
        figure, suffix, caption = drawn
        stem = "".join(ch if ch.isalnum() else "-" for ch in key.lower()) + f"-{suffix}"
        out.append(write_figure(figure, f"paradigm:{key}", stem, caption, folder))
    return out


def _img(figure: PaperFigure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    label = html.escape(figure.caption)
    png = figure.png
    width = int.from_bytes(png[16:20], "big") // 2 if png[12:16] == b"IHDR" else 0
    size = f" width='{width}'" if width else ""
    return (
        f"<figure><img alt='{label}'{size} src='data:image/png;base64,{data}'><figcaption>{label}</figcaption></figure>"
    )


def html_sections(results: Mapping[str, ParadigmResult], figures: list[PaperFigure]) -> list[str]:
    """``bundle.html_sections`` for each paradigm, its figure after the methods."""
    by_key = {f.key: f for f in figures}
    out: list[str] = []
    for key, result in results.items():
        section = bundle.html_sections({key: result})
        figure = by_key.get(f"paradigm:{key}")
        if figure is not None:
            section.insert(2, _img(figure))
        section[0] = section[0].replace("</h2>", f" ({html.escape(key)})</h2>", 1)
        out += section
    return out

"""Report pieces for the intervals of every difference and for excerpts as a sample.

HTML sections, sentences of the methods text, LaTeX tables and CSV tables built from
``Analysis.pairwise_intervals`` and ``Analysis.excerpts`` (see evaluation.intervals and
evaluation.items). The HTML table renderer and the LaTeX escaper are passed in, so this
module depends on the analysis only.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .intervals import INTERVAL_COLUMNS
from .items import inference_text

if TYPE_CHECKING:
    from .analysis import Analysis

TableHtml = Callable[..., str]


def _num(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if value is not None and np.isfinite(value) else "–"


def _span(low: float, high: float, digits: int = 1) -> str:
    return f"[{_num(low, digits)}, {_num(high, digits)}]"


def _p(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def interval_display(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """A compact table of differences: key columns, mean difference, intervals as "[low, high]", effect sizes."""
    rows = []
    for r in frame.to_dict("records"):
        row = {k: r[k] for k in keys}
        row.update(
            {
                "n": r["n"],
                "difference": _num(r["mean_difference"], 2),
                "ci": _span(r["ci_low"], r["ci_high"]),
                "simultaneous ci": _span(r["ci_sim_low"], r["ci_sim_high"]),
                "Holm-compatible ci": _span(r["ci_holm_low"], r["ci_holm_high"]),
                "p (t, Holm)": _p(r["pvalue_t_holm"]),
                "d_z [ci]": f"{_num(r['cohen_dz'], 2)} {_span(r['cohen_dz_low'], r['cohen_dz_high'], 2)}",
                "r [ci]": f"{_num(r['rank_biserial'], 2)} {_span(r['rank_biserial_low'], r['rank_biserial_high'], 2)}",
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def intervals_html(analysis: Analysis, table_html: TableHtml) -> list[str]:
    """The pairwise differences with marginal, simultaneous and Holm-compatible intervals and effect sizes."""
    if analysis.pairwise_intervals.empty:
        return []
    level = f"{100 * analysis.settings.confidence_level:g} %"
    return [
        "<h3>Differences with intervals</h3>",
        f"<p>Mean difference a − b of per-listener means. ci: {level} t interval of each pair alone; simultaneous "
        f"ci: Bonferroni t intervals that hold {level} jointly over the {len(analysis.pairwise_intervals)} pairs; "
        "Holm-compatible ci: Strassburger &amp; Bretz (2008), 0 on the side where Holm rejects; p (t, Holm): "
        f"paired t test, Holm-adjusted; d_z: Cohen's d_z with exact noncentral-t {level} interval; r: "
        f"rank-biserial correlation with Fisher-z {level} interval.</p>",
        table_html(interval_display(analysis.pairwise_intervals, ["a", "b"])),
    ]


def excerpts_html(analysis: Analysis, table_html: TableHtml) -> list[str]:
    """The condition x item section: inference sentence, interaction ANOVA, min F', by-item tests, per-item results."""
    result = analysis.excerpts
    if result is None:
        return []
    out = [
        "<h2>Excerpts as a sample (condition × item)</h2>",
        f"<p class='methods'>{html.escape(inference_text(result))}</p>",
    ]
    if result.interaction is not None:
        effects = pd.DataFrame(result.interaction["effects"])
        out += [
            f"<h3>Two-way repeated-measures ANOVA, condition × item ({result.interaction['n']} listeners with every "
            f"cell, {result.interaction['n_incomplete']} left out)</h3>",
            table_html(effects, pvalues=("pvalue", "pvalue_gg")),
        ]
    if result.min_f is not None:
        m = result.min_f
        words = (
            f"Condition effect by listener F1({m['F1']['df1']:g}, {m['F1']['df2']:g}) = {m['F1']['F']:.2f}, "
            f"p {_p_words(m['F1']['pvalue'])}; by item F2({m['F2']['df1']:g}, {m['F2']['df2']:g}) = "
            f"{m['F2']['F']:.2f}, p {_p_words(m['F2']['pvalue'])}; min F′({m['df1']:g}, {m['df2']:.1f}) = "
            f"{m['min_f']:.2f}, p {_p_words(m['pvalue'])} (Clark 1973)."
        )
        out.append(f"<p>{html.escape(words)}</p>")
    if not result.by_item.empty:
        by_item = interval_display(result.by_item, ["a", "b"])
        by_item.insert(3, "p (Wilcoxon, Holm)", [_p(v) for v in result.by_item["pvalue_holm"]])
        out += [
            f"<h3>By-item tests ({result.n_items} excerpts are the units)</h3>",
            "<p>Condition means per excerpt, paired across excerpts: Wilcoxon signed-rank (Pratt) and paired t, "
            "each Holm-adjusted over the pairs.</p>",
            table_html(by_item),
        ]
    if not result.per_item.empty:
        out += [
            f"<details><summary>Per excerpt: each model against {html.escape(str(result.baseline))} "
            "(paired t over listeners; Holm and simultaneous intervals over every excerpt × model)</summary>",
            table_html(interval_display(result.per_item, ["item", "condition"])),
            "</details>",
        ]
    return out


def _p_words(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "undefined"
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"


def methods_sentences(analysis: Analysis) -> list[str]:
    """Sentences of the methods text for the intervals and the excerpts-as-a-sample analysis."""
    s = analysis.settings
    level = f"{100 * s.confidence_level:g} %"
    out = []
    if len(analysis.pairwise_intervals):
        out.append(
            f"Each pairwise mean difference is given with Bonferroni-simultaneous {level} t intervals (joint over the "
            f"{len(analysis.pairwise_intervals)} pairs) and Holm-compatible intervals (Strassburger & Bretz 2008), "
            f"with Cohen's d_z (exact noncentral-t {level} interval) and the rank-biserial r (Fisher-z interval)."
        )
    result = analysis.excerpts
    if result is None:
        return out
    if result.interaction is not None:
        effect = result.interaction["effects"][2]
        out.append(
            f"A two-way repeated-measures ANOVA (condition × item, {result.interaction['n']} listeners with every "
            f"cell, Greenhouse–Geisser corrected) gave for the interaction F({effect['df1']}, {effect['df2']}) = "
            f"{effect['F']:.2f}, ε = {effect['eps_gg']:.2f}, p {_p_words(effect['pvalue_gg'])}."
        )
    if result.min_f is not None:
        m = result.min_f
        out.append(
            f"Treating the {result.n_items} excerpts as a sample, the condition effect gave min F′({m['df1']:g}, "
            f"{m['df2']:.1f}) = {m['min_f']:.2f}, p {_p_words(m['pvalue'])} (Clark 1973), and pairs were also tested "
            "across excerpts (Wilcoxon and paired t on condition means per excerpt, Holm-adjusted)."
        )
    out.append(inference_text(result))
    return out


def latex(analysis: Analysis, escape: Callable[[str], str]) -> list[str]:
    """Booktabs tables of the pairwise differences with intervals and of the by-item tests."""
    level = int(round(100 * analysis.settings.confidence_level))
    out: list[str] = []
    if len(analysis.pairwise_intervals):
        out += _latex_table(
            analysis.pairwise_intervals,
            f"Mean differences of per-listener means with {level}\\,\\% Bonferroni-simultaneous and "
            f"Holm-compatible (Strassburger \\& Bretz 2008) t intervals; $d_z$ with exact noncentral-$t$ "
            f"{level}\\,\\% interval; $r$: rank-biserial correlation with Fisher-$z$ {level}\\,\\% interval.",
            "tab:mushra-intervals",
            escape,
        )
    result = analysis.excerpts
    if result is not None and not result.by_item.empty:
        caption = (
            f"By-item tests: condition means per excerpt paired across the {result.n_items} excerpts, "
            f"Holm-adjusted paired $t$, {level}\\,\\% Bonferroni-simultaneous intervals."
        )
        if result.min_f is not None:
            m = result.min_f
            caption += f" min $F'({m['df1']:g}, {m['df2']:.1f}) = {m['min_f']:.2f}$ (Clark 1973)."
        out += _latex_table(result.by_item, caption, "tab:mushra-by-item", escape)
    return out


def _latex_table(frame: pd.DataFrame, caption: str, label: str, escape: Callable[[str], str]) -> list[str]:
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{caption}}}",
        f"\\label{{{label}}}",
        "\\begin{tabular}{llrrccrcc}",
        "\\toprule",
        "A & B & $n$ & $\\Delta$ & Simultaneous CI & Holm CI & $p_\\mathrm{Holm}$ & $d_z$ [CI] & $r$ [CI] \\\\",
        "\\midrule",
    ]
    for r in frame.to_dict("records"):
        p = "$<0.001$" if r["pvalue_t_holm"] < 0.001 else _p(r["pvalue_t_holm"])
        lines.append(
            f"{escape(str(r['a']))} & {escape(str(r['b']))} & {r['n']} & {_num(r['mean_difference'])} & "
            f"{_span(r['ci_sim_low'], r['ci_sim_high'])} & {_span(r['ci_holm_low'], r['ci_holm_high'])} & {p} & "
            f"{_num(r['cohen_dz'], 2)} {_span(r['cohen_dz_low'], r['cohen_dz_high'], 2)} & "
            f"{_num(r['rank_biserial'], 2)} {_span(r['rank_biserial_low'], r['rank_biserial_high'], 2)} \\\\"
        )
    return lines + ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]


def csv_tables(analysis: Analysis) -> dict[str, pd.DataFrame]:
    """``pairwise_intervals.csv``, ``by_item.csv`` and ``per_item.csv`` (empty tables keep their header)."""
    result = analysis.excerpts
    by_item = result.by_item if result is not None else pd.DataFrame()
    per_item = result.per_item if result is not None else pd.DataFrame()
    return {
        "pairwise_intervals.csv": _with_header(analysis.pairwise_intervals, ["a", "b"]),
        "by_item.csv": _with_header(by_item, ["a", "b"]),
        "per_item.csv": _with_header(per_item, ["item", "condition", "baseline"]),
    }


def _with_header(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame if len(frame.columns) else pd.DataFrame(columns=keys + INTERVAL_COLUMNS)

"""The report's parts for ``evaluation.checks``: HTML sections, CSV tables and methods sentences."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from html import escape
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .analysis import Analysis

TableHtml = Callable[..., str]
Img = Callable[[bytes, str], str]


def _p_words(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "undefined"
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"


def bounded_table(analysis: Analysis) -> pd.DataFrame:
    """Per condition: the Gaussian mean with its t interval beside the bounded intervals and the beta model."""
    checks = analysis.checks
    assert checks is not None
    columns = ["condition", "n", "mean", "ci_low", "ci_high", "bca_low", "bca_high"]
    table = analysis.descriptives_overall[columns].rename(columns={"ci_low": "t_low", "ci_high": "t_high"})
    table = table.merge(checks.logit, on="condition", how="left")
    if checks.beta is not None:
        beta = checks.beta.rename(
            columns={"mean": "beta_mean", "ci_low": "beta_low", "ci_high": "beta_high", "precision": "beta_precision"}
        )
        table = table.merge(beta[["condition", "beta_mean", "beta_low", "beta_high", "beta_precision"]], on="condition")
    return table


def html(analysis: Analysis, table_html: TableHtml, img: Img, figures: Mapping[str, bytes]) -> list[str]:
    """Sections: bounded scale, the Gaussian model's assumptions, listener reliability."""
    checks = analysis.checks
    if checks is None:
        return []
    s = analysis.settings
    level = f"{100 * s.confidence_level:g} %"
    out = [
        "<h2>Bounded scale</h2>",
        f"<p>Per condition, from per-listener means: the mean with its {level} t interval (which can pass 100 near "
        "the ceiling), the BCa bootstrap interval (inside the observed range by construction) and the interval built "
        "on the logit scale (always inside 0–100)"
        + (
            "; beside them, a beta regression with a mean and a precision per condition (Wald interval on the logit "
            "scale)."
            if checks.beta is not None
            else "."
        )
        + "</p>",
        table_html(bounded_table(analysis)),
    ]
    out += _ordinal_html(analysis, table_html)
    out.append("<h2>Assumptions of the Gaussian model (ITU-R BS.1534-3 §9.3.3, Attachment 4)</h2>")
    a = checks.assumptions
    bf, lev = a["equal_variance"]["brown_forsythe"], a["equal_variance"]["levene"]
    words = (
        "Residuals: each rating minus its listener and excerpt effects within its condition; per condition the "
        "residual SD, skewness, excess kurtosis, Shapiro–Wilk and D'Agostino K² tests."
    )
    if bf is not None and lev is not None:
        words += (
            f" Equal residual variances: Brown–Forsythe F({bf['df1']}, {bf['df2']}) = {bf['statistic']:.2f}, "
            f"p {_p_words(bf['pvalue'])}; Levene F = {lev['statistic']:.2f}, p {_p_words(lev['pvalue'])}."
        )
    if a.get("mixed_model_residual_sd") is not None and a.get("pooled_residual_sd") is not None:
        words += (
            f" Pooled residual SD {a['pooled_residual_sd']:.2f}; the mixed model's {a['mixed_model_residual_sd']:.2f}."
        )
    out.append(
        f"<p>{escape(words)} With many ratings the tests find small departures: read the sizes and the plot.</p>"
    )
    out.append(table_html(pd.DataFrame(a["per_condition"]), pvalues=("shapiro_p", "dagostino_p")))
    if "qq" in figures:
        out.append(img(figures["qq"], "Normal Q-Q plot of the standardised residuals per condition"))
    out += [
        "<h2>Listener reliability</h2>",
        "<p>Intraclass correlations of the listeners × (condition, item) table (Shrout &amp; Fleiss 1979; "
        f"McGraw &amp; Wong 1996), with {level} intervals; listeners with an empty cell are left out of it.</p>",
        table_html(checks.icc, pvalues=("pvalue",)),
    ]
    if checks.retest_pooled is not None:
        p = checks.retest_pooled
        out += [
            f"<p>Repeated trials: {p['n_pairs']} repeated ratings; first against repeated presentation r = "
            f"{p['r']:.2f}, mean absolute difference {p['mean_abs_difference']:.1f} points, mean drift "
            f"{p['mean_difference']:+.1f} (repeat − first).</p>",
            table_html(checks.retest),
        ]
    return out


def _ordinal_html(analysis: Analysis, table_html: TableHtml) -> list[str]:
    checks = analysis.checks
    assert checks is not None
    if checks.ordinal is None:
        if checks.ordinal_problem:
            return ["<h2>Ordinal model</h2>", f"<p>Not fitted: {escape(checks.ordinal_problem)}.</p>"]
        return []
    o = checks.ordinal.stats
    level = f"{100 * analysis.settings.confidence_level:g} %"
    counts = ", ".join(f"{c['label']} {c['n']}" for c in o["categories"])
    return [
        "<h2>Ordinal model</h2>",
        "<p>Beside the Gaussian model: a cumulative logit (proportional-odds) model of the ratings as ordered "
        "categories, each rating binned into the five intervals of the BS.1534-3 scale (Bad 0–20, Poor 20–40, "
        f"Fair 40–60, Good 60–80, Excellent 80–100; counts: {escape(counts)}), condition as a fixed effect "
        "(McCullagh 1980; Agresti 2013 §8.2). A condition's effect is the log odds ratio of a higher category "
        f"than {escape(str(o['baseline']))}'s; standard errors are cluster-robust by listener "
        f"({o['n_listeners']} listeners), intervals ({level}) and tests use t on {o['df']} df; the estimates are "
        "population-averaged. Pairwise p-values are Holm-adjusted."
        + "".join(f" {escape(str(e['condition']))} is left out: {escape(e['reason'])}." for e in o["left_out"])
        + ("" if o["converged"] else " The fit did not converge: read it with care.")
        + "</p>",
        table_html(
            checks.ordinal.effects,
            ["condition", "log_odds_ratio", "se", "ci_low", "ci_high", "odds_ratio", "pvalue"],
            pvalues=("pvalue",),
        ),
        table_html(checks.ordinal.pairwise, pvalues=("pvalue", "pvalue_holm")),
        table_html(checks.ordinal.thresholds),
    ]


def latex(analysis: Analysis, escape_tex: Callable[[str], str]) -> list[str]:
    """Booktabs table of the ordinal model's condition effects (log odds ratios against the baseline)."""
    checks = analysis.checks
    if checks is None or checks.ordinal is None:
        return []
    o = checks.ordinal.stats
    level = int(round(100 * analysis.settings.confidence_level))
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        "\\caption{Cumulative logit (proportional-odds) model of the ratings binned to the five BS.1534-3 "
        f"intervals: log odds ratio of a higher category than {escape_tex(str(o['baseline']))}, with "
        f"{level}\\,\\% intervals from listener-clustered robust standard errors ($t$ on {o['df']} df).}}",
        "\\label{tab:mushra-ordinal}",
        "\\begin{tabular}{lrcrr}",
        "\\toprule",
        f"Condition & log OR & {level}\\,\\% CI & OR & $p$ \\\\",
        "\\midrule",
    ]
    for r in checks.ordinal.effects.to_dict("records"):
        if r["condition"] == o["baseline"]:
            continue
        p = "$<0.001$" if r["pvalue"] < 0.001 else f"{r['pvalue']:.3f}"
        lines.append(
            f"{escape_tex(str(r['condition']))} & {r['log_odds_ratio']:.2f} & "
            f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] & {r['odds_ratio']:.2f} & {p} \\\\"
        )
    return lines + ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]


def csv_tables(analysis: Analysis) -> dict[str, pd.DataFrame]:
    """``bounded.csv``, ``residuals.csv``, ``icc.csv`` and, with repeated trials, ``retest.csv``."""
    checks = analysis.checks
    if checks is None:
        return {}
    out = {
        "bounded.csv": bounded_table(analysis),
        "residuals.csv": pd.DataFrame(checks.assumptions["per_condition"]),
        "icc.csv": checks.icc,
    }
    if checks.retest_pooled is not None:
        out["retest.csv"] = checks.retest
    if checks.ordinal is not None:
        out["ordinal_effects.csv"] = checks.ordinal.effects
        out["ordinal_pairwise.csv"] = checks.ordinal.pairwise
        out["ordinal_thresholds.csv"] = checks.ordinal.thresholds
    return out


def methods_sentences(analysis: Analysis) -> list[str]:
    """Sentences of the methods text for the checks."""
    checks = analysis.checks
    if checks is None:
        return []
    out = [
        "Intervals that stay inside the 0–100 scale are given beside the t intervals: BCa bootstrap and a t interval "
        "on the logit scale"
        + (
            ", with a beta regression of per-listener means (a mean and a precision per condition)"
            if checks.beta is not None
            else ""
        )
        + "."
    ]
    if checks.ordinal is not None:
        o = checks.ordinal.stats
        out.append(
            "As a model of the ratings as ordered categories, a cumulative logit (proportional-odds) model of the "
            "ratings binned into the five BS.1534-3 scale intervals with condition as a fixed effect gave log odds "
            f"ratios against {o['baseline']}, with standard errors clustered by listener (t on {o['df']} df)."
        )
    bf = checks.assumptions["equal_variance"]["brown_forsythe"]
    if bf is not None:
        out.append(
            f"Residual variances differed across conditions by the Brown–Forsythe test at p {_p_words(bf['pvalue'])}."
            if bf["pvalue"] < analysis.settings.alpha
            else f"The Brown–Forsythe test found no difference in residual variance across conditions "
            f"(p {_p_words(bf['pvalue'])})."
        )
    agreement = checks.icc[(checks.icc["type"] == "ICC(2,k)")]
    if len(agreement):
        r = agreement.iloc[0]
        out.append(
            f"The panel's mean ratings had ICC(2,k) = {r['icc']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] over "
            f"{r['scope']} ({int(r['n_raters'])} listeners, {int(r['n_targets'])} condition × item cells)."
        )
    if checks.retest_pooled is not None:
        p = checks.retest_pooled
        out.append(
            f"Repeated trials ({p['n_pairs']} pairs) agreed with the first presentation at r = {p['r']:.2f}, "
            f"mean absolute difference {p['mean_abs_difference']:.1f} points."
        )
    return out

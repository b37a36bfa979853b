"""The report bundle of one experiment: HTML with inline plots, CSVs, stats.json, LaTeX, provenance.

``build_report`` writes into ``out_dir``:

- ``report.html``: self-contained (CSS and PNG plots inline as base64),
- ``stats.json``: the summary documented key by key in docs/statistics.md,
- ``descriptives.csv``, ``pairwise.csv``, ``screening.csv``, ``correlations.csv``,
  ``outliers.csv``, ``equivalence.csv``, ``mixed_model.csv``, ``pairwise_intervals.csv``,
  ``by_item.csv``, ``per_item.csv``,
- ``table.tex``: booktabs tables of the descriptives and the pairwise tests,
- ``figures/<stem>.svg|pdf|png``: each figure at its journal width (:mod:`evaluation.figures`),
- ``figures.tex``, ``methods.tex``, ``paper.tex``: the figures and the methods paragraph for
  LaTeX, and a draft that compiles them with the tables (:mod:`evaluation.latex`),
- ``provenance.json``: settings, seed, package versions, input hashes, the experiment's facts.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import json
import platform
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import checks_report, items_report
from .analysis import Analysis, analyse
from .facts import check_facts, methods_sentences
from .figures import pngs, report_figures
from .latex import escape as latex_escape
from .latex import figures_tex, paper_tex
from .mixed import methods_sentence
from .paradigms import bundle as paradigm_bundle
from .paradigms import paper as paradigm_paper
from .paradigms.common import ParadigmResult
from .settings import Settings

Progress = Callable[[str, float], None]
PACKAGES = ("numpy", "scipy", "pandas", "statsmodels", "matplotlib", "patsy")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return (
            f"{number:.{digits}g}"
            if abs(number) < 1e-3 and number != 0
            else f"{number:.{digits}f}".rstrip("0").rstrip(".")
            if abs(number) < 1000
            else f"{number:.0f}"
        )
    return str(value)


def _p(value: Any) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def frame_sha256(frame: pd.DataFrame) -> str:
    """SHA-256 of a table's canonical CSV form (sorted rows), so equal data give equal hashes."""
    canonical = frame.sort_values(list(frame.columns[:3])).to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _latex_escape(text: str) -> str:
    return latex_escape(text)


def latex_tables(analysis: Analysis) -> str:
    """Booktabs tables (descriptives per condition; pairwise tests) ready to \\input into a paper."""
    level = int(round(100 * analysis.settings.confidence_level))
    lines = [
        "% Requires \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{Ratings per condition: mean of per-listener means with {level}\\,\\% t confidence interval, "
        "median and interquartile range.}",
        "\\label{tab:mushra-descriptives}",
        "\\begin{tabular}{lrrcrc}",
        "\\toprule",
        f"Condition & $n$ & Mean & {level}\\,\\% CI & Median & IQR \\\\",
        "\\midrule",
    ]
    for r in analysis.descriptives_overall.to_dict("records"):
        lines.append(
            f"{_latex_escape(str(r['condition']))} & {r['n']} & {r['mean']:.1f} & "
            f"[{r['ci_low']:.1f}, {r['ci_high']:.1f}] & {r['median']:.1f} & [{r['q1']:.1f}, {r['q3']:.1f}] \\\\"
        )
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    if len(analysis.pairwise):
        lines += [
            "\\begin{table}[t]",
            "\\centering",
            "\\caption{Pairwise Wilcoxon signed-rank tests (Pratt) on per-listener means, Holm-corrected; "
            "$r$: matched-pairs rank-biserial correlation; HL: Hodges--Lehmann shift.}",
            "\\label{tab:mushra-pairwise}",
            "\\begin{tabular}{llrrrrr}",
            "\\toprule",
            "A & B & $n$ & $W$ & $p_\\mathrm{Holm}$ & $r$ & HL \\\\",
            "\\midrule",
        ]
        for r in analysis.pairwise.to_dict("records"):
            p = "$<0.001$" if r["pvalue_holm"] < 0.001 else f"{r['pvalue_holm']:.3f}"
            lines.append(
                f"{_latex_escape(str(r['a']))} & {_latex_escape(str(r['b']))} & {r['n']} & {r['statistic']:.1f} & "
                f"{p} & {r['effect_size']:.2f} & {r['hodges_lehmann']:.1f} \\\\"
            )
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    lines += items_report.latex(analysis, _latex_escape)
    lines += checks_report.latex(analysis, _latex_escape)
    return "\n".join(lines)


def methods_text(analysis: Analysis, stats: Mapping[str, Any], facts: Mapping[str, Any] | None = None) -> str:
    """A methods-and-results paragraph in plain words, for a paper's first draft.

    ``facts`` (checked plain data from the platform, :mod:`evaluation.facts`) adds what the
    ratings cannot tell: recruitment and exclusions with reasons, demographics, excerpts,
    sample rate, loudness alignment, anchors, checkpoints' SHA-256, rules, platform version.
    """
    s = analysis.settings
    parts = stats["participants"]
    before, after = methods_sentences(facts, len(analysis.models), _versions())
    text = [
        *before,
        f"{parts['total']} listeners rated {len(stats['items'])} items. Following ITU-R BS.1534-3 §4.1.2, a listener "
        f"was excluded if they rated the hidden reference below {s.reference_threshold:g} on more than "
        f"{_pct(s.reference_max_fraction)} of the items they rated, or the {s.anchor_kind} anchor above "
        f"{s.anchor_threshold:g} on more than {_pct(s.anchor_max_fraction)} of items (items on which more than "
        f"{_pct(s.anchor_item_exception_fraction)} of listeners did so were exempt from this rule); "
        f"{parts['excluded']} listener(s) were excluded and {parts['retained']} retained.",
        "Ratings were averaged per listener across items, so that the listener is the unit of analysis.",
    ]
    f = stats["friedman"]
    if f.get("statistic") is not None:
        text.append(
            f"A Friedman test over the {f['k']} models showed χ²({f['df']}) = {f['statistic']:.2f}, "
            f"p {_p_words(f['pvalue'])}, Kendall's W = {f['kendall_w']:.2f} (n = {f['n']})."
        )
    if len(analysis.pairwise):
        significant = int((analysis.pairwise["pvalue_holm"] < s.alpha).sum())
        text.append(
            f"Pairwise Wilcoxon signed-rank tests (Pratt's treatment of zero differences) with Holm's correction "
            f"found {significant} of {len(analysis.pairwise)} pairs different at α = {s.alpha:g}; effect sizes are "
            "matched-pairs rank-biserial correlations and Hodges–Lehmann shifts. A paired sign-flip permutation test "
            f"(after BS.1534-3 Attachment 3; {s.permutation_resamples} resamples, seed {s.seed}) is reported alongside."
        )
    text += items_report.methods_sentences(analysis)
    if analysis.mixed is not None:
        text.append(methods_sentence(analysis.mixed, s.confidence_level))
    text += checks_report.methods_sentences(analysis)
    if len(analysis.equivalence):
        equivalent = int(analysis.equivalence["equivalent"].sum())
        text.append(
            f"Equivalence within ±{s.equivalence_margin:g} points was tested by two one-sided paired t-tests "
            f"(TOST); {equivalent} of {len(analysis.equivalence)} pairs were shown equivalent."
        )
    excluded = (stats.get("quality_control") or {}).get("excluded") or []
    if excluded and "excluded" not in ((facts or {}).get("participants") or {}):
        text.append(
            f"Before the analysis, {len(excluded)} listener(s) were excluded by the experimenter "
            "(reasons in the quality-control section)."
        )
    return " ".join(text + after)


def quality_text(quality: Mapping[str, Any]) -> str:
    """Quality control in words: the rules enforced when trials were submitted, the trials the
    data-quality flags marked, and what was done with them (exclusions are listed separately)."""
    rules = quality.get("rules") or {}
    enforced = [name for name, value in rules.items() if value is True] + [
        f"{name} = {float(value):g} s"
        for name, value in rules.items()
        if name.startswith("min_") and not isinstance(value, bool) and value
    ]
    by_flag = quality.get("trials_by_flag") or {}
    flags = ", ".join(f"{code.replace('_', ' ')} {n}" for code, n in by_flag.items()) or "none"
    excluded = quality.get("excluded") or []
    return " ".join(
        [
            f"Rules enforced on submission: {', '.join(enforced) or 'none'}.",
            f"{quality.get('flagged_trials', 0)} of {quality.get('trials', 0)} test trials were flagged "
            f"(trials per flag: {flags}), from {quality.get('flagged_participants', 0)} of "
            f"{quality.get('participants', 0)} participants; {quality.get('flagged_participants_excluded', 0)} "
            "of those were excluded.",
            str(quality.get("action") or ""),
            f"{len(excluded)} participant(s) were excluded by the experimenter and left out of the analysis.",
            _catch_words(quality.get("catch_trials") or {}),
            _check_words(quality.get("gold_questions") or {}, "gold"),
            _check_words(quality.get("trapping_questions") or {}, "trapping"),
        ]
    ).strip()


def _catch_words(catch: Mapping[str, Any]) -> str:
    """Catch trials in words: how many, how many failed (the reference's duplicate rated low)."""
    if not catch.get("per_participant"):
        return ""
    return (
        f"Each participant had {catch['per_participant']} catch trial(s) (a test excerpt again, one model's "
        f"signal replaced by the reference; kept out of the analysis): {catch.get('failed', 0)} of "
        f"{catch.get('answered', 0)} answered were failed (the duplicate rated below {catch.get('threshold', 90):g}), "
        f"by {catch.get('failed_participants', 0)} participant(s)."
    )


def _check_words(checks: Mapping[str, Any], kind: str) -> str:
    """Gold or trapping questions of ACR / DCR blocks in words (ITU-T P.808)."""
    if not checks.get("per_participant"):
        return ""
    if kind == "gold":
        what, why = "gold question(s) (a condition whose category is known", "outside the question's tolerance"
    else:
        what, why = (
            "trapping question(s) (a stimulus ending in a spoken request for one category, §6.3.8",
            ("not the category asked for"),
        )
    return (
        f"Each participant had {checks['per_participant']} {what}; kept out of the analysis) in the ACR / DCR "
        f"blocks (ITU-T P.808): {checks.get('failed', 0)} of {checks.get('answered', 0)} answered were failed "
        f"({why}), by {checks.get('failed_participants', 0)} participant(s), whose votes the block's analysis "
        "leaves out."
    )


def _quality_html(quality: Mapping[str, Any]) -> list[str]:
    out = ["<h2>Quality control</h2>", f"<p>{html.escape(quality_text(quality))}</p>"]
    excluded = quality.get("excluded") or []
    if excluded:
        rows = pd.DataFrame(
            [
                {
                    "participant": e.get("participant"),
                    "reason": e.get("reason"),
                    "flags": ", ".join(f"{k} {v}" for k, v in (e.get("flags") or {}).items()),
                }
                for e in excluded
            ]
        )
        out.append(_table_html(rows))
    return out


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:g} %"


def _p_words(value: float | None) -> str:
    if value is None:
        return "undefined"
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"


def _table_html(frame: pd.DataFrame, columns: list[str] | None = None, pvalues: tuple[str, ...] = ()) -> str:
    if frame is None or frame.empty:
        return "<p>None.</p>"
    columns = columns or list(frame.columns)
    head = "".join(f"<th scope='col'>{html.escape(c)}</th>" for c in columns)
    body = []
    for record in frame[columns].to_dict(orient="records"):
        cells = "".join(f"<td>{html.escape(_p(v) if c in pvalues else _fmt(v))}</td>" for c, v in record.items())
        body.append(f"<tr>{cells}</tr>")
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    label = html.escape(alt)
    # Shown at half its pixels (the 300 dpi PNG at 150 px per inch), never wider than the page.
    width = int.from_bytes(png[16:20], "big") // 2 if png[12:16] == b"IHDR" else 0
    size = f" width='{width}'" if width else ""
    return (
        f"<figure><img alt='{label}'{size} src='data:image/png;base64,{data}'><figcaption>{label}</figcaption></figure>"
    )


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;
color:#1b1b1b;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0;display:block;max-width:100%;overflow-x:auto}
th,td{padding:.2rem .5rem;border-bottom:1px solid #e5e5e5;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.scroll{overflow-x:auto}
.warn{background:#fff4e5;border-left:4px solid #E69F00;padding:.5rem 1rem}figure{margin:1rem 0}
figcaption{font-size:.85rem;color:#555}.methods{background:#f4f8fb;border-left:4px solid #0072B2;padding:.5rem 1rem}
code{background:#f4f4f4;padding:0 .2rem}
img,svg{max-width:100%;height:auto}.scroll{max-width:100%}p,li,figcaption,code{overflow-wrap:anywhere}
pre{white-space:pre-wrap;overflow-wrap:anywhere}
"""


def render_html(
    analysis: Analysis,
    stats: Mapping[str, Any],
    figures: Mapping[str, bytes],
    provenance: Mapping[str, Any],
    *,
    extra_sections: Sequence[str] = (),
    facts: Mapping[str, Any] | None = None,
) -> str:
    """The self-contained HTML report; ``extra_sections`` (HTML) go before the provenance;
    ``facts`` (:mod:`evaluation.facts`) feed the methods paragraph."""
    s = analysis.settings
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>MUSHRA report</title><style>{CSS}</style></head><body>",
        "<h1>MUSHRA listening test report</h1>",
        f"<p>{stats['participants']['retained']} of {stats['participants']['total']} listeners retained, "
        f"{len(stats['items'])} items, {len(analysis.conditions)} conditions. Seed {s.seed}.</p>",
        "<h2>Methods and results in words</h2>",
        f"<p class='methods'>{html.escape(methods_text(analysis, stats, facts))}</p>",
        "<h2>Warnings</h2>",
    ]
    if analysis.warnings:
        out.append(
            "<div class='warn'><ul>"
            + "".join(f"<li>{html.escape(w['message'])}</li>" for w in analysis.warnings)
            + "</ul></div>"
        )
    else:
        out.append("<p>None.</p>")
    if stats.get("quality_control"):
        out += _quality_html(stats["quality_control"])
    out += [
        "<h2>Post-screening (ITU-R BS.1534-3 §4.1.2)</h2>",
        "<p>Exclusion follows the listener's reliability on the hidden reference and the anchor; "
        "ratings beyond 1.5 × IQR of their cell are only flagged.</p>",
    ]
    if analysis.screening.anchor_exempt_items:
        out.append(
            "<p>Items exempt from the anchor rule: "
            + html.escape(", ".join(analysis.screening.anchor_exempt_items))
            + "</p>"
        )
    out.append(_img(figures["screening"], "Share of items failing each screening rule, per assessor"))
    out.append(_table_html(analysis.screening.table))
    out += [
        "<h2>Descriptive statistics</h2>",
        "<p>Per condition, from per-listener means across items (the listener is the unit). "
        "ci: t interval; bca: BCa bootstrap interval.</p>",
        _img(figures["means"], "Mean rating with 95 % confidence interval per condition"),
        _table_html(analysis.descriptives_overall.drop(columns=["item"])),
        _img(figures["boxplots"], "Ratings per item and condition, with means and their confidence intervals"),
        "<details><summary>Per condition and item</summary>",
        _table_html(analysis.descriptives_item),
        "</details>",
    ]
    f = analysis.friedman
    out += [
        "<h2>Friedman test over the models</h2>",
        f"<p>χ²({f['df']}) = {_fmt(f['statistic'])}, p {_p_words(stats['friedman']['pvalue'])}, "
        f"Kendall's W = {_fmt(f['kendall_w'])}, n = {f['n']} complete listeners, k = {f['k']} models.</p>",
    ]
    out += [
        "<h2>Pairwise comparisons</h2>",
        "<p>Wilcoxon signed-rank tests (zero_method='pratt'), Holm-corrected; effect_size is the matched-pairs "
        "rank-biserial r (positive when a is rated higher); hodges_lehmann the median of Walsh averages of a − b; "
        f"perm_pvalue the paired (sign-flip) permutation test after BS.1534-3 Attachment 3 "
        f"({s.permutation_resamples} resamples).</p>",
    ]
    if "heatmap" in figures:
        out.append(_img(figures["heatmap"], "Holm-corrected p-values of the pairwise Wilcoxon tests"))
    out.append(_table_html(analysis.pairwise, pvalues=("pvalue", "pvalue_holm", "perm_pvalue", "perm_pvalue_holm")))
    out += items_report.intervals_html(analysis, _table_html)
    out += items_report.excerpts_html(analysis, _table_html)
    if analysis.mixed is not None:
        m = analysis.mixed
        out += [
            "<h2>Linear mixed model</h2>",
            f"<p><code>{html.escape(m['formula'])}</code>, item effect: "
            f"{html.escape(m['item_effect'])}, {m['method']} with {m['df_method']} df, {m['n_obs']} ratings. "
            "Variance components: "
            + html.escape(", ".join(f"{k} {v:.2f}" for k, v in m["variance_components"].items()))
            + ".</p>",
            "<h3>Estimated marginal means</h3>",
            _table_html(m["emms"]),
            "<h3>Contrasts against the baseline</h3>",
            _table_html(m["contrasts"], pvalues=("pvalue",)),
        ]
    if analysis.rm_anova is not None:
        a = analysis.rm_anova
        out += [
            "<h2>Repeated-measures ANOVA</h2>",
            f"<p>F({a['df1']}, {a['df2']}) = {_fmt(a.get('F'))}, p {_p_words(a.get('pvalue'))}; "
            f"Greenhouse–Geisser ε = {_fmt(a.get('eps_gg'))}, p {_p_words(a.get('pvalue_gg'))}; "
            f"Huynh–Feldt ε = {_fmt(a.get('eps_hf'))}, p {_p_words(a.get('pvalue_hf'))}.</p>",
        ]
    if len(analysis.equivalence):
        out += [
            "<h2>Equivalence tests (TOST)</h2>",
            f"<p>Margin ±{s.equivalence_margin:g} points; equivalent when the {100 * (1 - 2 * s.alpha):g} % "
            "interval of the mean difference lies inside the margin.</p>",
            _table_html(analysis.equivalence, pvalues=("pvalue", "pvalue_lower", "pvalue_upper")),
        ]
    if len(analysis.correlations):
        out += [
            "<h2>Objective metrics against ratings</h2>",
            "<p>Bootstrap intervals resample listeners. Pearson's r is taken on log10 of metrics marked log10.</p>",
        ]
        for metric in sorted(analysis.correlations["metric"].unique()):
            key = f"scatter:{metric}"
            if key in figures:
                out.append(_img(figures[key], f"Mean rating against {metric}"))
        out.append(_table_html(analysis.correlations, pvalues=("pvalue",)))
    out += checks_report.html(analysis, _table_html, _img, figures)
    out += list(extra_sections)
    out += ["<h2>Provenance</h2>", "<pre>" + html.escape(json.dumps(provenance, indent=2)) + "</pre>", "</body></html>"]
    return "\n".join(out)


def _provenance(
    settings: Settings,
    input_hashes: dict[str, Any],
    sources: Mapping[str, str | Path] | None,
    facts: Mapping[str, Any] | None,
    **standard: Any,
) -> dict[str, Any]:
    """provenance.json: when, seed, settings, versions, the inputs' hashes (tables and the
    ``sources`` files), the standard(s) followed and the experiment's facts."""
    for name, path in (sources or {}).items():
        input_hashes[f"{name}_file"] = {"path": Path(path).name, "sha256": file_sha256(Path(path))}
    return {
        "generated_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": settings.seed,
        "settings": settings.to_dict(),
        "versions": _versions(),
        "inputs": input_hashes,
        **standard,
        **({"experiment": facts} if facts else {}),
    }


def _write_bundle(
    out: Path, files: Mapping[str, str], tables: Mapping[str, pd.DataFrame], paper: Sequence[Any]
) -> list[str]:
    """Write the bundle's text files and CSV tables; return every file name (figures included)."""
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    for name, frame in tables.items():
        frame.to_csv(out / name, index=False, float_format="%.6g")
    return sorted(list(files) + list(tables) + [name for f in paper for name in f.files()])


def build_report(
    ratings: pd.DataFrame,
    metrics: pd.DataFrame | None,
    settings: Settings | dict[str, Any] | None,
    out_dir: str | Path,
    progress: Progress | None = None,
    *,
    sources: Mapping[str, str | Path] | None = None,
    design_warnings: Sequence[Mapping[str, str]] = (),
    quality: Mapping[str, Any] | None = None,
    paradigms: Mapping[str, ParadigmResult] | None = None,
    facts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Analyse one experiment and write the report bundle into ``out_dir``.

    ``progress(message, fraction)`` is called as steps finish; ``sources`` names input
    files whose SHA-256 goes into provenance.json; ``design_warnings`` (``{"code",
    "message"}``, e.g. :func:`evaluation.warnings.weak_anchor`) come from the stimuli rather
    than the ratings and join the analysis's warnings. Returns ``{"out_dir", "files",
    "stats"}`` where ``stats`` is what stats.json holds. ``quality`` (plain data from the
    platform: rules enforced, flag counts, exclusions by hand with reasons) goes into
    stats.json as ``quality_control`` and into the report's quality-control section; the
    ratings given are those left after the exclusions. ``paradigms`` (results of
    :mod:`evaluation.paradigms`, e.g. ABX or BS.1116 run beside the MUSHRA test) go into
    stats.json as ``paradigms``, into the HTML as sections and into ``<name>_<table>.csv``.
    ``facts`` (plain data from the platform, checked by :func:`evaluation.facts.check_facts`:
    recruitment, exclusions, demographics, stimuli, rules, checkpoints' SHA-256, platform
    version) feed the methods paragraph and go into provenance.json as ``experiment``.
    Figures are written at journal sizes into ``figures/`` as SVG, PDF and PNG
    (:mod:`evaluation.figures`), with ``figures.tex``, ``methods.tex`` and ``paper.tex``; each
    paradigm adds its figure and its table in ``table.tex`` (:mod:`evaluation.paradigms.paper`).
    With no ratings (``ratings`` None or empty) and ``paradigms`` given, the bundle holds the
    paradigms alone (:func:`build_paradigm_report`).
    """
    if (ratings is None or len(ratings) == 0) and paradigms:
        return build_paradigm_report(
            paradigms,
            settings,
            out_dir,
            progress,
            sources=sources,
            design_warnings=design_warnings,
            quality=quality,
            facts=facts,
        )
    facts = check_facts(facts)
    settings = Settings.from_dict(settings) if not isinstance(settings, Settings) else settings
    report = progress or (lambda message, fraction: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyse(ratings, metrics, settings, progress=report)
    analysis.warnings.extend(dict(w) for w in design_warnings)
    stats = analysis.stats()
    if quality is not None:
        stats["quality_control"] = json.loads(json.dumps(dict(quality), default=str))
    if paradigms:
        stats["paradigms"] = {name: result.as_dict() for name, result in paradigms.items()}

    report("plots", 0.87)
    paper = report_figures(analysis, out) + paradigm_paper.write_figures(paradigms or {}, out)
    figures = pngs(paper)

    report("writing files", 0.96)
    input_hashes: dict[str, Any] = {
        "ratings_table_sha256": frame_sha256(analysis.ratings[["participant", "item", "condition", "rating"]])
    }
    if metrics is not None:
        input_hashes["metrics_table_sha256"] = frame_sha256(metrics[["condition", "item", "metric", "value"]])
    provenance = _provenance(settings, input_hashes, sources, facts, standard="ITU-R BS.1534-3 (10/2015)")
    files = {
        "report.html": render_html(
            analysis,
            stats,
            figures,
            provenance,
            extra_sections=paradigm_paper.html_sections(paradigms or {}, paper),
            facts=facts,
        ),
        "stats.json": json.dumps(stats, indent=2, ensure_ascii=False, allow_nan=False),
        "provenance.json": json.dumps(provenance, indent=2),
        "table.tex": latex_tables(analysis) + ("\n" + paradigm_paper.latex_tables(paradigms) if paradigms else ""),
        "methods.tex": latex_escape(methods_text(analysis, stats, facts)) + "\n",
        "figures.tex": figures_tex(paper),
        "paper.tex": paper_tex(),
    }
    tables = {
        "descriptives.csv": pd.concat([analysis.descriptives_overall, analysis.descriptives_item], ignore_index=True),
        "pairwise.csv": analysis.pairwise,
        "screening.csv": analysis.screening.table,
        "correlations.csv": analysis.correlations
        if len(analysis.correlations)
        else pd.DataFrame(
            columns=["level", "metric", "method", "transform", "n", "rho", "ci_low", "ci_high", "pvalue"]
        ),
        "outliers.csv": analysis.screening.outliers,
        "equivalence.csv": analysis.equivalence,
    }
    if analysis.mixed is not None:
        tables["mixed_model.csv"] = pd.concat(
            [analysis.mixed["emms"].assign(term="emm"), analysis.mixed["contrasts"].assign(term="contrast")],
            ignore_index=True,
        )
    tables.update(items_report.csv_tables(analysis))
    tables.update(checks_report.csv_tables(analysis))
    tables.update(paradigm_bundle.csv_tables(paradigms or {}))
    written = _write_bundle(out, files, tables, paper)
    report("done", 1.0)
    return {"out_dir": str(out), "files": written, "stats": stats}


#: What a bundle without MUSHRA ratings says in place of the MUSHRA sections.
NO_MUSHRA = (
    "This experiment has no MUSHRA ratings (its blocks use other paradigms only), so the MUSHRA sections "
    "(post-screening, descriptives, Friedman and pairwise tests, mixed model) are left out; each paradigm's "
    "analysis follows."
)


def build_paradigm_report(
    paradigms: Mapping[str, ParadigmResult],
    settings: Settings | dict[str, Any] | None,
    out_dir: str | Path,
    progress: Progress | None = None,
    *,
    sources: Mapping[str, str | Path] | None = None,
    design_warnings: Sequence[Mapping[str, str]] = (),
    quality: Mapping[str, Any] | None = None,
    facts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report bundle of an experiment without MUSHRA ratings: each paradigm's section, table,
    figure and CSV tables, ``stats.json`` with ``mushra`` null and the statement why
    (:data:`NO_MUSHRA`), provenance, ``table.tex``, ``figures.tex``, ``methods.tex`` and ``paper.tex``.
    Returns ``{"out_dir", "files", "stats"}`` as :func:`build_report` does."""
    facts = check_facts(facts)
    settings = Settings.from_dict(settings) if not isinstance(settings, Settings) else settings
    report = progress or (lambda message, fraction: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats: dict[str, Any] = {
        "mushra": None,
        "statement": NO_MUSHRA,
        "warnings": [dict(w) for w in design_warnings],
        "paradigms": {name: result.as_dict() for name, result in paradigms.items()},
    }
    if quality is not None:
        stats["quality_control"] = json.loads(json.dumps(dict(quality), default=str))
    report("plots", 0.8)
    paper = paradigm_paper.write_figures(paradigms, out)
    report("writing files", 0.95)
    provenance = _provenance(
        settings, {}, sources, facts, standards=sorted({result.title for result in paradigms.values()})
    )
    # Without MUSHRA trials the anchors' sentence (a MUSHRA page's signals) does not apply.
    described = {k: v for k, v in (facts or {}).items() if k != "anchors"}
    before, after = methods_sentences(described, len((facts or {}).get("models") or []), _versions())
    methods = " ".join([*before, *(result.method for result in paradigms.values()), *after])
    page = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>Listening test report</title><style>{CSS}</style></head><body>",
        "<h1>Listening test report</h1>",
        f"<p class='warn' id='no-mushra'>{html.escape(NO_MUSHRA)}</p>",
        "<h2>Methods and results in words</h2>",
        f"<p class='methods'>{html.escape(methods)}</p>",
        "<h2>Warnings</h2>",
    ]
    if design_warnings:
        items = "".join(f"<li>{html.escape(str(w.get('message', '')))}</li>" for w in design_warnings)
        page.append(f"<div class='warn'><ul>{items}</ul></div>")
    else:
        page.append("<p>None.</p>")
    if quality:
        page += _quality_html(quality)
    page += paradigm_paper.html_sections(paradigms, paper)
    page += ["<h2>Provenance</h2>", f"<pre>{html.escape(json.dumps(provenance, indent=2))}</pre>", "</body></html>"]
    files = {
        "report.html": "\n".join(page),
        "stats.json": json.dumps(stats, indent=2, ensure_ascii=False, allow_nan=False),
        "provenance.json": json.dumps(provenance, indent=2),
        "table.tex": "% Requires \\usepackage{booktabs}.\n" + paradigm_paper.latex_tables(paradigms),
        "methods.tex": latex_escape(methods) + "\n",
        "figures.tex": figures_tex(paper),
        "paper.tex": paper_tex(),
    }
    tables = paradigm_bundle.csv_tables(paradigms)
    written = _write_bundle(out, files, tables, paper)
    report("done", 1.0)
    return {"out_dir": str(out), "files": written, "stats": stats}

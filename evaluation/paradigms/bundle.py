"""Paradigm results in the report bundle: HTML sections, CSV tables, and a bundle of their own.

``html_sections`` and ``csv_tables`` serve ``evaluation.report.build_report`` (a MUSHRA report
with other paradigms beside it); ``write_bundle`` writes a paradigm's results alone:
``<name>.html`` (self-contained), ``<name>.json`` and ``<name>_<table>.csv``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .common import ParadigmResult

_PVALUES = ("pvalue", "pvalue_holm", "perm_pvalue", "perm_pvalue_holm")
CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;color:#1b1b1b}"
    "table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}th,td{padding:.2rem .5rem;"
    "border-bottom:1px solid #e5e5e5;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child"
    "{text-align:left}.scroll{overflow-x:auto}.warn{background:#fff4e5;border-left:4px solid #E69F00;"
    "padding:.5rem 1rem}.methods{background:#f4f8fb;border-left:4px solid #0072B2;padding:.5rem 1rem}"
)


def _cell(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if column in _PVALUES:
            return "< 0.001" if value < 0.001 else f"{value:.3f}"
        return f"{value:.4g}"
    return str(value)


def table_html(frame: pd.DataFrame) -> str:
    """A table as HTML, NaN as a dash and p-values to three decimals."""
    if frame.empty:
        return "<p>None.</p>"
    head = "".join(f"<th scope='col'>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(str(c), v))}</td>" for c, v in record.items()) + "</tr>"
        for record in frame.to_dict(orient="records")
    )
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def html_sections(results: Mapping[str, ParadigmResult]) -> list[str]:
    """One section per paradigm: title, methods, warnings, each table."""
    out: list[str] = []
    for result in results.values():
        out += [f"<h2>{html.escape(result.title)}</h2>", f"<p class='methods'>{html.escape(result.method)}</p>"]
        if result.warnings:
            items = "".join(f"<li>{html.escape(w['message'])}</li>" for w in result.warnings)
            out.append(f"<div class='warn'><ul>{items}</ul></div>")
        for name, frame in result.tables.items():
            out += [f"<h3>{html.escape(name.replace('_', ' '))}</h3>", table_html(frame)]
    return out


def csv_tables(results: Mapping[str, ParadigmResult]) -> dict[str, pd.DataFrame]:
    """``{"<paradigm>_<table>.csv": frame}`` for every table of every result."""
    return {f"{key}_{name}.csv": frame for key, result in results.items() for name, frame in result.tables.items()}


def write_bundle(result: ParadigmResult, out_dir: str | Path) -> list[str]:
    """Write one paradigm's HTML, JSON and CSV files into ``out_dir``; returns the file names."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = "\n".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>{html.escape(result.title)}</title><style>{CSS}</style></head><body>",
            *html_sections({result.paradigm: result}),
            "</body></html>",
        ]
    )
    files = {
        f"{result.paradigm}.html": page,
        f"{result.paradigm}.json": json.dumps(result.as_dict(), indent=2, ensure_ascii=False, allow_nan=False),
    }
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    tables = csv_tables({result.paradigm: result})
    for name, frame in tables.items():
        frame.to_csv(out / name, index=False, float_format="%.6g")
    return sorted(list(files) + list(tables))

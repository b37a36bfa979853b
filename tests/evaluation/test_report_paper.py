"""The report as a paper prints it: figure files at journal sizes, fonts, palette, PNG resolution,
LaTeX that compiles with pdflatex, the methods paragraph against the facts, the HTML at 1280 px."""

from __future__ import annotations

import html
import os
import re
import shutil
import statistics
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evaluation import analyse, figures, plots
from evaluation.errors import EvaluationError
from evaluation.latex import escape
from evaluation.report import build_report, methods_text
from evaluation.simulate import simulate_metrics, simulate_ratings

SETTINGS = {"bootstrap_resamples": 300, "correlation_resamples": 200, "permutation_resamples": 1000}
#: Okabe & Ito (2008), "Color Universal Design", the eight colours as published.
OKABE_ITO = {"#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#000000"}
SHA_A = "a" * 63 + "1"
SHA_B = "0123456789abcdef" * 4
DURATIONS = [4.0, 6.5, 5.25]
FACTS = {
    "platform": "listening-tests 0.1.0",
    "participants": {
        "recruited": 17,
        "completed": 13,
        "screened_out": 2,
        "declined": 1,
        "incomplete": 1,
        "withdrawn": 1,
        "pilot": 3,
        "excluded": [{"participant": "P7", "reason": "rated every signal 50 on every trial"}],
    },
    "demographics": [
        {"question": "Age", "answered": 12, "median": 29.5, "min": 19, "max": 61},
        {"question": "Listening experience", "answered": 12, "counts": {"expert": 5, "naive": 7}},
    ],
    "headphone_check": {
        "enabled": True,
        "tests": ["antiphase", "huggins"],
        "trials_per_test": 6,
        "pass_threshold": 5 / 6,
        "require": "all",
        "passed": 14,
        "failed": 2,
    },
    "excerpts": {"count": 3, "durations_s": DURATIONS, "training": 1},
    "sample_rate_hz": 44100,
    "loudness": {"target_lufs": -23.0, "method": "ITU-R BS.1770-4"},
    "anchors": [{"label": "anchor35", "cutoff_hz": 3500.0}, {"label": "anchor70", "cutoff_hz": 7000.0}],
    "models": [
        {
            "label": "model_a",
            "checkpoint": "lstm.json",
            "format": "coreaudioml",
            "architecture": "LSTM",
            "sha256": SHA_A,
        },
        {"label": "model_b", "checkpoint": "wavenet.nam", "format": "nam", "architecture": "WaveNet", "sha256": SHA_B},
        {"label": "model_c", "sha256": None},
    ],
    "rules": {
        "must_play_all": True,
        "only_playing_slider_moves": True,
        "require_one_100": False,
        "loop_min_seconds": 0.5,
        "min_play_seconds": 1.0,
        "min_trial_seconds": 5.0,
    },
}


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    ratings = simulate_ratings(14, 3, seed=11)
    # Three models rename to names that need escaping in LaTeX and cannot be typeset as they are.
    names = {"model_a": "Modèle α_1 <ref> §2", "model_b": "model_b", "model_c": "model_c"}
    ratings["condition"] = ratings["condition"].replace(names)
    metrics = simulate_metrics(ratings, seed=3)
    return ratings, metrics


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, data) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("paper")
    result = build_report(data[0], data[1], SETTINGS, out, facts=FACTS)
    return out, result


def _svgs(out: Path) -> list[Path]:
    found = sorted((out / "figures").glob("*.svg"))
    assert found, "no SVG written"
    return found


def _pt(length: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(pt|in|px)?", length).groups()
    return float(value) * {"pt": 1.0, "in": 72.0, "px": 0.75, None: 1.0}[unit]


def test_every_figure_is_written_as_svg_pdf_and_png(bundle) -> None:
    out, result = bundle
    stems = {p.stem for p in _svgs(out)}
    assert {"screening", "means", "items", "pairwise-p"} <= stems and any(s.startswith("scatter-") for s in stems)
    for stem in stems:
        for fmt in ("svg", "pdf", "png"):
            assert f"figures/{stem}.{fmt}" in result["files"]
            assert (out / "figures" / f"{stem}.{fmt}").stat().st_size > 1000


def test_svg_widths_are_journal_columns_and_no_text_is_below_8_pt(bundle) -> None:
    widths = set()
    for path in _svgs(bundle[0]):
        root = ET.parse(path).getroot()
        width, height = _pt(root.get("width")), _pt(root.get("height"))
        widths.add(round(width / 72, 3))
        assert width / 72 in (pytest.approx(3.5, abs=1e-3), pytest.approx(7.0, abs=1e-3)), path.name
        assert 1.0 < height / 72 < 9.5, path.name
        # User units of the viewBox scale to points by width / viewBox width.
        scale = width / float(root.get("viewBox").split()[2])
        sizes = []
        for element in root.iter("{http://www.w3.org/2000/svg}text"):
            style = f"{element.get('style', '')};font-size:{element.get('font-size', '')}"
            found = re.findall(r"font(?:-size)?:\s*(?:[a-z]+\s+)*([0-9.]+)(px)?\b", style)
            assert found, f"{path.name}: text without a size: {style}"
            # A size in px or without unit is in user units, as the viewBox is.
            sizes += [float(value) * scale for value, _ in found]
        assert sizes, f"{path.name}: no text elements (text drawn as paths cannot be checked or edited)"
        assert min(sizes) >= 8.0 - 1e-6, f"{path.name}: text at {min(sizes)} pt"
    assert widths == {3.5, 7.0}


def test_pdf_pages_are_the_svg_sizes_with_fonts_embedded_as_truetype(bundle) -> None:
    for svg in _svgs(bundle[0]):
        root = ET.parse(svg).getroot()
        pdf = svg.with_suffix(".pdf").read_bytes()
        assert pdf.startswith(b"%PDF-")
        box = re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([0-9.]+)\s+([0-9.]+)\s*\]", pdf)
        assert box, svg.name
        assert float(box.group(1)) == pytest.approx(_pt(root.get("width")), abs=0.01)
        assert float(box.group(2)) == pytest.approx(_pt(root.get("height")), abs=0.01)
        assert b"/FontFile2" in pdf and b"/Type3" not in pdf, svg.name


def _png_dpi(path: Path) -> tuple[float, float, int]:
    """(x dpi, y dpi, pixel width) from Pillow if present, else from the pHYs and IHDR chunks."""
    try:
        from PIL import Image
    except ImportError:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width = struct.unpack(">I", data[16:20])[0]
        at = data.index(b"pHYs")
        x, y, unit = struct.unpack(">IIB", data[at + 4 : at + 13])
        assert unit == 1, "pHYs not in pixels per metre"
        return x * 0.0254, y * 0.0254, width
    with Image.open(path) as image:
        x, y = image.info["dpi"]
        return float(x), float(y), image.size[0]


def test_png_is_300_dpi_at_print_size(bundle) -> None:
    for svg in _svgs(bundle[0]):
        x, y, pixels = _png_dpi(svg.with_suffix(".png"))
        assert round(x) >= 300 and round(y) >= 300, svg.name
        width_in = _pt(ET.parse(svg).getroot().get("width")) / 72
        assert pixels == pytest.approx(width_in * 300, abs=2), svg.name


def test_colours_are_okabe_ito_or_neutral_grey(bundle) -> None:
    def neutral(colour: str) -> bool:
        return colour[1:3] == colour[3:5] == colour[5:7]

    for path in _svgs(bundle[0]):
        text = path.read_text().lower()
        colours = set(re.findall(r"(?:fill|stroke|stop-color)\s*[:=]\s*\"?(#[0-9a-f]{6})", text))
        assert colours, path.name
        odd = {c for c in colours if c not in OKABE_ITO and not neutral(c)}
        assert not odd, f"{path.name}: {sorted(odd)}"
    means = (bundle[0] / "figures" / "means.svg").read_text().lower()
    # One colour per kind: hidden reference bluish green, models blue, anchors orange and vermilion.
    assert {"#009e73", "#0072b2", "#e69f00", "#d55e00"} <= set(re.findall(r"#[0-9a-f]{6}", means))


def test_same_data_give_the_same_figure_files(tmp_path: Path, data) -> None:
    analysis = analyse(data[0], None, SETTINGS)
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        figure = plots.means_with_ci(analysis.descriptives_overall, analysis.kinds)
        figures.write_figure(figure, "means", "means", "", tmp_path / name)
    for fmt in ("svg", "pdf"):
        assert (tmp_path / "one" / f"means.{fmt}").read_bytes() == (tmp_path / "two" / f"means.{fmt}").read_bytes()


def test_scatter_rating_intervals_are_t_intervals_of_the_listeners(data) -> None:
    """Per cell: scipy's t interval of the cell's ratings; per model: of per-listener means (independent)."""
    analysis = analyse(data[0], data[1], SETTINGS)
    metric = sorted(analysis.correlations["metric"].unique())[0]
    table = figures.rating_intervals(analysis, metric)
    used = analysis.used
    for r in table.to_dict("records"):
        rows = used[used["condition"] == r["condition"]]
        values = (
            rows[rows["item"] == r["item"]]["rating"].to_numpy(float)
            if r["level"] == "model_item"
            else rows.groupby("participant")["rating"].mean().to_numpy(float)
        )
        low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
        assert (r["ci_low"], r["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert set(table["level"]) == {"model_item", "model"}


def test_log_axis_for_wide_or_named_metrics_with_plain_labels() -> None:
    assert plots.wants_log_axis(np.array([1e-4, 0.5]), named_log=False)
    assert not plots.wants_log_axis(np.array([0.2, 0.5]), named_log=False)
    assert plots.wants_log_axis(np.array([0.2, 0.5]), named_log=True)
    assert not plots.wants_log_axis(np.array([0.0, 0.5]), named_log=True)  # log 0 is undefined
    with plots.style():
        figure = plots.new_figure(3.5, 2.0)
        ax = figure.subplots()
        values = np.array([2e-4, 3e-2])
        ax.plot(values, [1, 2])
        plots.log_axis(ax.xaxis, values)
        figure.savefig(os.devnull, format="png")
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert ax.get_xscale() == "log"
    assert {"0.001", "0.01"} <= set(labels) and not any("10^" in s or "$" in s for s in labels)


def test_html_fits_1280_px_without_horizontal_scrolling(bundle) -> None:
    page = (bundle[0] / "report.html").read_text()
    css = re.search(r"<style>(.*?)</style>", page, re.S).group(1).replace("\n", "")
    rules = dict(re.findall(r"([^{}]+)\{([^}]*)\}", css))

    def rule(selector: str) -> str:
        return next((body for sel, body in rules.items() if selector in [s.strip() for s in sel.split(",")]), "")

    body_width = int(re.search(r"max-width:(\d+)px", rule("body")).group(1))
    assert body_width <= 1280 - 2 * 16
    assert "max-width:100%" in rule("img") and "height:auto" in rule("img")
    # A wide table scrolls in its own box, whoever wrote it; long words and hashes wrap.
    assert "display:block" in rule("table") and "overflow-x:auto" in rule("table")
    assert "pre-wrap" in rule("pre") and "anywhere" in rule("p")
    assert "<table" in page
    widths = [int(w) for w in re.findall(r"<img alt='[^']*' width='(\d+)'", page)]
    assert widths and max(widths) <= body_width and len(widths) == page.count("<img ")


def test_latex_tables_and_figures_compile_with_pdflatex(bundle, tmp_path: Path) -> None:
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pdflatex is missing (make system-deps installs texlive-latex-base and -recommended)")
        pytest.skip("pdflatex is not installed (make system-deps installs it)")
    work = tmp_path / "bundle"
    shutil.copytree(bundle[0], work)
    tex = (work / "figures.tex").read_text()
    included = re.findall(r"\\includegraphics\[width=([0-9.]+)in\]\{([^}]+)\}", tex)
    assert len(included) == len(list((work / "figures").glob("*.pdf")))
    assert all((work / path).exists() and path.endswith(".pdf") for _, path in included)
    assert {float(w) for w, _ in included} == {3.5, 7.0}
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "paper.tex"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=180,
    )
    log = (work / "paper.log").read_text(errors="replace")
    assert done.returncode == 0, log[-3000:]
    assert not re.search(r"^! ", log, re.M) and "Missing character" not in log
    pdf = (work / "paper.pdf").read_bytes()
    streams = []
    for m in re.finditer(rb"stream\r?\n(.*?)endstream", pdf, re.S):
        try:
            streams.append(zlib.decompress(m.group(1)))
        except zlib.error:
            pass
    # No bitmap (Type 3) fonts: everything typeset in the Type 1 and embedded TrueType fonts.
    assert b"/Type3" not in pdf + b"".join(streams)
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf + b"".join(streams))) >= 2


def test_latex_escape_keeps_pdflatex_to_its_default_fonts() -> None:
    assert escape("p < 0.05 & 95 % ~ α χ² § ± ×") == (
        r"p $<$ 0.05 \& 95 \% $\sim$ $\alpha$ $\chi$\textsuperscript{2} $\S$ $\pm$ $\times$"
    )
    assert escape("Modèle ß ł") == "Modèle ß ł"  # composed by LaTeX's UTF-8 support
    assert escape("Đ 東") == "? ?"


def _plain(bundle) -> str:
    match = re.search(r"<p class='methods'>(.*?)</p>", (bundle[0] / "report.html").read_text(), re.S)
    return html.unescape(match.group(1))


def test_methods_paragraph_states_the_facts(bundle) -> None:
    text = _plain(bundle)
    p = FACTS["participants"]
    assert (
        f"{p['recruited']} participants started the test; {p['completed']} completed it, 2 were screened out by "
        f"the headphone check, 1 declined consent and 1 did not finish; 1 more withdrew and their data were "
        f"deleted (3 pilot sessions were kept apart and not counted)."
    ) in text
    assert "1 participant was excluded by the experimenter before the analysis (P7: rated every signal 50" in text
    assert (
        "Age (n = 12): median 29.5, range 19–61" in text and "Listening experience (n = 12): expert 5, naive 7" in text
    )
    lengths = f"{min(DURATIONS):.1f}–{max(DURATIONS):.1f} s long, median {statistics.median(DURATIONS):.1f} s"
    assert f"3 excerpts were used in the test ({lengths}), and 1 more only in training." in text
    assert "sample rate of 44.1 kHz" in text and "(ITU-R BS.1770-4) to -23 LUFS" in text
    assert "2 anchors (the reference low-pass filtered at 3.5 kHz and 7 kHz" in text
    assert f"model_a (lstm.json, LSTM, coreaudioml, SHA-256 {SHA_A})" in text and SHA_B in text
    assert "model_c (pre-rendered audio)" in text
    assert "antiphase test of Woods et al. (2017) and the Huggins-pitch test of Milne et al. (2021)" in text
    assert "(6 trials each; passed with at least 83 % correct in every test): 14 passed and 2 failed" in text
    assert "required every signal to be played for at least 1 s" in text and "at least 5 s" in text
    assert "rating of 100" not in text  # require_one_100 was off
    assert "The test ran on listening-tests 0.1.0" in text and "SciPy" in text
    # The statistics used still follow, and the exclusion is not said twice.
    assert "Friedman test" in text and "Wilcoxon signed-rank" in text
    assert "reasons in the quality-control section" not in text


def test_methods_tex_is_the_same_paragraph_escaped(bundle) -> None:
    assert (bundle[0] / "methods.tex").read_text().strip() == escape(_plain(bundle))


def test_the_facts_go_into_provenance(bundle) -> None:
    import json

    provenance = json.loads((bundle[0] / "provenance.json").read_text())
    assert provenance["experiment"]["models"][0]["sha256"] == SHA_A
    assert provenance["experiment"]["participants"]["excluded"][0]["participant"] == "P7"


def test_without_facts_the_paragraph_keeps_to_the_ratings(data) -> None:
    analysis = analyse(data[0], None, SETTINGS)
    text = methods_text(analysis, analysis.stats())
    assert text.startswith("14 listeners rated 3 items.") and "started the test" not in text
    assert "SHA-256" not in text and "statistics were computed with Python" in text


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        ({"participant": {}}, "unknown key"),
        ({"participants": {"recruited": -1}}, r"facts\.participants\.recruited: expected a whole number"),
        ({"participants": {"completed": True}}, "whole number"),
        ({"models": [{"label": "a", "sha256": "xyz"}]}, r"models\[0\]\.sha256: expected a SHA-256"),
        ({"excerpts": {"durations_s": [1.0, float("nan")]}}, "finite number"),
        ({"rules": {"min_trial_seconds": "5"}}, "finite number"),
        ({"demographics": {"question": "Age"}}, "expected a list"),
    ],
)
def test_bad_facts_are_refused_by_name(tmp_path: Path, data, facts, message) -> None:
    with pytest.raises(EvaluationError, match=message):
        build_report(data[0], None, SETTINGS, tmp_path, facts=facts)
    assert not list(tmp_path.iterdir())  # refused before any work


def _paradigm_results() -> dict:
    """Every other paradigm on generated answers, conditions named as in ``data`` (to be escaped)."""
    from evaluation.paradigms import analyse

    rng = np.random.default_rng(5)
    models = ["Modèle α_1 <ref> §2", "model_b"]
    listeners = [f"p{i}" for i in range(8)]
    items = ["riff 1", "riff 2"]
    abx, pref, bs, acr, ranks = [], [], [], [], []
    for p in listeners:
        for item in items:
            for m, skill in zip(models, (0.9, 0.6), strict=True):
                for _ in range(3):
                    x = rng.choice(["A", "B"])
                    right = rng.random() < skill
                    abx.append((p, item, "reference", m, x, x if right else ("B" if x == "A" else "A")))
                grade = float(np.clip(round(5 - rng.uniform(0.5, 2.5), 1), 1, 5))
                hidden = rng.choice(["B", "C"])
                bs.append((p, item, m, hidden, 5.0 if hidden == "B" else grade, grade if hidden == "B" else 5.0))
                acr.append((p, item, m, int(rng.integers(2, 6))))
            pref.append((p, item, models[0], models[1], rng.choice(["A", "B", "none"], p=[0.5, 0.3, 0.2])))
            order = rng.permutation(["reference", *models]).tolist()
            ranks += [(p, item, c, order.index(c) + 1) for c in order]
    frames = {
        "abx": (abx, ["participant", "item", "condition_a", "condition_b", "x_is", "answer"]),
        "preference": (pref, ["participant", "item", "condition_a", "condition_b", "choice"]),
        "bs1116": (bs, ["participant", "item", "condition", "reference_is", "grade_b", "grade_c"]),
        "acr": (acr, ["participant", "item", "condition", "rating"]),
        "ranking": (ranks, ["participant", "item", "condition", "rank"]),
    }
    return {name: analyse(name, pd.DataFrame(rows, columns=cols)) for name, (rows, cols) in frames.items()}


def test_paradigm_tables_and_figures_compile_with_pdflatex(data, tmp_path: Path) -> None:
    """Each other paradigm's LaTeX table and figure (beside MUSHRA's, and alone) typeset by pdflatex."""
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pdflatex is missing (make system-deps installs texlive-latex-base and -recommended)")
        pytest.skip("pdflatex is not installed (make system-deps installs it)")
    results = _paradigm_results()
    for name, ratings in (("with-mushra", data[0]), ("alone", None)):
        out = tmp_path / name
        build_report(ratings, data[1] if ratings is not None else None, SETTINGS, out, facts=FACTS, paradigms=results)
        table = (out / "table.tex").read_text()
        for key in results:
            assert f"\\label{{tab:{key}}}" in table, key
        tex = (out / "figures.tex").read_text()
        included = re.findall(r"\\includegraphics\[width=([0-9.]+)in\]\{([^}]+)\}", tex)
        assert len(included) == len(list((out / "figures").glob("*.pdf"))) >= len(results)
        done = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "paper.tex"],
            cwd=out,
            capture_output=True,
            text=True,
            timeout=180,
        )
        log = (out / "paper.log").read_text(errors="replace")
        assert done.returncode == 0, log[-3000:]
        assert not re.search(r"^! ", log, re.M) and "Missing character" not in log

"""The analysis end to end and the report bundle."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation import analyse
from evaluation.__main__ import main
from evaluation.errors import EvaluationError
from evaluation.report import build_report
from evaluation.simulate import simulate_metrics, simulate_ratings

SETTINGS = {"bootstrap_resamples": 500, "correlation_resamples": 300, "permutation_resamples": 2000, "rm_anova": True}


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    ratings = simulate_ratings(12, 3, seed=4)
    # p000 rates the hidden reference at 50 everywhere: excluded by BS.1534-3 §4.1.2.
    ratings.loc[(ratings["participant"] == "p000") & (ratings["condition"] == "reference"), "rating"] = 50.0
    return ratings, simulate_metrics(ratings, seed=2)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, data) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report")
    steps: list[float] = []
    result = build_report(data[0], data[1], SETTINGS, out, progress=lambda m, f: steps.append(f))
    assert steps[-1] == 1.0 and steps == sorted(steps)
    return out, result


def test_bundle_files(bundle) -> None:
    out, result = bundle
    for name in (
        "report.html",
        "stats.json",
        "descriptives.csv",
        "pairwise.csv",
        "screening.csv",
        "correlations.csv",
        "table.tex",
        "provenance.json",
    ):
        assert (out / name).stat().st_size > 0, name
        assert name in result["files"]


def test_stats_json_has_the_documented_keys(bundle) -> None:
    out, _ = bundle
    stats = json.loads((out / "stats.json").read_text())
    assert stats["screening"]["excluded"] == ["p000"]
    assert "hidden reference rated below 90 on 3 of 3 items" in stats["screening"]["reasons"]["p000"]
    model_a = stats["conditions"]["model_a"]
    assert {"n", "mean", "ci95", "median", "iqr"} <= set(model_a)
    assert model_a["n"] == 11 and model_a["ci95"][0] < model_a["mean"] < model_a["ci95"][1]
    assert model_a["iqr"][0] <= model_a["median"] <= model_a["iqr"][1]
    assert {"statistic", "pvalue", "kendall_w"} <= set(stats["friedman"])
    assert len(stats["pairwise"]) == 3
    assert {"a", "b", "statistic", "pvalue", "pvalue_holm", "effect_size"} <= set(stats["pairwise"][0])
    assert stats["correlations"] and {"metric", "method", "rho", "ci95", "pvalue"} <= set(stats["correlations"][0])
    assert stats["rm_anova"]["eps_hf"] <= 1.0
    assert stats["mixed_model"]["contrasts"][0]["baseline"] == "reference"


def test_documentation_names_every_stats_key(bundle) -> None:
    out, _ = bundle
    doc = (Path(__file__).resolve().parents[2] / "docs" / "statistics.md").read_text()
    stats = json.loads((out / "stats.json").read_text())

    def keys(value, prefix=""):
        if isinstance(value, dict) and not (prefix.endswith("conditions") or prefix.endswith("reasons")):
            for k, v in value.items():
                yield f"{prefix}.{k}" if prefix else k
                yield from keys(v, f"{prefix}.{k}" if prefix else k)
        elif isinstance(value, dict):
            for v in list(value.values())[:1]:
                yield from keys(v, prefix + ".<name>")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            yield from keys(value[0], prefix + "[]")

    missing = [k for k in keys(stats) if f"`{k}`" not in doc]
    assert not missing, missing


def test_html_is_self_contained_with_inline_plots(bundle) -> None:
    html = (bundle[0] / "report.html").read_text()
    assert len(re.findall(r"src='data:image/png;base64,", html)) >= 5
    assert not re.search(r"(src|href)=['\"]https?:", html)
    assert "ITU-R BS.1534-3 §4.1.2" in html and "Kendall's W" in html


def test_latex_and_provenance(bundle, data) -> None:
    out, _ = bundle
    tex = (out / "table.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "model\\_a" in tex
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["seed"] == 1534 and provenance["settings"]["bootstrap_resamples"] == 500
    assert {"numpy", "scipy", "pandas", "statsmodels", "matplotlib"} <= set(provenance["versions"])
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["inputs"]["ratings_table_sha256"])


def test_statistics_are_deterministic(data) -> None:
    first = analyse(data[0], data[1], SETTINGS).stats()
    second = analyse(data[0].sample(frac=1.0, random_state=1), data[1], SETTINGS).stats()
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def test_missing_cells_and_unbalanced_data_are_reported_not_crashed() -> None:
    ratings = simulate_ratings(10, 4, seed=6)
    rng = np.random.default_rng(0)
    ratings = ratings.drop(index=rng.choice(ratings.index, 25, replace=False))
    analysis = analyse(ratings, None, SETTINGS)
    stats = analysis.stats()
    assert "missing_cells" in [w["code"] for w in stats["warnings"]]
    assert stats["friedman"]["n"] + stats["friedman"]["n_incomplete"] == 10
    assert all(p["n"] <= 10 for p in stats["pairwise"])


def test_too_few_listeners_warning_reaches_stats() -> None:
    stats = analyse(simulate_ratings(5, 2, seed=1), None, SETTINGS).stats()
    assert "too_few_listeners" in [w["code"] for w in stats["warnings"]]


def test_all_excluded_is_a_clear_error() -> None:
    ratings = simulate_ratings(4, 2, seed=1)
    ratings.loc[ratings["condition"] == "reference", "rating"] = 10.0
    with pytest.raises(EvaluationError, match="excluded all 4 participants"):
        analyse(ratings)


def test_cli_report(tmp_path: Path, data) -> None:
    data[0].to_csv(tmp_path / "ratings.csv", index=False)
    data[1].to_csv(tmp_path / "metrics.csv", index=False)
    (tmp_path / "settings.json").write_text(json.dumps(SETTINGS))
    out, err = io.StringIO(), io.StringIO()
    code = main(
        [
            "report",
            str(tmp_path / "ratings.csv"),
            "--metrics",
            str(tmp_path / "metrics.csv"),
            "--settings",
            str(tmp_path / "settings.json"),
            "--out",
            str(tmp_path / "out"),
        ],
        stdout=out,
        stderr=err,
    )
    assert code == 0
    assert "[100%] done" in err.getvalue()
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["inputs"]["ratings_file"]["path"] == "ratings.csv"
    out = io.StringIO()
    assert main(["stats", str(tmp_path / "ratings.csv"), "--json", "--quiet"], stdout=out, stderr=err) == 0
    assert json.loads(out.getvalue())["screening"]["excluded"] == ["p000"]

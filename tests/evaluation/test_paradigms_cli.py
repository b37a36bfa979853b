"""The paradigms from the command line, in their own bundle and in the MUSHRA report."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from evaluation.__main__ import main
from evaluation.report import build_report
from evaluation.simulate import simulate_ratings

SETTINGS = {"bootstrap_resamples": 200, "correlation_resamples": 100, "permutation_resamples": 500}


def _abx_csv(path: Path, correct: int = 15, trials: int = 20) -> Path:
    rows = []
    for t in range(trials):
        x = "A" if t % 2 else "B"
        rows.append(("p1", f"i{t % 2}", "reference", "model", x, x if t < correct else ("B" if x == "A" else "A")))
    pd.DataFrame(rows, columns=["participant", "item", "condition_a", "condition_b", "x_is", "answer"]).to_csv(
        path, index=False
    )
    return path


def test_abx_command_prints_json_and_writes_its_bundle(tmp_path: Path) -> None:
    table = _abx_csv(tmp_path / "abx.csv")
    out, err = io.StringIO(), io.StringIO()
    code = main(["abx", str(table), "--json", "--plan", "0.7", "--out", str(tmp_path / "out")], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert "[100%] done" in err.getvalue()
    text = out.getvalue()
    result = json.loads(text[: text.rindex("}") + 1])
    pooled = result["tables"]["pooled"][0]
    assert pooled["pvalue"] == pytest.approx(stats.binomtest(15, 20, alternative="greater").pvalue)
    assert result["tables"]["plan"][0]["true_proportion"] == 0.7
    assert "wrote 5 files" in text
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["abx.html", "abx.json", "abx_per_participant.csv", "abx_plan.csv", "abx_pooled.csv"]
    assert "ABX discrimination" in (tmp_path / "out" / "abx.html").read_text()
    summary = io.StringIO()
    assert main(["abx", str(table), "--quiet"], stdout=summary, stderr=io.StringIO()) == 0
    assert "pooled:" in summary.getvalue() and "model vs reference" in summary.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["abx", "{dir}/missing.csv"], "does not exist"),
        (["acr", "{dir}/abx.csv"], "lacks column(s) condition, rating"),
        (["abx", "{dir}/abx.csv", "--alpha", "2"], "alpha must lie strictly between 0 and 1"),
        (["abx", "{dir}/abx.csv", "--plan", "0.4"], "between 0.5 and 1"),
        (["preference", "{dir}/abx.csv"], "lacks column(s) choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, argv: list[str], message: str) -> None:
    _abx_csv(tmp_path / "abx.csv")
    err = io.StringIO()
    code = main([a.format(dir=tmp_path) for a in argv] + ["--quiet"], stdout=io.StringIO(), stderr=err)
    assert code == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_report_bundle_includes_paradigms(tmp_path: Path) -> None:
    ratings = simulate_ratings(6, 2, seed=1)
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    (tmp_path / "settings.json").write_text(json.dumps(SETTINGS))
    _abx_csv(tmp_path / "abx.csv")
    out_dir = tmp_path / "report"
    argv = ["report", str(tmp_path / "ratings.csv"), "--settings", str(tmp_path / "settings.json")]
    argv += ["--out", str(out_dir), "--paradigm", f"abx={tmp_path / 'abx.csv'}", "--quiet"]
    err = io.StringIO()
    assert main(argv, stdout=io.StringIO(), stderr=err) == 0, err.getvalue()
    stats_json = json.loads((out_dir / "stats.json").read_text())
    assert stats_json["paradigms"]["abx"]["tables"]["pooled"][0]["correct"] == 15
    assert (out_dir / "abx_pooled.csv").exists()
    html = (out_dir / "report.html").read_text()
    assert html.index("ABX discrimination") < html.index("<h2>Provenance</h2>")
    provenance = json.loads((out_dir / "provenance.json").read_text())
    assert provenance["inputs"]["paradigm_abx_file"]["path"] == "abx.csv"
    bad = argv[:-3] + ["--paradigm", "abx", "--quiet"]
    err = io.StringIO()
    assert main(bad, stdout=io.StringIO(), stderr=err) == 2 and "NAME=FILE" in err.getvalue()


def test_build_report_without_paradigms_has_no_paradigm_key(tmp_path: Path) -> None:
    result = build_report(simulate_ratings(6, 2, seed=1), None, SETTINGS, tmp_path)
    assert "paradigms" not in result["stats"]
    assert not any(name.startswith("abx_") for name in result["files"])


def test_screening_options_and_other_commands(tmp_path: Path) -> None:
    rows = [("good", f"i{k}", "x", "B", 5.0, 4.0 - 0.1 * k) for k in range(4)]
    rows += [("guess", f"i{k}", "x", "C", 4.0 + 0.2 * (-1) ** k, 4.0) for k in range(4)]
    columns = ["participant", "item", "condition", "reference_is", "grade_b", "grade_c"]
    pd.DataFrame(rows, columns=columns).to_csv(tmp_path / "bs.csv", index=False)

    def run(*argv: str) -> dict:
        out = io.StringIO()
        assert main([*argv, "--json", "--quiet"], stdout=out, stderr=io.StringIO()) == 0
        return json.loads(out.getvalue())

    assert run("bs1116", str(tmp_path / "bs.csv"))["summary"]["participants"]["excluded"] == ["guess"]
    assert run("bs1116", str(tmp_path / "bs.csv"), "--keep-all")["summary"]["participants"]["excluded"] == []
    votes = pd.DataFrame(
        [("p1", "i", "x", 4), ("p2", "i", "x", 5)], columns=["participant", "item", "condition", "rating"]
    )
    votes.to_csv(tmp_path / "votes.csv", index=False)
    assert run("dcr", str(tmp_path / "votes.csv"))["tables"]["conditions"][0]["dmos"] == 4.5
    choices = [("p", "i", "a", "b", "A"), ("p", "i", "b", "a", "A"), ("p", "i", "a", "b", "none")]
    pd.DataFrame(choices, columns=["participant", "item", "condition_a", "condition_b", "choice"]).to_csv(
        tmp_path / "pref.csv", index=False
    )
    scores = run("preference", str(tmp_path / "pref.csv"), "--reference", "b")["tables"]["scores"]
    assert scores[1]["condition"] == "b" and scores[1]["score"] == 0.0 and scores[0]["score"] == pytest.approx(0.0)

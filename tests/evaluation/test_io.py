from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from evaluation.__main__ import main
from evaluation.errors import EvaluationError
from evaluation.io import read_metrics, read_ratings, validate_ratings


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


WEBMUSHRA = """session_test_id,age,gender,session_uuid,trial_id,rating_stimulus,rating_score,rating_time,rating_comment
mushra_test,31,f,u-1,trial1,reference,100,12000,
mushra_test,31,f,u-1,trial1,anchor35,15,12000,
mushra_test,31,f,u-1,trial1,anchor70,45,12000,
mushra_test,31,f,u-1,trial1,C1,80,12000,nice
mushra_test,31,f,u-1,trial2,reference,95,9000,
mushra_test,31,f,u-1,trial2,anchor35,10,9000,
mushra_test,31,f,u-1,trial2,anchor70,50,9000,
mushra_test,31,f,u-1,trial2,C1,70,9000,
mushra_test,40,m,u-2,trial1,reference,98,8000,
mushra_test,40,m,u-2,trial1,anchor35,22,8000,
mushra_test,40,m,u-2,trial1,anchor70,60,8000,
mushra_test,40,m,u-2,trial1,C1,85,8000,
"""


def test_webmushra_csv_maps_columns_and_kinds(tmp_path: Path) -> None:
    ratings = read_ratings(_write(tmp_path / "mushra.csv", WEBMUSHRA))
    assert len(ratings) == 12
    assert set(ratings["participant"]) == {"u-1", "u-2"}
    assert set(ratings["item"]) == {"trial1", "trial2"}
    kinds = ratings.drop_duplicates("condition").set_index("condition")["kind"].to_dict()
    assert kinds == {"reference": "hidden_reference", "anchor35": "anchor35", "anchor70": "anchor70", "C1": "model"}
    row = ratings[(ratings["participant"] == "u-1") & (ratings["item"] == "trial1") & (ratings["condition"] == "C1")]
    assert row["rating"].item() == 80.0
    assert row["rating_comment"].item() == "nice"
    assert row["test_id"].item() == "mushra_test"
    assert row["age"].item() == "31"  # form answers are kept as they are


def test_our_csv_keeps_identifiers_as_text(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "r.csv", "participant,item,condition,rating,page\n007,01,lp35,10,3\n007,01,hidden reference,99,3\n"
    )
    ratings = read_ratings(path)
    assert ratings["participant"].tolist() == ["007", "007"]
    assert ratings["item"].tolist() == ["01", "01"]
    assert dict(zip(ratings["condition"], ratings["kind"])) == {
        "lp35": "anchor35",
        "hidden reference": "hidden_reference",
    }
    assert "page" in ratings.columns


def test_kind_inference_and_explicit_mapping() -> None:
    frame = pd.DataFrame(
        {
            "participant": ["p"] * 5,
            "item": ["i"] * 5,
            "condition": ["Anchor_70", "anchor7", "LP70", "ref_hidden", "net"],
            "rating": [50, 50, 50, 99, 70],
        }
    )

    def kinds_of(table: pd.DataFrame) -> dict[str, str]:
        return dict(zip(table["condition"], table["kind"]))

    assert kinds_of(validate_ratings(frame)) == {
        "Anchor_70": "anchor70",
        "anchor7": "anchor70",
        "LP70": "anchor70",
        "ref_hidden": "model",
        "net": "model",
    }
    assert (
        kinds_of(validate_ratings(frame, kinds={"ref_hidden": "hidden_reference"}))["ref_hidden"] == "hidden_reference"
    )
    with pytest.raises(EvaluationError, match="unknown kind"):
        validate_ratings(frame, kinds={"net": "teacher"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("participant,item,rating\np,i,5\n", "lacks column\\(s\\) condition"),
        ("participant,item,condition,rating\np,i,c,101\n", "outside 0..100 at line\\(s\\) 2"),
        ("participant,item,condition,rating\np,i,c,-1\n", "outside 0..100"),
        ("participant,item,condition,rating\np,i,c,good\n", "not numeric at line\\(s\\) 2"),
        ("participant,item,condition,rating\np,i,c,5\np,i,c,6\n", "duplicate \\(participant, item, condition\\)"),
        ("participant,item,condition,rating\np,,c,5\n", "column item is empty"),
        ("participant,item,condition,rating,kind\np,i,c,5,teacher\n", "unknown kind"),
    ],
)
def test_bad_ratings_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        read_ratings(_write(tmp_path / "bad.csv", text))


def test_empty_rating_is_a_missing_cell_not_an_error(tmp_path: Path) -> None:
    ratings = read_ratings(_write(tmp_path / "r.csv", "participant,item,condition,rating\np,i,a,5\np,i,b,\n"))
    assert ratings["condition"].tolist() == ["a"]
    assert ratings.attrs["dropped_empty"] == 1


def test_metrics_validation(tmp_path: Path) -> None:
    metrics = read_metrics(_write(tmp_path / "m.csv", "condition,item,metric,value\nnet,i,esr,0.01\nnet,i,mae,0.2\n"))
    assert metrics["value"].tolist() == [0.01, 0.2]
    with pytest.raises(EvaluationError, match="lacks column\\(s\\) value"):
        read_metrics(_write(tmp_path / "m2.csv", "condition,item,metric\nnet,i,esr\n"))
    with pytest.raises(EvaluationError, match="duplicate \\(condition, item, metric\\)"):
        read_metrics(_write(tmp_path / "m3.csv", "condition,item,metric,value\nn,i,esr,1\nn,i,esr,2\n"))
    with pytest.raises(EvaluationError, match="does not exist"):
        read_metrics(tmp_path / "absent.csv")


def test_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.csv", "participant,item,condition,rating\np,i,c,500\n")
    out, err = io.StringIO(), io.StringIO()
    assert main(["stats", str(path), "--quiet"], stdout=out, stderr=err) == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "outside 0..100" in lines[0]
    settings = _write(tmp_path / "s.json", '{"sede": 3}')
    err = io.StringIO()
    assert main(["stats", str(path), "--settings", str(settings)], stdout=out, stderr=err) == 2
    assert "unknown setting(s): sede" in err.getvalue()

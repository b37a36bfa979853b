from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.errors import EvaluationError
from evaluation.settings import Settings


def test_defaults_follow_bs1534() -> None:
    s = Settings()
    assert (s.reference_threshold, s.reference_max_fraction) == (90.0, 0.15)
    assert (s.anchor_kind, s.anchor_threshold, s.anchor_max_fraction) == ("anchor70", 90.0, 0.15)
    assert s.anchor_item_exception_fraction == 0.25
    assert s.permutation_resamples == 10_000


def test_round_trip_and_unknown_keys(tmp_path: Path) -> None:
    s = Settings.from_dict({"seed": 7, "equivalence_pairs": [["a", "b"]], "kinds": {"x": "anchor35"}})
    assert s.seed == 7 and s.equivalence_pairs == (("a", "b"),) and s.kinds == {"x": "anchor35"}
    assert Settings.from_dict(s.to_dict()) == s
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"reference_max_items": 2, "reference_max_fraction": None}))
    loaded = Settings.from_json(path)
    assert loaded.reference_max_items == 2 and loaded.reference_max_fraction is None
    with pytest.raises(EvaluationError, match="unknown setting\\(s\\): treshold"):
        Settings.from_dict({"treshold": 90})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"reference_max_fraction": 15}, "fraction in \\[0, 1\\]"),
        ({"reference_threshold": 900}, "0..100"),
        ({"permutation_resamples": 5}, "integer >= 100"),
        ({"pairwise_scope": "some"}, "pairwise_scope"),
        ({"kinds": {"a": "teacher"}}, "unknown kind"),
        ({"anchor_kind": "model"}, "anchor_kind"),
    ],
)
def test_bad_values_are_named(data: dict, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        Settings.from_dict(data)


def test_bad_json_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("{seed: 1")
    with pytest.raises(EvaluationError, match="not valid JSON"):
        Settings.from_json(path)

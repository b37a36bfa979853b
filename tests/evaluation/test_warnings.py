from __future__ import annotations

from evaluation import warnings as words

from ._data import known


def test_too_few_listeners_uses_the_smallest_exact_p_under_holm() -> None:
    # 6 listeners: smallest exact p = 2/64 = 0.03125; with 3 pairs Holm gives 0.094 > 0.05.
    warning = words.too_few_listeners(6, 3, 0.05)
    assert warning is not None and "0.0312" in warning["message"] and "0.0938" in warning["message"]
    assert "At least 7 listeners" in warning["message"]  # 3 * 2/128 = 0.047
    assert words.too_few_listeners(7, 3, 0.05) is None
    assert words.too_few_listeners(6, 1, 0.05) is None


def test_ceiling_and_missing_cells() -> None:
    ratings = known(n_participants=6, n_items=2)
    ratings.loc[ratings["condition"] == "model_a", "rating"] = 99.0
    codes = [w["code"] for w in words.ceiling_effects(ratings, 95.0, 0.25)]
    assert codes == ["ceiling_effect"]
    assert words.missing_cells(ratings) is None
    warning = words.missing_cells(ratings.iloc[1:])
    assert warning is not None and "1 of 72" in warning["message"] and "1 of 6 listeners" in warning["message"]


def test_few_models() -> None:
    assert words.few_models(3, 5)["code"] == "few_models"
    assert words.few_models(5, 5) is None

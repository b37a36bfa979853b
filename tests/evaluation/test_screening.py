"""Post-screening rules of ITU-R BS.1534-3 §4.1.2 on hand-built edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.screening import flag_outliers, post_screen
from evaluation.settings import Settings

from ._data import screening_table

GOOD = [100.0] * 20


def _row(result, participant: str) -> pd.Series:
    return result.table.set_index("participant").loc[participant]


def test_exactly_15_percent_is_kept_and_one_more_is_excluded() -> None:
    # 3 of 20 items = exactly 15 %: not "more than 15 %". 4 of 20 = 20 %: excluded.
    table = screening_table({"exact": [80.0] * 3 + [100.0] * 17, "over": [80.0] * 4 + [100.0] * 16, "good": GOOD})
    result = post_screen(table)
    assert result.excluded == ["over"]
    assert _row(result, "exact")["reference_below"] == 3
    assert _row(result, "exact")["reference_below_fraction"] == 0.15
    assert "hidden reference rated below 90 on 4 of 20 items (20.0 % > 15 %)" in _row(result, "over")["reason"]


def test_rating_of_exactly_90_is_not_below_90() -> None:
    table = screening_table({"edge": [90.0] * 20})
    assert post_screen(table).excluded == []


def test_assessor_who_skipped_items_is_judged_on_the_items_rated() -> None:
    # Same 2 low ratings: 2 of 20 (10 %) keeps, 2 of 10 rated (20 %) excludes.
    full = [80.0, 80.0] + [100.0] * 18
    skipped = [80.0, 80.0] + [100.0] * 8 + [None] * 10
    result = post_screen(screening_table({"full": full, "skipped": skipped}))
    assert result.excluded == ["skipped"]
    row = _row(result, "skipped")
    assert (row["reference_items"], row["reference_below"], row["n_items"]) == (10, 2, 10)


def test_anchor_rule_and_the_25_percent_item_exception() -> None:
    # 8 assessors, 20 items. On item i00 three assessors (37.5 % > 25 %) rate the anchor
    # above 90: that item leaves the anchor rule. On item i01 exactly two (25 %) do: it
    # stays in the rule.
    anchor = {f"p{k}": [40.0] * 20 for k in range(8)}
    for k in range(3):
        anchor[f"p{k}"][0] = 95.0
    for k in (0, 3):
        anchor[f"p{k}"][1] = 95.0
    # p0: i00 (exempt) + i01 + two more = 3 counted of 19 -> 15.8 % > 15 %: excluded.
    anchor["p0"][2] = anchor["p0"][3] = 95.0
    # p3: i01 + i04 + i05 = 3 of 19 items = 15.8 %: excluded; p4: 2 of 19: kept.
    anchor["p3"][4] = anchor["p3"][5] = 95.0
    anchor["p4"][6] = anchor["p4"][7] = 95.0
    reference = {p: GOOD for p in anchor}
    result = post_screen(screening_table(reference, anchor))
    assert result.anchor_exempt_items == ["i00"]
    assert result.excluded == ["p0", "p3"]
    assert _row(result, "p0")["anchor_items"] == 19
    assert _row(result, "p0")["anchor_above"] == 4 - 1
    assert _row(result, "p4")["anchor_above"] == 2
    assert "anchor70 rated above 90 on 3 of 19 items" in _row(result, "p3")["reason"]
    # Without the exception every item counts: p1 and p2 (1 of 20) stay, p0 has 4 of 20.
    strict = post_screen(screening_table(reference, anchor), Settings(anchor_item_exception_fraction=None))
    assert strict.anchor_exempt_items == []
    assert _row(strict, "p0")["anchor_above"] == 4


def test_count_based_rule_can_replace_the_share_rule() -> None:
    # Exclude after more than one item below 90, whatever the share (Bourdin-style count rule).
    table = screening_table({"two": [80.0, 80.0] + [100.0] * 38, "one": [80.0] + [100.0] * 39})
    settings = Settings(reference_max_fraction=None, reference_max_items=1)
    result = post_screen(table, settings)
    assert result.excluded == ["two"]
    assert "2 items (> 1)" in _row(result, "two")["reason"]
    assert post_screen(table).excluded == []  # 5 % under the default share rule


def test_screening_can_be_switched_off_and_thresholds_moved() -> None:
    table = screening_table({"low": [80.0] * 20})
    assert post_screen(table, Settings(apply_screening=False)).excluded == []
    assert post_screen(table, Settings(reference_threshold=75.0)).excluded == []
    assert post_screen(table).excluded == ["low"]


def test_outliers_are_flagged_with_tukey_fences_and_never_excluded() -> None:
    values = [50.0, 52.0, 54.0, 56.0, 58.0, 60.0, 99.0]
    frame = pd.DataFrame(
        {"participant": [f"p{k}" for k in range(7)], "item": "i", "condition": "net", "rating": values, "kind": "model"}
    )
    q1, q3 = np.percentile(values, [25, 75])
    flagged = flag_outliers(frame)
    assert flagged["participant"].tolist() == ["p6"]
    assert flagged["upper_fence"].item() == q3 + 1.5 * (q3 - q1)
    result = post_screen(frame)
    assert result.excluded == []
    assert result.table.set_index("participant").loc["p6", "outlier_ratings"] == 1

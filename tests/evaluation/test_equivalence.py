from __future__ import annotations

import numpy as np
import pingouin as pg
import pytest

from evaluation.equivalence import tost_paired


def test_tost_matches_pingouin() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(70, 8, 30)
    b = a + rng.normal(0.5, 4, 30)
    ours = tost_paired(a, b, margin=3.0)
    reference = pg.tost(a, b, bound=3.0, paired=True)
    assert ours["pvalue"] == pytest.approx(reference["pval"].iloc[0])


def test_tost_decides_equivalence_from_the_90_percent_interval() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(70, 8, 60)
    same = tost_paired(a, a + rng.normal(0.0, 2.0, 60), margin=2.0)
    assert same["equivalent"] and -2 < same["ci_low"] < same["ci_high"] < 2
    worse = tost_paired(a, a - 6 + rng.normal(0.0, 2.0, 60), margin=2.0)
    assert not worse["equivalent"] and worse["ci_low"] > 2
    # Too few listeners to show equivalence even with no true difference.
    small = tost_paired(a[:4], a[:4] + rng.normal(0.0, 4.0, 4), margin=1.0)
    assert not small["equivalent"]

"""Every shared model fixture loads through ``formats.load`` and renders 1 s of guitar finitely."""

from __future__ import annotations

import json

import pytest
import torch

from modelrunner.formats import FORMATS, load
from tests.modelrunner._helpers import guitar, run_whole
from tests.paths import fixture_path

FIXTURES = [
    ("coreaudioml", "ht1_lstm32.json", "coreaudioml"),
    ("coreaudioml", "ts9_lstm20_gain.json", "coreaudioml"),
    ("nam", "lstm_h3.nam", "nam"),
    ("nam", "wavenet_tiny_v054.nam", "nam"),
    ("nam", "identity_linear_1.nam", "nam"),
    ("nam", "identity_wavenet_minimal.nam", "nam"),
    ("lightning", "pedalnet.ckpt", "lightning"),
    ("aidax", "tw40_california_clean.json", "rtneural"),
    ("guitarml_wavenet", "ts9_fullD.json", "guitarml_wavenet"),
    ("smartamppro", "TubeClean.json", "smartamppro"),
]


@pytest.mark.parametrize(("folder", "name", "fmt"), FIXTURES)
def test_fixture_loads_and_renders(folder: str, name: str, fmt: str) -> None:
    model = load(fixture_path("models", folder, name))
    assert model.format == fmt and fmt in FORMATS
    x = guitar(1.0)
    y = run_whole(model, x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert 0 < float(y.abs().max()) < 100
    assert model.parameter_count > 0 and model.receptive_field >= 1
    summary = model.summary()
    assert json.loads(json.dumps(summary))["provenance"]["file_name"] == name
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in model.module.parameters())


def test_batch_rows_are_independent() -> None:
    model = load(fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json"))
    x = guitar(0.05)
    both = torch.cat([x, 0.5 * x], dim=0)
    knobs = torch.tensor([[0.2], [0.9]])
    with torch.no_grad():
        y, _ = model.module(both, knobs)
        y0, _ = model.module(x, knobs[:1])
        y1, _ = model.module(0.5 * x, knobs[1:])
    assert torch.allclose(y[0], y0[0], atol=1e-6) and torch.allclose(y[1], y1[0], atol=1e-6)

"""The real public checkpoints through the renderer: chunked and batched equal one whole call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelrunner import formats
from modelrunner.audio import read_audio
from modelrunner.errors import CheckpointError
from modelrunner.render import reference_forward, render, render_batch, resample
from tests.paths import fixture_path

torch.set_num_threads(1)

FIXTURES = [
    ("coreaudioml", "ht1_lstm32.json"),
    ("coreaudioml", "ts9_lstm20_gain.json"),
    ("nam", "lstm_h3.nam"),
    ("nam", "wavenet_tiny_v054.nam"),
    ("nam", "identity_wavenet_minimal.nam"),
    ("nam", "identity_linear_1.nam"),
    ("lightning", "pedalnet.ckpt"),
]


def load(folder: str, name: str):
    try:
        return formats.load(fixture_path("models", folder, name))
    except CheckpointError as exc:
        if "not supported yet" in str(exc):
            pytest.skip(str(exc))
        raise


def guitar_at(rate: int, seconds: float, offset: float = 1.0) -> np.ndarray:
    data, sr = read_audio(fixture_path("audio", "guitar_example_44k.wav"))
    start = int(offset * sr)
    return resample(data[start : start + int(seconds * sr)], sr, rate)


def esr(y: np.ndarray, ref: np.ndarray) -> float:
    """Error-to-signal ratio (Wright et al., DAFx 2019, eq. 4)."""
    return float(np.sum((y.astype(np.float64) - ref) ** 2) / np.sum(ref.astype(np.float64) ** 2))


@pytest.mark.parametrize("folder, name", FIXTURES, ids=[n for _, n in FIXTURES])
@pytest.mark.parametrize("chunk", [1, 7, 1000, 65536])
def test_chunked_render_equals_reference(folder, name, chunk):
    model = load(folder, name)
    x = guitar_at(model.sample_rate, {1: 0.01, 7: 0.05}.get(chunk, 0.5))
    want = reference_forward(model, x)
    got = render(model, x, model.sample_rate, chunk_size=chunk)
    assert got.shape == want.shape
    assert esr(got, want) < 1e-10
    assert np.abs(want).max() > 1e-3  # the comparison is not between two silences


@pytest.mark.parametrize("folder, name", FIXTURES, ids=[n for _, n in FIXTURES])
def test_parallel_batch_agrees_with_reference(folder, name):
    model = load(folder, name)
    items = [guitar_at(model.sample_rate, 1.5, 0.5), guitar_at(model.sample_rate, 0.7, 3.0)]
    got, report = render_batch(
        model, items, model.sample_rate, segment_seconds=0.25, warmup_seconds=0.1, with_report=True
    )
    assert report.segments > len(items)
    for g, x in zip(got, items):
        want = reference_forward(model, x)
        if report.path == "parallel":
            assert esr(g, want) < 1e-7
        else:
            assert esr(g, want) < 1e-10  # fell back: exact
    if not model.stateful:
        assert report.path == "parallel"  # context of receptive_field - 1 is exact


def test_knob_model_renders_each_setting():
    model = load("coreaudioml", "ts9_lstm20_gain.json")
    x = guitar_at(44100, 0.3)
    low = render(model, x, 44100, knobs={"p1": 0.0})
    high = render(model, x, 44100, knobs={"p1": 1.0})
    assert esr(low, high) > 1e-3
    # 1e-5: the bound. The compiled kernel and PyTorch's float32 LSTM each differ
    # from a float64 pass by about 2e-6 here (test_native checks the kernel's share).
    np.testing.assert_allclose(high, reference_forward(model, x, {"p1": 1.0}), atol=1e-5, rtol=0)


def test_identity_model_through_resampling_returns_the_input():
    model = load("nam", "identity_linear_1.nam")  # 48 kHz, y = x
    data, sr = read_audio(fixture_path("audio", "guitar_example_44k.wav"))
    x = data[: sr // 2]
    y = render(model, x, sr)
    assert y.shape == x.shape
    inner = slice(200, -200)
    assert esr(y[inner], x[inner]) < 1e-4

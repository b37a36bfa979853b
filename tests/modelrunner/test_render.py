"""Rendering: streaming equals one whole call, resampling, stereo, knobs, progress, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelrunner.errors import AudioError, RenderError
from modelrunner.render import (
    RenderReport,
    plan_segments,
    reference_forward,
    render,
    render_batch,
    resample,
)

from ._protocol_models import _wrap, fir_model, long_memory_model, rnn_model

# Tiny tensors: extra threads only contend for the shared cores.
torch.set_num_threads(1)


def esr(y: np.ndarray, ref: np.ndarray) -> float:
    """Error-to-signal ratio (Wright et al., DAFx 2019, eq. 4)."""
    return float(np.sum((y.astype(np.float64) - ref) ** 2) / np.sum(ref.astype(np.float64) ** 2))


def noise(frames: int, channels: int = 1, seed: int = 0, level: float = 0.3) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal((frames, channels))).astype(np.float32)


@pytest.mark.parametrize("chunk", [1, 7, 1000, 65536])
@pytest.mark.parametrize("make", [fir_model, rnn_model], ids=["fir", "gru"])
def test_chunked_render_equals_whole_signal_call(make, chunk):
    model = make()
    x = noise(2500 if chunk == 1 else 9000)
    want = reference_forward(model, x)
    got = render(model, x, model.sample_rate, chunk_size=chunk)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_reference_forward_matches_module_call():
    model = rnn_model()
    x = noise(500)
    with torch.inference_mode():
        y, _ = model.module(torch.from_numpy(x.T.copy()), model.knob_tensor(None, 1))
    np.testing.assert_array_equal(reference_forward(model, x), y.numpy().T)


@pytest.mark.parametrize("frames", [44100, 44101, 12345, 3])
def test_resampling_round_trip_keeps_length_exactly(frames):
    model = fir_model(taps=1, sample_rate=48000)  # tanh(w * x): memoryless
    x = noise(frames, 2, level=0.01)
    y, report = render(model, x, 44100, with_report=True)
    assert y.shape == (frames, 2)
    assert report.resampled


def test_resampling_round_trip_preserves_band_limited_signal():
    # A memoryless model y = tanh(w x): a 1 kHz tone survives 44.1k -> 48k -> 44.1k
    # up to the polyphase filter's passband ripple; a shift of one sample would not.
    model = fir_model(taps=1, sample_rate=48000)
    w = float(model.module.taps.flatten()[0])
    t = np.arange(44100) / 44100
    x = (0.01 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[:, None]
    y = render(model, x, 44100)
    inner = slice(1000, -1000)  # resample_poly's edge transients
    want = np.tanh(w * x[inner].astype(np.float64))
    assert esr(y[inner], want) < 1e-5
    assert esr(y[inner][1:], want[:-1]) > 1e-3


def test_resample_uses_exact_rational_ratio():
    x = np.random.default_rng(1).standard_normal(44100).astype(np.float32)
    assert resample(x, 44100, 48000).shape == (48000,)
    assert resample(x, 44100, 44100) is not None and resample(x, 44100, 44100).shape == (44100,)
    with pytest.raises(AudioError, match="positive"):
        resample(x, 0, 48000)


def test_stereo_channels_are_rendered_independently():
    model = rnn_model()
    x = noise(4000, 2, seed=3)
    y = render(model, x, model.sample_rate, chunk_size=777)
    for c in range(2):
        mono = render(model, x[:, c], model.sample_rate)
        np.testing.assert_allclose(y[:, c], mono[:, 0], atol=2e-6, rtol=0)
    assert not np.allclose(y[:, 0], y[:, 1])
    np.testing.assert_allclose(render(model, x, model.sample_rate, parallel=False), y, atol=2e-6, rtol=0)


def test_knobs_change_output_and_are_validated():
    model = fir_model()
    x = noise(1000)
    quiet = render(model, x, model.sample_rate, knobs={"gain": 0.5})
    loud = render(model, x, model.sample_rate, knobs={"gain": 3.0})
    assert np.abs(loud).mean() > np.abs(quiet).mean() * 1.5
    with pytest.raises(RenderError, match="unknown knob 'drive'"):
        render(model, x, model.sample_rate, knobs={"drive": 1.0})
    with pytest.raises(RenderError, match="outside its range"):
        render(model, x, model.sample_rate, knobs={"gain": 9.0})
    with pytest.raises(RenderError, match="outside its range"):
        render_batch(model, [x], model.sample_rate, knobs={"gain": -1.0})


def test_bad_audio_is_refused():
    model = fir_model()
    with pytest.raises(AudioError, match="NaN"):
        render(model, np.array([0.0, np.nan], dtype=np.float32), model.sample_rate)
    with pytest.raises(AudioError, match="no sample frames"):
        render(model, np.zeros((0, 1), dtype=np.float32), model.sample_rate)
    with pytest.raises(AudioError, match="1-D or 2-D"):
        render(model, np.zeros((2, 2, 2), dtype=np.float32), model.sample_rate)
    with pytest.raises(AudioError, match="no excerpts"):
        render_batch(model, [], model.sample_rate)
    with pytest.raises(RenderError, match="chunk_size"):
        render(model, noise(10), model.sample_rate, chunk_size=0)


def test_progress_is_monotonic_and_ends_at_one():
    model = rnn_model()
    seen: list[float] = []
    render(model, noise(5000), model.sample_rate, chunk_size=300, progress=seen.append)
    assert len(seen) > 5 and seen[-1] == 1.0
    assert all(0.0 <= a < b <= 1.0 for a, b in zip(seen, seen[1:]))


def test_progress_stays_monotonic_through_a_fallback():
    model = long_memory_model()
    seen: list[float] = []
    _, report = render_batch(
        model,
        [noise(20000, seed=4)],
        model.sample_rate,
        segment_seconds=0.25,
        warmup_seconds=0.001,
        chunk_size=500,
        progress=seen.append,
        with_report=True,
    )
    assert report.path == "sequential"
    assert seen[-1] == 1.0
    assert all(a < b for a, b in zip(seen, seen[1:]))
    # The parallel attempt fills the first half, the sequential fallback the second.
    assert max(f for f in seen if f <= 0.5) == pytest.approx(0.5, abs=0.05)
    assert sum(0.5 < f < 1.0 for f in seen) >= 10


def test_output_above_full_scale_is_reported_not_clipped():
    model = rnn_model()
    x = np.full((800, 1), 0.99, dtype=np.float32)
    x[::2] = -0.99
    x *= 1.0
    y, report = render(model, x * 1.0, model.sample_rate, with_report=True)
    peak = float(np.abs(y).max())
    assert peak > 1.0  # the residual path alone reaches 0.99
    assert report.clipped and report.peak == pytest.approx(peak)
    assert "not clipped" in report.warnings[0]


def test_plan_segments_covers_signal_once_with_overlap():
    rows = plan_segments(frames=1000, segment=100, context=30, check=10)
    covered = np.zeros(1000, dtype=int)
    for start, keep_from, out_start, out_stop in rows:
        covered[out_start:out_stop] += 1
        assert out_start == start + keep_from
        assert start >= 0
    assert (covered == 1).all()
    assert rows[0] == (0, 0, 0, 140)
    assert rows[1] == (100, 40, 140, 240)


def test_parallel_batch_equals_sequential_for_conv_model():
    model = fir_model(taps=65)
    items = [noise(9000, seed=1), noise(30000, 2, seed=2), noise(50, seed=3)]
    seq = [reference_forward(model, a) for a in items]
    got, report = render_batch(model, items, model.sample_rate, segment_seconds=0.1, with_report=True)
    assert isinstance(report, RenderReport)
    assert report.path == "parallel" and report.segments > len(items) + 3
    assert report.esr_check is not None and report.esr_check < 1e-10
    for g, s in zip(got, seq):
        assert g.shape == s.shape
        assert esr(g, s) < 1e-7


def test_parallel_batch_with_short_memory_recurrent_model_passes_check():
    model = rnn_model()
    items = [noise(24000, seed=5), noise(16000, seed=6)]
    got, report = render_batch(
        model, items, model.sample_rate, segment_seconds=0.5, warmup_seconds=0.25, with_report=True
    )
    assert report.path == "parallel"
    for g, a in zip(got, items):
        assert esr(g, reference_forward(model, a)) < 1e-7


def test_fallback_to_sequential_when_warm_up_is_too_short():
    model = long_memory_model()
    items = [noise(12000, seed=7), noise(12000, seed=8)]
    got, report = render_batch(
        model, items, model.sample_rate, segment_seconds=0.2, warmup_seconds=0.001, with_report=True
    )
    assert report.esr_check is not None and report.esr_check > 1e-7
    assert report.path == "sequential" and report.fallback_items == [0, 1]
    assert "excerpt(s) 0, 1 rendered sequentially" in report.warnings[0]
    for g, a in zip(got, items):
        np.testing.assert_allclose(g, reference_forward(model, a), atol=1e-6, rtol=0)


def test_batch_resamples_and_keeps_each_length():
    model = fir_model(sample_rate=48000)
    items = [noise(44100, seed=9), noise(22051, 2, seed=10)]
    got, report = render_batch(model, items, 44100, with_report=True)
    assert [g.shape for g in got] == [(44100, 1), (22051, 2)]
    assert report.resampled and report.realtime_factor > 0
    single = render(model, items[1], 44100)
    np.testing.assert_allclose(got[1], single, atol=1e-5, rtol=0)


def test_sequential_batch_matches_per_item_reference():
    model = rnn_model(torch.nn.LSTM)
    items = [noise(3000, seed=11), noise(5000, seed=12)]
    got, report = render_batch(model, items, model.sample_rate, parallel=False, with_report=True)
    assert report.path == "sequential" and report.fallback_items == []
    for g, a in zip(got, items):
        np.testing.assert_allclose(g, reference_forward(model, a), atol=2e-6, rtol=0)


def test_only_failing_excerpts_fall_back():
    model = long_memory_model()
    items = [noise(12000, seed=13), noise(300, seed=14)]  # the short one is never cut
    got, report = render_batch(
        model, items, model.sample_rate, segment_seconds=0.2, warmup_seconds=0.001, with_report=True
    )
    assert report.path == "mixed" and report.fallback_items == [0]
    for g, a in zip(got, items):
        np.testing.assert_allclose(g, reference_forward(model, a), atol=1e-6, rtol=0)


def test_default_plan_cuts_recurrent_signals_into_many_rows():
    # Default plan for a recurrent model: about RECURRENT_ROWS rows, each >= 4 warm-ups.
    model = rnn_model()
    items = [noise(8000 * 6, seed=s) for s in range(2)]
    _, report = render_batch(model, items, model.sample_rate, warmup_seconds=0.05, with_report=True)
    assert report.path == "parallel"
    assert 40 <= report.segments <= 70


def test_batch_render_is_reproducible_bit_for_bit():
    model = rnn_model()
    items = [noise(20000, seed=15), noise(7000, 2, seed=16)]
    first = render_batch(model, items, model.sample_rate, warmup_seconds=0.05)
    second = render_batch(model, items, model.sample_rate, warmup_seconds=0.05)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kernel", ["compiled", "torch"])
def test_the_module_sets_its_rows_and_chunk_budget(kernel, monkeypatch):
    # RecurrentModel asks for 4 rows and 2**16 frames a call with the compiled kernel;
    # through PyTorch, 24 rows for an LSTM and 64 for a GRU, and 2**14 frames a call.
    from modelrunner import native
    from modelrunner.architectures.recurrent import RecurrentModel
    from modelrunner.model import EffectModel

    if kernel == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    items = [noise(8000 * 6, seed=s) for s in range(2)]
    plans = {
        "compiled": {"LSTM": (4, 1 << 16), "GRU": (4, 1 << 16)},
        "torch": {"LSTM": (24, 1 << 14), "GRU": (64, 1 << 14)},
    }[kernel]
    for unit, (rows, budget) in plans.items():
        torch.manual_seed(3)
        module = RecurrentModel(unit, 6).eval()
        assert module.batch_rows == rows and module.batch_chunk_budget == budget
        model = EffectModel(module, 8000, [], [], True, 1, "native", unit, 0)
        got, report = render_batch(model, items, 8000, warmup_seconds=0.02, with_report=True)
        assert report.path == "parallel"
        assert rows * 0.7 <= report.segments <= rows * 1.1, (unit, report.segments)
        for g, a in zip(got, items):
            np.testing.assert_allclose(g, reference_forward(model, a), atol=1e-5, rtol=0)


class _Poisoned(torch.nn.Module):
    """``y = -|x|``, except one sample replaced by ``value`` (NaN or an infinity)."""

    def __init__(self, value: float, at: int) -> None:
        super().__init__()
        self.value, self.at = value, at

    def forward(self, x, knobs, state=None):
        seen = 0 if state is None else state
        y = -x.abs()
        if seen <= self.at < seen + x.shape[1]:
            y[-1, self.at - seen] = self.value
        return y, seen + x.shape[1]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("at", [0, 1234, 2999])
def test_any_non_finite_output_sample_is_refused(value, at):
    """One NaN or infinity anywhere in any excerpt's output fails the render, by name."""
    model = _wrap(_Poisoned(value, at).eval(), 8000, stateful=True, receptive_field=1, architecture="x", knobs=False)
    items = [noise(3000, seed=1), noise(3000, seed=2)]
    with pytest.raises(RenderError, match="NaN or infinite output"):
        render_batch(model, items, 8000, parallel=False, chunk_size=500)
    with pytest.raises(RenderError, match="NaN or infinite output"):
        render(model, items[1], 8000, chunk_size=700)


def test_the_peak_of_an_all_negative_output_is_its_magnitude():
    model = _wrap(_Poisoned(-0.5, 0).eval(), 8000, stateful=True, receptive_field=1, architecture="x", knobs=False)
    x = noise(2000, seed=3, level=0.1)
    x[100] = 1.5
    y, report = render(model, x, 8000, with_report=True)
    assert float(y.max()) <= 0.0 and float(y.min()) == pytest.approx(-1.5)
    assert report.peak == pytest.approx(1.5) and report.clipped

"""The compiled recurrent kernel (modelrunner/kernels/rnn.c) against PyTorch's modules.

PyTorch's ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` forward is the reference (gate equations
as in the PyTorch docs); the kernel must give the same output and state in any chunking,
and a machine without a compiler must still render, through PyTorch.
"""

from __future__ import annotations

import copy
import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modelrunner import native
from modelrunner.architectures.recurrent import RecurrentModel
from modelrunner.model import EffectModel
from modelrunner.render import reference_forward, render, render_batch
from tests.paths import fixture_path

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    lib = native.library()
    assert lib is not None, f"the kernel must build on this machine (it has gcc): {native.reason()}"
    return lib


def make(unit: str, hidden: int, layers: int = 1, knobs: int = 0, seed: int = 0, **kw) -> RecurrentModel:
    torch.manual_seed(seed)
    return RecurrentModel(unit, hidden, layers, knobs, **kw).eval()


def _state_list(state) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


def _stream(step, x, knobs, chunk, state=None):
    outs = []
    for start in range(0, x.shape[1], chunk):
        y, state = step(x[:, start : start + chunk], knobs, state)
        outs.append(y)
    return torch.cat(outs, dim=1), state


def test_exp_is_within_two_ulp_of_float64(lib):
    x = np.linspace(-87.0, 88.0, 1 << 20, dtype=np.float32)
    y = np.empty_like(x)
    lib.rnn_exp(x.ctypes.data, y.ctypes.data, x.size)
    want = np.exp(x.astype(np.float64))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(y - want) / ulp) <= 2.0


CASES = [
    ("LSTM", 32, 1, 0),
    ("GRU", 32, 1, 0),
    ("RNN", 16, 1, 0),
    ("LSTM", 20, 2, 2),
    ("GRU", 7, 3, 1),
    ("LSTM", 1, 1, 0),
    ("GRU", 33, 1, 3),
    ("LSTM", 65, 1, 1),
]


@pytest.mark.parametrize("unit,hidden,layers,knobs", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_kernel_equals_torch_in_any_chunking(lib, unit, hidden, layers, knobs, chunk):
    model = make(unit, hidden, layers, knobs)
    frames = 300 if chunk == 1 else 5000
    x = 0.5 * torch.randn(5, frames, generator=torch.Generator().manual_seed(1))
    kn = torch.rand(5, knobs, generator=torch.Generator().manual_seed(2)) if knobs else None
    with torch.inference_mode():
        want, want_state = model(x, kn)
        got, got_state = _stream(model.fast_forward, x, kn, chunk)
    assert model._kernel() is not None  # the kernel ran, not the fallback
    assert float((got - want).abs().max()) <= 1e-5
    for g, w in zip(_state_list(got_state), _state_list(want_state), strict=True):
        assert g.shape == w.shape and float((g - w).abs().max()) <= 1e-5


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_elman_cells_and_missing_biases(lib, nonlinearity, bias):
    model = make("RNN", 12, 2, 1, seed=4, bias=bias)
    model.rec = torch.nn.RNN(2, 12, 2, batch_first=True, bias=bias, nonlinearity=nonlinearity).eval()
    x = 0.4 * torch.randn(3, 2000, generator=torch.Generator().manual_seed(5))
    kn = torch.full((3, 1), 0.3)
    with torch.inference_mode():
        want, _ = model(x, kn)
        got, _ = _stream(model.fast_forward, x, kn, 333)
    assert float((got - want).abs().max()) <= 1e-5


def test_saturating_inputs_and_start_state_from_forward(lib):
    # Large inputs drive every gate into saturation (the exp's clamped range), and a state
    # made by forward must carry on through the kernel and back.
    model = make("LSTM", 24, 2, 1, seed=6)
    x = 40.0 * torch.randn(4, 3000, generator=torch.Generator().manual_seed(7))
    kn = torch.rand(4, 1)
    with torch.inference_mode():
        want, _ = model(x, kn)
        _, mid = model(x[:, :1000], kn)
        a, mid2 = model.fast_forward(x[:, 1000:2000], kn, mid)
        b, _ = model(x[:, 2000:], kn, mid2)
    got = torch.cat([want[:, :1000], a, b], dim=1)
    assert bool(torch.isfinite(got).all())
    assert float((got - want).abs().max()) <= 1e-5


def test_real_model_is_as_close_to_float64_as_torch_float32(lib):
    # GuitarML's TS9 (CoreAudioML JSON, LSTM-20 with a gain knob) on real guitar: a float64
    # forward pass is the exact answer; the kernel may not stray further than float32 does.
    from modelrunner.audio import read_audio
    from modelrunner.formats import load

    model = load(fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json"))
    audio, rate = read_audio(fixture_path("audio", "guitar_example_44k.wav"))
    x = torch.from_numpy(np.ascontiguousarray(audio[: 3 * rate, 0])).float()[None]
    kn = torch.tensor([[1.0]])
    module = model.module
    with torch.inference_mode():
        torch32, _ = module(x, kn)
        kernel, _ = module.fast_forward(x, kn)
        exact, _ = copy.deepcopy(module).double()(x.double(), kn.double())
    err_torch = float((torch32.double() - exact).abs().max())
    err_kernel = float((kernel.double() - exact).abs().max())
    assert module._kernel() is not None
    assert err_kernel <= 1e-5 and err_kernel <= 3 * err_torch + 1e-7, (err_kernel, err_torch)


def test_changed_weights_are_repacked(lib):
    model = make("GRU", 8)
    x = 0.3 * torch.randn(2, 500)
    with torch.inference_mode():
        before, _ = model.fast_forward(x)
    with torch.no_grad():
        model.rec.weight_hh_l0.mul_(0.5)
    with torch.inference_mode():
        after, _ = model.fast_forward(x)
        want, _ = model(x)
    assert float((after - before).abs().max()) > 1e-3
    assert float((after - want).abs().max()) <= 1e-5


def test_fixed_weights_reads_versions_once_per_block(monkeypatch):
    model = make("LSTM", 4)
    walks = []
    walk = native._walk_versions
    monkeypatch.setattr(native, "_walk_versions", lambda modules: walks.append(1) or walk(modules))
    outside = native.version_key([model])
    with native.fixed_weights():
        inside = native.version_key([model])
        with native.fixed_weights():  # nested: the outer block's memory
            assert native.version_key([model]) is inside
        assert native.version_key([model.rec]) != inside  # another set of modules: its own walk
        with torch.no_grad():
            model.lin.weight.mul_(0.5)
        assert native.version_key([model]) is inside  # as promised: not seen inside
    assert inside == outside and len(walks) == 3
    assert native.version_key([model]) != outside  # seen once the block ends


def test_knob_shape_is_checked(lib):
    model = make("LSTM", 8, knobs=2)
    with pytest.raises(ValueError, match=r"knobs must have shape \(2, 2\)"):
        model.fast_forward(torch.zeros(2, 10), torch.zeros(2, 3))


def test_render_batch_uses_kernel_and_matches_reference(lib):
    module = make("LSTM", 16, knobs=1, seed=8)
    model = EffectModel(module, 8000, ["p1"], [(0.0, 1.0)], True, 1, "native", "LSTM", 0)
    rng = np.random.default_rng(9)
    items = [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in (40000, 23000, 9000)]
    got, report = render_batch(model, items, 8000, knobs={"p1": 0.7}, with_report=True)
    assert module.batch_rows == 4 and module.batch_chunk_budget == 1 << 16
    for g, a in zip(got, items):
        np.testing.assert_allclose(g[:, 0], reference_forward(model, a, knobs={"p1": 0.7})[:, 0], atol=1e-5, rtol=0)
    assert report.realtime_factor > 0


def test_without_kernel_renders_through_torch(monkeypatch):
    module = make("GRU", 10, seed=10)
    model = EffectModel(module, 8000, [], [], True, 1, "native", "GRU", 0)
    x = (0.3 * np.random.default_rng(11).standard_normal(6000)).astype(np.float32)
    with_kernel = render(model, x, 8000, chunk_size=1000)
    monkeypatch.setattr(native, "library", lambda: None)
    assert module._kernel() is None and module.batch_rows == 64 and module.batch_chunk_budget == 1 << 14
    without = render(model, x, 8000, chunk_size=1000)
    np.testing.assert_allclose(with_kernel, without, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(without, reference_forward(model, x))


def _fresh_process(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = (
        "import torch; from modelrunner import native; "
        "from modelrunner.architectures.recurrent import RecurrentModel; "
        "m = RecurrentModel('LSTM', 4).eval(); y, _ = m.fast_forward(torch.ones(1, 50)); "
        "w, _ = m(torch.ones(1, 50)); assert float((y - w).abs().max()) < 1e-5; print(native.reason())"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_builds_into_the_cache_once_and_falls_back_without_a_compiler(tmp_path):
    cache = tmp_path / "cache"
    first = _fresh_process({"MODELRUNNER_CACHE_DIR": str(cache)})
    assert first.returncode == 0, first.stderr
    assert "compiled kernels in use" in first.stdout
    built = sorted(cache.glob("kernels-*.so"))
    assert len(built) == 1 and not list(cache.glob(".build-*"))
    stamp = built[0].stat().st_mtime_ns
    again = _fresh_process({"MODELRUNNER_CACHE_DIR": str(cache)})
    assert again.returncode == 0 and built[0].stat().st_mtime_ns == stamp  # reused, not rebuilt

    no_cc = _fresh_process({"MODELRUNNER_CACHE_DIR": str(tmp_path / "other"), "CC": "/nonexistent/cc"})
    assert no_cc.returncode == 0, no_cc.stderr
    assert "using PyTorch's" in no_cc.stdout and "using PyTorch's" in no_cc.stderr
    off = _fresh_process({"MODELRUNNER_NATIVE": "0"})
    assert off.returncode == 0 and "forced by MODELRUNNER_NATIVE=0" in off.stdout

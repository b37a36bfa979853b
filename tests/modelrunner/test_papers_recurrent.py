"""State trajectory network, state-matching GRU and autoregressive MLP: demo checkpoints,
naive per-sample references, streaming, look-back state, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modelrunner import architectures, lookback
from modelrunner.errors import CheckpointError
from modelrunner.formats import load
from tests.modelrunner._helpers import assert_chunked_equals_whole, guitar, run_whole

CKPT = Path(__file__).resolve().parents[2] / "demo" / "papers" / "checkpoints"


def _np_mlp(layers: list, v: np.ndarray) -> np.ndarray:
    """Linear/tanh stack in float64 numpy."""
    for layer in layers:
        if isinstance(layer, torch.nn.Linear):
            v = v @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy()
        else:
            assert isinstance(layer, torch.nn.Tanh)
            v = np.tanh(v)
    return v


@pytest.mark.parametrize("name", ["stn", "statematch", "armlp"])
def test_demo_checkpoint_loads_renders_streams(name: str) -> None:
    model = load(CKPT / f"{name}.safetensors")
    assert model.format == "native" and model.stateful and model.knob_names == ["gain"]
    x = guitar(0.05)
    y = run_whole(model, x, {"gain": 0.2})
    assert torch.isfinite(y).all() and float(y.std()) > 1e-4
    assert_chunked_equals_whole(model, x, {"gain": 0.2})


def test_armlp_equals_naive_numpy_loop() -> None:
    model = load(CKPT / "armlp.safetensors")
    mod = model.module
    m = mod.m
    x = guitar(0.02, offset=2.0)[0].double().numpy()
    gain = 0.8
    xs = np.concatenate([np.zeros(m - 1), x])
    ys = np.zeros(m - 1 + len(x))
    for n in range(len(x)):
        feats = np.concatenate([xs[n : n + m], ys[n : n + m - 1], [gain]])
        ys[m - 1 + n] = _np_mlp(list(mod.mlp), feats)[0]
    y = run_whole(model, torch.tensor(x[None], dtype=torch.float32), {"gain": gain})[0].numpy()
    assert np.abs(y - ys[m - 1 :]).max() < 1e-5 and np.abs(ys).max() > 1e-3
    # Batched across excerpts: each row equals its own single-row render.
    xb = guitar(0.01).repeat(3, 1) * torch.tensor([[0.5], [1.0], [2.0]])
    with torch.no_grad():
        yb, _ = mod(xb, torch.full((3, 1), gain))
        y1, _ = mod(xb[2:3], torch.full((1, 1), gain))
    assert torch.allclose(yb[2:3], y1, atol=1e-6)


def test_stn_equals_naive_euler_loop() -> None:
    model = load(CKPT / "stn.safetensors")
    mod = model.module
    x = guitar(0.005, offset=2.0)[0].double().numpy()
    s = np.zeros(mod.state_size)
    ref = []
    for u in x:
        s = s + mod.step * _np_mlp(list(mod.mlp), np.concatenate([[u, 0.5], s]))
        ref.append(float(s @ mod.readout.weight.detach().double().numpy()[0] + mod.readout.bias.item()))
    y = run_whole(model, torch.tensor(x[None], dtype=torch.float32), {"gain": 0.5})[0].numpy()
    assert np.abs(y - np.array(ref)).max() < 1e-5


def test_statematch_encoder_and_lookback() -> None:
    model = load(CKPT / "statematch.safetensors")
    mod = model.module
    n = mod.init_len
    x = guitar(0.05)[0].numpy()
    y_ctx = np.tanh(5 * x[:n])
    state, mode, info = lookback.prepare(model, x[n:], x[:n], y_ctx, knobs={"gain": 0.5})
    assert mode == "lookback" and info["target_used"]
    with torch.no_grad():
        h0 = mod.encoder(torch.tensor(np.concatenate([x[:n], y_ctx, [0.5]]), dtype=torch.float32)[None])
        gru, _ = mod.rec(torch.stack([torch.tensor(x[n:]), torch.full((len(x) - n,), 0.5)], 1)[None], h0[None])
        ref = (mod.lin(gru)[0, :, 0] + torch.tensor(x[n:])).numpy()
    out, mode, _ = lookback.render_excerpt(model, x[n:], x[:n], y_ctx, knobs={"gain": 0.5})
    assert mode == "lookback" and np.abs(out - ref).max() < 1e-5
    # Without context the encoder sees silence: state=None equals encoding zeros.
    _, mode, info = lookback.prepare(model, x)
    assert mode == "zero-warmup" and info["warmup_samples"] == 0


def test_armlp_lookback_is_teacher_forced() -> None:
    model = load(CKPT / "armlp.safetensors")
    m = model.module.m
    x = guitar(0.02)[0].numpy()
    target = np.tanh(3 * x)
    state, mode, _ = lookback.prepare(model, x[100:], x[:100], target[:100])
    assert mode == "lookback"
    assert np.allclose(state[0][0].numpy(), x[100 - (m - 1) : 100]) and np.allclose(
        state[1][0].numpy(), target[100 - (m - 1) : 100]
    )


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("stn", {"readout": "state7"}, "readout"),
        ("stn", {"state_size": 0}, "state_size"),
        ("stn", {"step": -1}, "step"),
        ("statematch", {"init_len": 0}, "init_len"),
        ("statematch", {"encoder_uses_target": "yes"}, "encoder_uses_target"),
        ("armlp", {"m": 0}, "m must be"),
        ("armlp", {"hidden_sizes": []}, "hidden_sizes"),
        ("armlp", {"activation": "wobble"}, "wobble"),
        ("armlp", {"order": 3}, "no parameter 'order'"),
    ],
)
def test_wrong_config_refused(name: str, params: dict, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        architectures.build(name, params, 1)


def test_wrong_knob_count_refused(tmp_path) -> None:
    from safetensors.torch import load_file

    sd = load_file(str(CKPT / "armlp.safetensors"))
    cfg = {
        "format_version": 1,
        "architecture": "armlp",
        "sample_rate": 44100,
        "knobs": [],
        "params": {"m": 12, "hidden_sizes": [16, 16]},
    }
    torch.save(sd, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="mlp.0.weight"):
        load(tmp_path / "a.pt", config=cfg)


@pytest.mark.parametrize("name", ["stn", "statematch", "armlp", "sptmod"])
def test_knobs_of_the_wrong_shape_are_refused(name: str) -> None:
    model = architectures.build(name, {}, 1)
    y, _ = model(torch.zeros(2, 64), torch.full((2, 1), 0.5))
    assert y.shape == (2, 64)
    for knobs in (torch.zeros(2, 3), torch.zeros(1, 1)):
        with pytest.raises(ValueError, match=r"knobs must have shape \(2, 1\)"):
            model(torch.zeros(2, 64), knobs)

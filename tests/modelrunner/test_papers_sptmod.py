"""SPTMod: reference key names, the demo checkpoint, streaming, look-back against an
independent transcription of the reference's NoPadding forward pass, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modelrunner import architectures, lookback
from modelrunner.architectures.sptmod import SPTMod, params_from_hparams
from modelrunner.errors import CheckpointError
from modelrunner.formats import load, native
from tests.modelrunner._helpers import assert_chunked_equals_whole, guitar, run_whole

CKPT = Path(__file__).resolve().parents[2] / "demo" / "papers" / "checkpoints"
SMALL = {
    "s_channels_list": [3, 4],
    "s_kernel_size_list": [3, 5],
    "s_dilation_list": [1, 2],
    "tfilm_block_size": 8,
    "cond_size": 4,
    "film_hidden_neurons_list": [5],
    "rnn_cell": "LSTM",
    "rnn_hidden_size": 3,
    "lbnet_out_channels_list": [4, 4],
    "lbnet_kernel_size_list": [3, 3],
    "lbnet_dilation_list": [1, 1],
    "lbnet_stride_list": [2, 2],
    "lbnet_pooling_list": [2, 2],
    "lbnet_film_hidden_neurons_list": [5],
}


def _demo():
    return load(CKPT / "sptmod.pt", config=CKPT / "sptmod.json")


def _random(params: dict | None = None, seed: int = 0) -> SPTMod:
    torch.manual_seed(seed)
    m = architectures.build("sptmod", dict(SMALL, **(params or {})), 1).eval()
    with torch.no_grad():  # larger weights than the default init, so that every path matters
        for name, p in m.named_parameters():
            if "upsample" not in name:
                p.mul_(2.0)
    return m


def test_reference_parameter_names() -> None:
    """The names the reference ``Model`` registers (sptmod.py, CachedConv1d.conv, RNN.rnn,
    LinearInterp.convt, Sequential FiLM MLPs), written out by hand for a 2-block model."""
    expected = {
        "condnet.0.weight",
        "condnet.0.bias",
        "condnet.1.weight",
        "condnet.2.weight",
        "condnet.2.bias",
        "condnet.3.weight",
        "condnet.4.weight",
        "condnet.4.bias",
        "condnet.5.weight",
    }
    for j in range(2):
        expected |= {
            f"s_convs.{j}.conv.weight",
            f"s_convs.{j}.conv.bias",
            f"s_conv11f.{j}.weight",
            f"s_conv11f.{j}.bias",
            f"s_conv11s.{j}.weight",
            f"s_conv11s.{j}.bias",
            f"s_acts.{j}.weight",
            f"s_tfilms.{j}.upsample.convt.weight",
            f"s_tfilms.{j}.film_nn.0.0.weight",
            f"s_tfilms.{j}.film_nn.0.0.bias",
            f"s_tfilms.{j}.film_nn.0.1.weight",
            f"s_tfilms.{j}.film_nn.1.weight",
            f"s_tfilms.{j}.film_nn.1.bias",
        }
        expected |= {f"s_tfilms.{j}.rnn.rnn.{w}_l0" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        expected |= {
            f"lookback_net.convs.{j}.weight",
            f"lookback_net.convs.{j}.bias",
            f"lookback_net.acts.{j}.weight",
            f"lookback_net.films.{j}.0.0.weight",
            f"lookback_net.films.{j}.0.0.bias",
            f"lookback_net.films.{j}.0.1.weight",
            f"lookback_net.films.{j}.1.weight",
            f"lookback_net.films.{j}.1.bias",
        }
    expected |= {"lookback_net.linear_end_module.weight", "lookback_net.linear_end_module.bias"}
    m = _random()
    assert set(m.state_dict()) == expected
    assert tuple(m.state_dict()["s_tfilms.1.rnn.rnn.weight_ih_l0"].shape) == (4 * 3, 4)
    assert tuple(m.state_dict()["lookback_net.linear_end_module.weight"].shape) == (2 * 2 * 3, 4)
    # The interpolation kernel is the reference's fixed ramp [0, 1/P, ..., 1, ..., 1/P].
    kernel = m.state_dict()["s_tfilms.0.upsample.convt.weight"][0, 0]
    assert torch.allclose(kernel, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 7, 6, 5, 4, 3, 2, 1]) / 8)


def test_demo_checkpoint_loads_renders_and_streams() -> None:
    model = _demo()
    assert model.format == "native" and model.architecture.startswith("SPTMod")
    assert model.stateful and model.knob_names == ["gain"] and model.sample_rate == 44100
    x = guitar(0.5)
    y = run_whole(model, x, {"gain": 0.8})
    assert torch.isfinite(y).all() and float(y.std()) > 1e-4
    assert_chunked_equals_whole(model, x[:, :5000], {"gain": 0.8})
    req = lookback.requirements(model)
    assert req == {
        "needs_lookback": True,
        "supports_lookback": True,
        "lookback_samples": model.module.lookback_samples,
        "uses_target": True,
        "latency_samples": 63,
    }


def _interp(h: torch.Tensor, P: int) -> torch.Tensor:
    """Linear interpolation by P: frame m*P + r is (1 - r/P) h[m] + (r/P) h[m+1]."""
    r = torch.arange(P, dtype=h.dtype) / P
    parts = [(1 - r) * h[:, :, m, None] + r * h[:, :, m + 1, None] for m in range(h.shape[2] - 1)]
    return torch.cat(parts, dim=2) if parts else h[:, :, :0]


def _tfilm(m: SPTMod, j: int, vm: torch.Tensor, zp: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    tf = m.s_tfilms[j]
    z2 = F.max_pool1d(vm, m.tfilm_block_size)
    a, b = tf.film_nn(zp).split(vm.shape[1], dim=-1)
    z2 = a[..., None] * z2 + b[..., None]
    H = m.rnn_hidden_size
    out, _ = tf.rnn.rnn(z2.permute(2, 0, 1), (state[None, :, :H].contiguous(), state[None, :, H:].contiguous()))
    return out.permute(1, 2, 0)


def reference_nopadding(m: SPTMod, x: torch.Tensor, y_true: torch.Tensor, p: torch.Tensor, L: int) -> torch.Tensor:
    """Transcription of the reference ``Model.forward(x, p, y_true, use_spn=True,
    paddingmode=NoPadding)`` after ``set_target_length(L)``: x and y_true ``(B, input_length)``."""
    input_length, i0m, i0a, i0l, cmm, cma = m.calc_indices(L)
    assert x.shape[1] == input_length
    P, N, S = m.tfilm_block_size, len(m.s_convs), m.state_size
    zp = m.condnet(p)
    n_lb = m.lookback_net.expected_input_length
    lb = torch.stack([x[:, i0l : i0l + n_lb], y_true[:, i0l : i0l + n_lb]], dim=1)
    lbstate = m.lookback_net(lb, zp)
    vm, va = x[:, None, i0m:], x[:, None, i0a:]
    for j in range(N):
        vm = m.s_acts[j](m.s_convs[j].conv(vm))
        tfilm = _interp(_tfilm(m, j, vm, zp, lbstate[:, j * S : (j + 1) * S]), P)
        mul, plus = m.s_conv11f[j](tfilm[:, :, cma[j] :]).split(1, dim=1)
        va = va * mul + plus
        if j < N - 1:
            mul, plus = m.s_conv11s[j](tfilm).split(vm.shape[1], dim=1)
            vm = (vm[:, :, P:] * mul + plus)[:, :, cmm[j] :]
    return va[:, 0]


def reference_cached(m: SPTMod, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The reference in CachedPadding mode from fresh (zero) caches and states, one call."""
    P, N, H = m.tfilm_block_size, len(m.s_convs), m.rnn_hidden_size
    zp = m.condnet(p)
    vm = va = x[:, None]
    for j in range(N):
        vm = m.s_acts[j](m.s_convs[j].conv(F.pad(vm, (m.s_convs[j].context, 0))))
        h = _tfilm(m, j, vm, zp, x.new_zeros(x.shape[0], 2 * H))
        tfilm = _interp(F.pad(h, (1, 0)), P)
        mul, plus = m.s_conv11f[j](tfilm).split(1, dim=1)
        va = va * mul + plus
        if j < N - 1:
            mul, plus = m.s_conv11s[j](tfilm).split(vm.shape[1], dim=1)
            vm = vm * mul + plus
    return va[:, 0]


def _wrap(module: SPTMod):
    from modelrunner.model import EffectModel

    return EffectModel(
        module=module,
        sample_rate=44100,
        knob_names=["gain"],
        knob_ranges=[(0.0, 1.0)],
        stateful=True,
        receptive_field=1,
        format="native",
        architecture="sptmod",
        parameter_count=0,
    )


@pytest.mark.parametrize("L", [8 * 5, 8 * 40])
def test_lookback_matches_reference_nopadding(L: int) -> None:
    m = _random()
    model = _wrap(m)
    p = torch.tensor([[0.3]])
    input_length = m.calc_indices(L)[0]
    x = guitar(0.1)[:, :input_length] * 4
    y_true = torch.tanh(3 * x)
    with torch.no_grad():
        ref = reference_nopadding(m, x, y_true, p, L)
    out, mode, info = lookback.render_excerpt(
        model, x[0, -L:].numpy(), x[0, :-L].numpy(), y_true[0, :-L].numpy(), knobs={"gain": 0.3}
    )
    assert mode == "lookback" and info["latency_compensated"] == 7 and info["target_used"]
    assert float(ref.abs().max()) > 1e-3
    assert np.abs(out - ref[0].numpy()).max() < 1e-5


def test_zero_state_matches_reference_cached_mode() -> None:
    m = _random(seed=1)
    model = _wrap(m)
    x = guitar(0.1)[:, : 8 * 50] * 4
    with torch.no_grad():
        ref = reference_cached(m, x, torch.tensor([[0.7]]))
    out, mode, info = lookback.render_excerpt(model, x[0].numpy(), knobs={"gain": 0.7})
    assert mode == "zero-warmup" and info["warmup_samples"] == 0 and "no look-back" in info["lookback_unavailable"]
    assert np.abs(out - ref[0].numpy()).max() < 1e-5
    # The raw streaming output is the same signal, 7 frames (one block minus one) late.
    y = run_whole(model, x, {"gain": 0.7})
    assert torch.allclose(y[0, 7:], ref[0, :-7], atol=1e-5) and float(y[0, :7].abs().max()) == 0.0


def test_short_lookback_falls_back_to_warmup() -> None:
    model = _demo()
    x = guitar(0.2)[0].numpy()
    state, mode, info = lookback.prepare(model, x[4000:], x[:300], x[:300], warmup_samples=200)
    assert mode == "zero-warmup" and info["warmup_samples"] == 200 and info["warmup_source"] == "lookback_dry"
    assert "shorter than" in info["lookback_unavailable"] and state is not None
    _, mode, _ = lookback.prepare(model, x[4000:], x[:4000], None)
    assert mode == "zero-warmup"


@pytest.mark.parametrize(
    ("params", "knobs", "message"),
    [
        ({"n_params": 2}, 1, "n_params=2"),
        ({"sidechain_channels": 1}, 1, "sidechain_channels"),
        ({"rnn_cell": "RNN"}, 1, "rnn_cell"),
        ({"s_kernel_size_list": [3]}, 1, "s_channels_list"),
        ({"tfilm_pooling_type": "median"}, 1, "tfilm_pooling_type"),
        ({"lbnet_linear_end": False}, 1, "lbnet_out_channels_list"),
        ({"nonsense": 1}, 1, "no parameter 'nonsense'"),
    ],
)
def test_wrong_config_refused(params: dict, knobs: int, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        architectures.build("sptmod", dict(SMALL, **params), knobs)


def test_state_dict_of_other_config_refused(tmp_path) -> None:
    m = _random()
    cfg = {
        "format_version": 1,
        "architecture": "sptmod",
        "sample_rate": 48000,
        "knobs": [{"name": "threshold"}],
        "params": dict(SMALL, rnn_hidden_size=4),
    }
    torch.save(m.state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="s_conv11f.0.weight.* has shape"):
        load(tmp_path / "w.pt", config=cfg)
    cfg["params"] = SMALL
    native.save(tmp_path / "w.safetensors", m.state_dict(), cfg)
    assert load(tmp_path / "w.safetensors").knob_names == ["threshold"]


def test_params_from_hparams() -> None:
    hp = dict(
        SMALL,
        input_channels=1,
        sidechain_channels=0,
        n_params=1,
        tfilm_pooling_type="max",
        lbnet=True,
        lbnet_dropout=0.0,
        lbnet_dropout_full_items=False,
        lbnet_linear_end=True,
        lbnet_pooling_type="max",
        lr=1e-3,
        batch_size=16,
    )
    params = params_from_hparams(hp)
    assert "lr" not in params and architectures.build("sptmod", params, 1) is not None
    with pytest.raises(ValueError, match="rnn_cell"):
        params_from_hparams({k: v for k, v in hp.items() if k != "rnn_cell"})

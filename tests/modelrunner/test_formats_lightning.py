"""Lightning checkpoints: the real PedalNetRT file against its original forward pass, pruning, mapping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modelrunner import architectures
from modelrunner.errors import CheckpointError
from modelrunner.formats import detect_format, load
from tests.modelrunner._helpers import assert_chunked_equals_whole, guitar, run_whole
from tests.paths import fixture_path


def pedalnet_reference(sd: dict[str, torch.Tensor], hp: dict, x: torch.Tensor) -> torch.Tensor:
    """PedalNetRT's WaveNet.forward: each conv padded by (k-1)*d on both sides, then the tail cut."""
    C = hp["num_channels"]
    dil = [2**d for d in range(hp["dilation_depth"])] * hp["num_repeat"]
    out = F.conv1d(x[:, None, :], sd["wavenet.input_layer.weight"], sd["wavenet.input_layer.bias"])
    skips = []
    for i, d in enumerate(dil):
        pad = (hp["kernel_size"] - 1) * d
        h = F.conv1d(out, sd[f"wavenet.hidden.{i}.weight"], sd[f"wavenet.hidden.{i}.bias"], padding=pad, dilation=d)
        h = h[:, :, :-pad]
        gated = torch.tanh(h[:, :C]) * torch.sigmoid(h[:, C:])
        skips.append(gated)
        out = F.conv1d(gated, sd[f"wavenet.residuals.{i}.weight"], sd[f"wavenet.residuals.{i}.bias"]) + out
    mix = F.conv1d(torch.cat(skips, dim=1), sd["wavenet.linear_mix.weight"], sd["wavenet.linear_mix.bias"])
    return mix[:, 0, :]


def test_pedalnet_matches_original_forward_and_streams() -> None:
    path = fixture_path("models", "lightning", "pedalnet.ckpt")
    assert detect_format(path) == "lightning"
    model = load(path)
    assert model.format == "lightning" and model.architecture == "PedalNet WaveNet"
    assert model.sample_rate == 44100 and model.receptive_field == 1 + 2 * (2**10 - 1)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    x = guitar(1.0)
    y = run_whole(model, x)
    ref = pedalnet_reference(ckpt["state_dict"], ckpt["hparams"], x)
    assert torch.isfinite(y).all()
    assert (y - ref).abs().max() < 1e-5
    assert y.std() > 1e-4
    assert model.metadata["lightning"]["epoch"] == 1
    assert_chunked_equals_whole(model, x[:, :6000])


def _recurrent_ckpt(tmp_path, prune: bool, hparams: dict) -> tuple:
    torch.manual_seed(3)
    net = architectures.build("recurrent", {"unit_type": "GRU", "hidden_size": 6}, 1)
    sd = {f"model.{k}": v.clone() for k, v in net.state_dict().items()}
    if prune:
        w = sd.pop("model.lin.weight")
        mask = (torch.rand_like(w) > 0.5).float()
        sd["model.lin.weight_orig"] = w
        sd["model.lin.weight_mask"] = mask
        with torch.no_grad():
            net.lin.weight.mul_(mask)
    path = tmp_path / "r.ckpt"
    torch.save(
        {
            "epoch": 3,
            "global_step": 30,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": sd,
            "hyper_parameters": hparams,
        },
        path,
    )
    return path, net.eval()


HP = {
    "architecture": "recurrent",
    "sample_rate": 44100,
    "knobs": [{"name": "drive"}],
    "params": {"unit_type": "GRU", "hidden_size": 6},
    "lr": 1e-3,
}


def test_hyper_parameters_in_native_schema_and_pruning_folded(tmp_path) -> None:
    path, net = _recurrent_ckpt(tmp_path, prune=True, hparams=HP)
    model = load(path)
    assert model.architecture == "GRU-6" and model.knob_names == ["drive"] and model.sample_rate == 44100
    x = guitar(0.05)
    with torch.no_grad():
        ref, _ = net(x, torch.full((1, 1), 0.25))
    assert torch.allclose(run_whole(model, x, {"drive": 0.25}), ref, atol=1e-6)
    assert_chunked_equals_whole(model, x, {"drive": 0.25})


def test_unknown_architecture_needs_config(tmp_path) -> None:
    path, _ = _recurrent_ckpt(tmp_path, prune=False, hparams={"lr": 1e-3})
    with pytest.raises(CheckpointError, match="cannot tell the architecture"):
        load(path)
    model = load(
        path,
        config={
            "format_version": 1,
            "architecture": "recurrent",
            "sample_rate": 48000,
            "knobs": [{"name": "drive"}],
            "params": {"unit_type": "GRU", "hidden_size": 6},
        },
    )
    assert model.sample_rate == 48000
    path, _ = _recurrent_ckpt(tmp_path, prune=False, hparams=dict(HP, architecture="mamba"))
    with pytest.raises(CheckpointError, match="cannot tell the architecture"):
        load(path)


def test_mask_without_orig_refused(tmp_path) -> None:
    path, _ = _recurrent_ckpt(tmp_path, prune=False, hparams=HP)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["model.lin.bias_mask"] = torch.ones(1)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="lin.bias_mask"):
        load(path)

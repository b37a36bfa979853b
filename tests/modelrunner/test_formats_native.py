"""Native safetensors/.pt + JSON config: round trip, chunking for every registry architecture, refusals."""

from __future__ import annotations

import json

import pytest
import torch

from modelrunner import architectures
from modelrunner.errors import CheckpointError
from modelrunner.formats import detect_format, load, native
from tests.modelrunner._helpers import assert_chunked_equals_whole, guitar, run_whole

CASES = {
    "recurrent": ({"unit_type": "LSTM", "hidden_size": 8, "num_layers": 2}, 2),
    "tcn": ({"channels": 8, "kernel_size": 5, "num_blocks": 3, "dilation_growth": 4}, 2),
    "wavenet": ({"channels": 6, "kernel_size": 3, "dilation_depth": 6}, 1),
    "pedalnet": ({"num_channels": 4, "dilation_depth": 5, "kernel_size": 3}, 0),
}


def config(arch: str) -> dict:
    params, k = CASES[arch]
    knobs = [{"name": f"k{i}", "min": -1.0, "max": 2.0, "default": 0.5} for i in range(k)]
    return {"format_version": 1, "architecture": arch, "sample_rate": 48000, "knobs": knobs, "params": params}


def trained_like(arch: str) -> torch.nn.Module:
    """A module with non-trivial random weights (seeded)."""
    torch.manual_seed(1)
    params, k = CASES[arch]
    module = architectures.build(arch, params, k)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module.eval()


@pytest.mark.parametrize("arch", sorted(CASES))
def test_save_load_round_trip_and_chunking(tmp_path, arch: str) -> None:
    module = trained_like(arch)
    path = native.save(tmp_path / "m.safetensors", module.state_dict(), config(arch))
    assert detect_format(path) == "native"
    model = load(path)
    assert model.format == "native" and model.sample_rate == 48000
    assert model.knob_names == [f"k{i}" for i in range(CASES[arch][1])]
    assert model.stateful == (arch == "recurrent")
    json.dumps(model.summary())
    x = guitar(0.2)
    knobs = {n: 1.5 for n in model.knob_names}
    y = run_whole(model, x, knobs)
    with torch.no_grad():
        ref, _ = module(x, model.knob_tensor(knobs, 1))
    assert torch.equal(y, ref)
    assert torch.isfinite(y).all() and y.abs().max() > 1e-4
    assert_chunked_equals_whole(model, x, knobs)


def test_knobs_reach_the_network(tmp_path) -> None:
    for arch in ("recurrent", "tcn", "wavenet"):
        module = trained_like(arch)
        path = native.save(tmp_path / f"{arch}.safetensors", module.state_dict(), config(arch))
        model = load(path)
        x = guitar(0.05)
        a = run_whole(model, x, {"k0": -1.0})
        b = run_whole(model, x, {"k0": 2.0})
        assert (a - b).abs().max() > 1e-4, arch


def test_receptive_field_is_causal_extent(tmp_path) -> None:
    """An impulse at t affects outputs t .. t + RF - 1 only, never earlier ones."""
    for arch in ("tcn", "wavenet", "pedalnet"):
        model = load(native.save(tmp_path / "m.safetensors", trained_like(arch).state_dict(), config(arch)))
        rf = model.receptive_field
        n = rf + 200
        x = torch.zeros(1, n)
        base = run_whole(model, x)
        x[0, 100] = 0.5
        d = (run_whole(model, x) - base).abs()[0]
        assert d[:100].max() == 0.0, arch
        assert d[100] > 0 and d[100 + rf - 1] > 0, arch
        assert d[100 + rf :].max() == 0.0, arch


def test_pt_with_separate_config_file(tmp_path) -> None:
    module = trained_like("tcn")
    torch.save(module.state_dict(), tmp_path / "w.pt")
    (tmp_path / "c.json").write_text(json.dumps(config("tcn")))
    model = load(tmp_path / "w.pt", config=tmp_path / "c.json")
    assert model.architecture == "TCN (3 blocks)"
    assert model.receptive_field == 1 + 4 * (1 + 4 + 16)
    with pytest.raises(CheckpointError, match="no architecture config"):
        load(tmp_path / "w.pt")
    # Embedded form: {"state_dict": ..., "config": ...}
    torch.save({"state_dict": module.state_dict(), "config": config("tcn")}, tmp_path / "both.pt")
    assert load(tmp_path / "both.pt").knob_names == ["k0", "k1"]


def test_refusals(tmp_path) -> None:
    module = trained_like("wavenet")
    sd = module.state_dict()
    bad = dict(config("wavenet"), architecture="transformer")
    with pytest.raises(CheckpointError, match="unknown architecture 'transformer'"):
        native.save(tmp_path / "a.safetensors", sd, bad)
    with pytest.raises(CheckpointError, match="has no parameter 'depth'"):
        native.save(tmp_path / "a.safetensors", sd, dict(config("wavenet"), params={"depth": 3}))
    with pytest.raises(CheckpointError, match="format_version"):
        native.save(tmp_path / "a.safetensors", sd, dict(config("wavenet"), format_version=2))
    with pytest.raises(CheckpointError, match="knob 'k0' needs min < max"):
        native.save(tmp_path / "a.safetensors", sd, dict(config("wavenet"), knobs=[{"name": "k0", "min": 1, "max": 0}]))
    # Shape mismatch: weights from a wider network.
    torch.save(trained_like("wavenet").state_dict(), tmp_path / "w.pt")
    wider = dict(config("wavenet"), params={"channels": 7, "kernel_size": 3, "dilation_depth": 6})
    with pytest.raises(CheckpointError, match=r"'input\.weight' has shape \(6, 1, 1\), expected \(7, 1, 1\)"):
        load(tmp_path / "w.pt", config=wider)
    # NaN weight named.
    sd_nan = {k: v.clone() for k, v in sd.items()}
    sd_nan["output.bias"][0] = float("nan")
    torch.save(sd_nan, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="'output.bias' contains NaN"):
        load(tmp_path / "nan.pt", config=config("wavenet"))
    # Missing and unexpected keys.
    sd_extra = dict(sd, **{"extra.weight": torch.zeros(1)})
    del sd_extra["output.bias"]
    torch.save(sd_extra, tmp_path / "keys.pt")
    with pytest.raises(CheckpointError, match=r"missing keys: output\.bias; unexpected keys: extra\.weight"):
        load(tmp_path / "keys.pt", config=config("wavenet"))


def test_damaged_safetensors(tmp_path) -> None:
    path = native.save(tmp_path / "m.safetensors", trained_like("tcn").state_dict(), config("tcn"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="safetensors"):
        load(path)

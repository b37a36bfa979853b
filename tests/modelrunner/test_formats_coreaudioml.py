"""CoreAudioML JSON: loads the real fixtures and matches a plain torch RNN built from the file."""

from __future__ import annotations

import json

import pytest
import torch

from modelrunner.errors import CheckpointError, RenderError
from modelrunner.formats import coreaudioml, detect_format, load
from tests.modelrunner._helpers import assert_chunked_equals_whole, guitar, run_whole
from tests.paths import fixture_path


def reference(path, x: torch.Tensor, knob_values: list[float]) -> torch.Tensor:
    """y = Linear(LSTM([x, knobs])) + x, built directly from the file's state_dict."""
    data = json.loads(path.read_text())
    md, sd = data["model_data"], data["state_dict"]
    rnn = getattr(torch.nn, md["unit_type"])(md["input_size"], md["hidden_size"], md["num_layers"])
    lin = torch.nn.Linear(md["hidden_size"], md["output_size"], bias=md["bias_fl"])
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            p.copy_(torch.tensor(sd["rec." + name]))
        for name, p in lin.named_parameters():
            p.copy_(torch.tensor(sd["lin." + name]))
        # CoreAudioML's native layout: (time, batch, channels)
        inp = x.T[:, :, None]
        if knob_values:
            inp = torch.cat([inp, torch.tensor(knob_values).expand(inp.shape[0], 1, len(knob_values))], dim=2)
        out, _ = rnn(inp)
        return (lin(out) + inp[:, :, : md["skip"]])[:, 0, 0][None, :]


@pytest.mark.parametrize("name", ["ht1_lstm32.json", "ts9_lstm20_gain.json"])
def test_matches_plain_torch_reference(name: str) -> None:
    path = fixture_path("models", "coreaudioml", name)
    model = load(path)
    x = guitar(0.25)
    knobs = {n: 0.8 for n in model.knob_names}
    y = run_whole(model, x, knobs)
    ref = reference(path, x, [0.8] * len(model.knob_names))
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert torch.allclose(y, ref, atol=1e-5)
    assert not torch.allclose(y, x, atol=1e-3)  # the model does something


def test_summary_and_knobs() -> None:
    model = load(fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json"))
    assert detect_format(fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json")) == "coreaudioml"
    assert model.format == "coreaudioml"
    assert model.architecture == "LSTM-20"
    assert model.sample_rate == 44100
    assert model.knob_names == ["p1"] and model.knob_ranges == [(0.0, 1.0)]
    assert model.stateful and model.receptive_field == 1
    assert model.parameter_count == 4 * 20 * (2 + 20) + 2 * 4 * 20 + 20 + 1
    summary = model.summary()
    json.dumps(summary)
    assert summary["provenance"]["sha256"] and len(summary["provenance"]["sha256"]) == 64
    assert "module" not in summary
    with pytest.raises(RenderError, match="gain"):
        model.knob_tensor({"gain": 0.5}, 1)
    with pytest.raises(RenderError, match="p1"):
        model.knob_tensor({"p1": 1.5}, 1)
    assert model.knob_tensor({"p1": 0.25}, 3).tolist() == [[0.25]] * 3
    assert not any(p.requires_grad for p in model.module.parameters())
    assert not model.module.training


def test_knob_changes_output() -> None:
    model = load(fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json"))
    x = guitar(0.1)
    assert (run_whole(model, x, {"p1": 0.0}) - run_whole(model, x, {"p1": 1.0})).abs().max() > 1e-3


def test_sample_rate_override() -> None:
    model = load(fixture_path("models", "coreaudioml", "ht1_lstm32.json"), sample_rate=48000)
    assert model.sample_rate == 48000
    with pytest.raises(CheckpointError, match="sample rate"):
        load(fixture_path("models", "coreaudioml", "ht1_lstm32.json"), sample_rate=-3)


@pytest.mark.parametrize("unit", ["LSTM", "GRU"])
def test_chunked_equals_whole(tmp_path, unit: str) -> None:
    data = json.loads(fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json").read_text())
    if unit == "GRU":
        torch.manual_seed(0)
        gru = torch.nn.GRU(2, 8, 2)
        data["model_data"].update(unit_type="GRU", hidden_size=8, num_layers=2)
        data["state_dict"] = {"rec." + k: v.tolist() for k, v in gru.state_dict().items()}
        data["state_dict"].update({"lin.weight": [[0.1] * 8], "lin.bias": [0.01]})
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    model = load(path)
    assert_chunked_equals_whole(model, guitar(0.2), {"p1": 0.3})


def _write(tmp_path, mutate) -> object:
    data = json.loads(fixture_path("models", "coreaudioml", "ht1_lstm32.json").read_text())
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


def test_refuses_shape_mismatch(tmp_path) -> None:
    path = _write(tmp_path, lambda d: d["state_dict"].update({"lin.weight": [[0.0] * 31]}))
    with pytest.raises(CheckpointError, match=r"lin\.weight.*\(1, 31\).*\(1, 32\)"):
        load(path)


def test_refuses_missing_and_unexpected_keys(tmp_path) -> None:
    def mutate(d):
        d["state_dict"]["extra.weight"] = d["state_dict"].pop("lin.bias")

    with pytest.raises(CheckpointError, match=r"missing keys: lin\.bias.*unexpected keys: extra\.weight"):
        load(_write(tmp_path, mutate))


def test_refuses_nan(tmp_path) -> None:
    path = _write(tmp_path, lambda d: d["state_dict"].update({"lin.bias": [float("nan")]}))
    with pytest.raises(CheckpointError, match="NaN"):
        load(path)


def test_refuses_infinite_weight_naming_key(tmp_path) -> None:
    path = _write(tmp_path, lambda d: None)
    # 1e999 is valid JSON syntax but parses to infinity.
    text = json.dumps(json.loads(path.read_text()))
    data = json.loads(text)
    bias = data["state_dict"]["lin.bias"][0]
    path.write_text(text.replace(json.dumps(bias), "1e999", 1))
    with pytest.raises(CheckpointError, match=r"lin\.bias.*NaN or infinite"):
        load(path)


def test_refuses_bad_unit(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="unit_type"):
        load(_write(tmp_path, lambda d: d["model_data"].update(unit_type="Transformer")))


def test_refuses_non_json(tmp_path) -> None:
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        coreaudioml.load(path)

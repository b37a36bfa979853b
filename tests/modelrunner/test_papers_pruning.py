"""Pruned LSTMs (Südholt et al. 2023): sparsity, dead units, and the compressed dense LSTM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelrunner import architectures, pruning
from modelrunner.errors import CheckpointError
from modelrunner.formats import load
from tests.modelrunner._helpers import assert_chunked_equals_whole, guitar, run_whole

CKPT = Path(__file__).resolve().parents[2] / "demo" / "papers" / "checkpoints" / "lstm_pruned.ckpt"


def test_demo_checkpoint_sparsity_and_dead_units_from_masks() -> None:
    raw = torch.load(CKPT, map_location="cpu", weights_only=True)["state_dict"]
    lin_mask, hh_mask = raw["model.lin.weight_mask"][0], raw["model.rec.weight_hh_l0_mask"]
    # Independent count from the masks: units with every outgoing weight masked.
    expected_dead = [j for j in range(48) if lin_mask[j] == 0 and bool((hh_mask[:, j] == 0).all())]
    report = pruning.analyse(CKPT)
    assert report["dead_units"]["model.rec.l0"] == expected_dead and len(expected_dead) == 36
    assert report["tensors"]["model.rec.weight_hh_l0"]["masked"]
    assert report["tensors"]["model.rec.weight_hh_l0"]["sparsity"] == pytest.approx(
        float((hh_mask == 0).float().mean()), abs=1e-6
    )
    total = sum(v.numel() for k, v in raw.items() if not k.endswith("_mask"))
    assert report["parameters"] == total
    # The loaded model (pruning folded) reports the same dead units.
    model = load(CKPT)
    assert pruning.analyse(model)["dead_units"]["rec.l0"] == expected_dead


def test_compressed_lstm_equals_masked_model() -> None:
    model = load(CKPT)
    small = pruning.compress_lstm(model)
    assert small.module.rec.hidden_size == 12 and small.metadata["compressed"]["from_hidden"] == 48
    assert small.parameter_count < model.parameter_count / 4
    x = guitar(1.0)
    for gain in (0.2, 0.9):
        ref = run_whole(model, x, {"gain": gain})
        out = run_whole(small, x, {"gain": gain})
        assert float(ref.std()) > 1e-3 and float((out - ref).abs().max()) < 1e-5
    assert_chunked_equals_whole(small, x[:, :6000], {"gain": 0.5})


def test_dead_unit_definition_on_a_constructed_model() -> None:
    torch.manual_seed(0)
    net = architectures.build("recurrent", {"unit_type": "GRU", "hidden_size": 5}, 0)
    with torch.no_grad():
        net.lin.weight[0, 1] = 0.0
        net.rec.weight_hh_l0[:, 1] = 0.0  # unit 1: nothing reads it -> dead
        net.lin.weight[0, 3] = 0.0  # unit 3: still read recurrently -> alive
        net.rec.weight_ih_l0[[4, 9, 14]] = 0.0
        net.rec.weight_hh_l0[[4, 9, 14]] = 0.0  # unit 4: no inputs, but its bias still drives the output
    report = pruning.analyse(net)
    assert report["dead_units"] == {"rec.l0": [1]}
    assert report["layers"][0]["no_input_units"] == [4]


def test_refusals() -> None:
    with pytest.raises(CheckpointError, match="'recurrent' model"):
        pruning.compress_lstm(
            load(Path(__file__).resolve().parents[2] / "demo" / "papers" / "checkpoints" / "stn.safetensors")
        )
    with pytest.raises(CheckpointError, match="state_dict"):
        pruning.analyse(42)

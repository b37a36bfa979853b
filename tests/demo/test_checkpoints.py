"""The committed demo checkpoints: CoreAudioML layout, and their quality as recorded and ranked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from demo.device import DemoDevice
from demo.guitar import guitar_phrase
from demo.material import EXCERPT_SEEDS, demo_checkpoints
from demo.train import SAMPLE_RATE, TRAIN_SEEDS, VALID_GAIN, VALID_SECONDS, VALID_SEEDS
from tests.paths import fixture_path

CHECKPOINTS = {Path(c["path"]).name: c for c in demo_checkpoints()}
HELD_OUT_SECONDS = 3.0


def load(name: str) -> dict:
    return json.loads(Path(CHECKPOINTS[name]["path"]).read_text())


def reference_model(data: dict) -> tuple[torch.nn.Module, torch.nn.Linear]:
    """Build torch's own LSTM/GRU and Linear straight from a CoreAudioML state_dict."""
    md, sd = data["model_data"], data["state_dict"]
    rnn_cls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[md["unit_type"]]
    rnn = rnn_cls(md["input_size"], md["hidden_size"], md["num_layers"], batch_first=True)
    lin = torch.nn.Linear(md["hidden_size"], md["output_size"], bias=md["bias_fl"])
    rnn.load_state_dict({k[len("rec.") :]: torch.tensor(v) for k, v in sd.items() if k.startswith("rec.")})
    lin.load_state_dict({k[len("lin.") :]: torch.tensor(v) for k, v in sd.items() if k.startswith("lin.")})
    return rnn, lin


def esr(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Error-to-signal ratio over all samples (Wright et al., DAFx 2019, eq. 4)."""
    return float(np.sum((y - y_hat) ** 2) / np.sum(y**2))


@pytest.fixture(scope="module")
def material() -> dict:
    """Validation phrases plus one held-out demo phrase, all at gain 0.5, and the device's output."""
    dev = DemoDevice()
    n = int(VALID_SECONDS * SAMPLE_RATE)
    dry = [guitar_phrase(s, VALID_SECONDS, SAMPLE_RATE) for s in VALID_SEEDS]
    held = guitar_phrase(EXCERPT_SEEDS[0], HELD_OUT_SECONDS, SAMPLE_RATE)
    dry.append(np.pad(held, (0, n - len(held))))
    dry_arr = np.stack(dry)
    wet = np.stack([dev.process(d, SAMPLE_RATE, VALID_GAIN) for d in dry_arr])
    return {"dry": dry_arr, "wet": wet, "held_frames": len(held)}


@pytest.fixture(scope="module")
def outputs(material: dict) -> dict:
    """Every checkpoint's reference forward pass over the material, state starting from zero."""
    torch.set_num_threads(1)
    out = {}
    for name in CHECKPOINTS:
        data = load(name)
        rnn, lin = reference_model(data)
        x = torch.from_numpy(material["dry"])[..., None]
        if data["model_data"]["input_size"] == 2:
            x = torch.cat([x, torch.full_like(x, VALID_GAIN)], dim=2)
        with torch.no_grad():
            h, _ = rnn(x)
            out[name] = (lin(h) + x[..., :1])[..., 0].numpy()
    return out


def test_three_small_checkpoints_with_the_real_coreaudioml_layout() -> None:
    real = json.loads(fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json").read_text())
    assert set(CHECKPOINTS) == {"demo_lstm16_gain.json", "demo_gru8.json", "demo_lstm4_undertrained.json"}
    for name in CHECKPOINTS:
        path = Path(CHECKPOINTS[name]["path"])
        assert path.stat().st_size < 300_000
        data = load(name)
        assert list(data)[:2] == list(real)  # model_data, state_dict first; "metadata" extra
        assert set(data) - set(real) == {"metadata"}
        assert list(data["model_data"]) == list(real["model_data"])
        assert list(data["state_dict"]) == list(real["state_dict"])
        md, sd = data["model_data"], data["state_dict"]
        gates = {"LSTM": 4, "GRU": 3}[md["unit_type"]]
        h = md["hidden_size"]
        assert np.shape(sd["rec.weight_ih_l0"]) == (gates * h, md["input_size"])
        assert np.shape(sd["rec.weight_hh_l0"]) == (gates * h, h)
        assert np.shape(sd["lin.weight"]) == (1, h) and np.shape(sd["lin.bias"]) == (1,)
        assert data["metadata"]["sample_rate"] == 48000 == CHECKPOINTS[name]["sample_rate"]
        # the demo's knob settings name exactly the model's knob channels
        assert len(CHECKPOINTS[name]["knobs"]) == md["input_size"] - 1


def test_training_and_demo_seeds_are_disjoint() -> None:
    for name in CHECKPOINTS:
        meta = load(name)["metadata"]
        assert meta["validation_seeds"] == list(VALID_SEEDS)
        lo, hi = meta["train_seeds"]
        assert (lo, hi) == (TRAIN_SEEDS[0], TRAIN_SEEDS[-1])
        assert not set(range(lo, hi + 1)) & (set(EXCERPT_SEEDS) | set(VALID_SEEDS))
    assert not set(EXCERPT_SEEDS) & set(VALID_SEEDS)


def test_validation_esr_matches_the_recorded_value(material: dict, outputs: dict) -> None:
    k = len(VALID_SEEDS)
    for name, y_hat in outputs.items():
        recorded = load(name)["metadata"]["validation_esr"]
        assert esr(material["wet"][:k], y_hat[:k]) == pytest.approx(recorded, rel=0.02, abs=2e-4), name


def test_quality_is_ranked_on_a_held_out_demo_phrase(material: dict, outputs: dict) -> None:
    n = material["held_frames"]
    y = material["wet"][-1, :n]
    scores = {name: esr(y, out[-1, :n]) for name, out in outputs.items()}
    good, medium, poor = (
        scores["demo_lstm16_gain.json"],
        scores["demo_gru8.json"],
        scores["demo_lstm4_undertrained.json"],
    )
    assert good < 0.1 and good < medium < poor, scores
    assert poor > 2 * good and 0.15 < poor < 0.8, scores
    # unseen phrases score close to the validation phrases
    for name, value in scores.items():
        recorded = load(name)["metadata"]["validation_esr"]
        assert 0.4 * recorded < value < 2.5 * recorded, (name, value, recorded)


def test_conditioned_model_follows_its_gain_knob(material: dict) -> None:
    """At gain 0.2 the LSTM-16 must be closer to the pedal at 0.2 than its own output at 0.5 is."""
    rnn, lin = reference_model(load("demo_lstm16_gain.json"))
    dry = material["dry"][0, :SAMPLE_RATE]
    wet_low = DemoDevice().process(dry, SAMPLE_RATE, 0.2)
    x = torch.from_numpy(dry)[None, :, None]
    preds = {}
    for g in (0.2, 0.5):
        with torch.no_grad():
            h, _ = rnn(torch.cat([x, torch.full_like(x, g)], dim=2))
            preds[g] = (lin(h) + x)[0, :, 0].numpy()
    assert esr(wet_low, preds[0.2]) < 0.25
    assert esr(wet_low, preds[0.2]) < 0.5 * esr(wet_low, preds[0.5])


def test_project_loader_reads_them_like_the_reference(material: dict, outputs: dict) -> None:
    from modelrunner.formats import load as load_checkpoint
    from modelrunner.render import reference_forward

    frames = 4800
    for name, c in CHECKPOINTS.items():
        model = load_checkpoint(c["path"], sample_rate=c["sample_rate"])
        assert model.sample_rate == 48000 and model.knob_names == list(c["knobs"])
        y = reference_forward(model, material["dry"][0, :frames], c["knobs"])[:, 0]
        np.testing.assert_allclose(y, outputs[name][0, :frames], atol=1e-5)

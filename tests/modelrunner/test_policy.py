"""The render policy (``modelrunner.policy``): which start each model gets, and the CLI calling it.

The same comparison through a real Celery worker is in ``tests/integration/test_render_policy.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from modelrunner import lookback, policy
from modelrunner.cli import main
from modelrunner.errors import AudioError
from modelrunner.formats import load
from modelrunner.render import render, resample
from tests.modelrunner._helpers import guitar
from tests.modelrunner._protocol_models import rnn_model
from tests.paths import REPO

PAPERS = REPO / "demo" / "papers" / "checkpoints"


def _context(seconds: float = 0.3, offset: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Look-back dry and "device" audio, then the excerpt right after it and its device audio, 44.1 kHz."""
    x = guitar(seconds + 0.2, offset)[0].numpy()
    n = int(seconds * 44100)
    y = np.tanh(3 * x).astype(np.float32)
    return x[:n, None], y[:n, None], x[n:, None], y[n:, None]


def test_zero_state_models_stream_from_silence_and_ignore_context() -> None:
    model = rnn_model(sample_rate=8000)
    lb_dry, lb_ref, dry, _ = _context()
    dry = np.concatenate([dry, 0.5 * dry], axis=1)  # stereo: each channel its own signal
    out, start = policy.render_excerpt(model, dry, 44100, knobs={"gain": 1.5}, lookback_dry=lb_dry)
    assert start == {"mode": "zero", "stateful": True, "receptive_field": 1}
    assert out.dtype == np.float32 and out.shape == dry.shape
    assert np.array_equal(out, render(model, dry, 44100, knobs={"gain": 1.5}))


def test_lookback_model_starts_from_its_estimate_and_returns_mono_at_the_excerpt_rate() -> None:
    model = load(PAPERS / "armlp.safetensors")
    lb_dry, lb_ref, dry, _ = _context()
    stereo = np.repeat(dry, 2, axis=1)
    seen: list[float] = []
    out, start = policy.render_excerpt(
        model, stereo, 44100, knobs={"gain": 0.3}, lookback_dry=lb_dry, lookback_reference=lb_ref, progress=seen.append
    )
    assert start["mode"] == "lookback" and start["target_used"] is True and seen[-1] == 1.0
    y, mode, info = lookback.render_excerpt(model, dry[:, 0], lb_dry[:, 0], lb_ref[:, 0], knobs={"gain": 0.3})
    assert out.shape == (dry.shape[0], 1) and np.array_equal(out[:, 0], y)
    assert start == {"mode": mode, **info}
    # Without context: zero state, and the record says why.
    _, start = policy.render_excerpt(model, dry, 44100, knobs={"gain": 0.3})
    assert start["mode"] == "zero-warmup" and start["lookback_unavailable"] == "no look-back audio was given"


def test_latency_model_is_resampled_and_fitted_to_the_excerpt() -> None:
    model = load(PAPERS / "sptmod.pt", config=str(PAPERS / "sptmod.json"))
    lb_dry, lb_ref, dry, _ = _context(0.2)
    x48, lb48, ref48 = (resample(a, 44100, 48000) for a in (dry, lb_dry, lb_ref))
    out, start = policy.render_excerpt(
        model, x48, 48000, knobs={"gain": 0.5}, lookback_dry=lb48, lookback_reference=ref48
    )
    assert start["mode"] == "lookback" and start["latency_compensated"] == 63
    assert out.shape == (x48.shape[0], 1)
    y, _, _ = lookback.render_excerpt(
        model, *(resample(a[:, 0], 48000, 44100) for a in (x48, lb48, ref48)), knobs={"gain": 0.5}
    )
    want = resample(y, 44100, 48000)[: x48.shape[0]]
    assert np.array_equal(out[: want.shape[0], 0], want) and not out[want.shape[0] :].any()


def test_reference_without_dry_is_refused() -> None:
    _, lb_ref, dry, _ = _context()
    with pytest.raises(AudioError, match="without lookback_dry"):
        policy.render_excerpt(rnn_model(), dry, 44100, lookback_reference=lb_ref)


def _write(path: Path, audio: np.ndarray, rate: int = 44100) -> str:
    sf.write(path, audio, rate, subtype="FLOAT")
    return str(path)


@pytest.mark.parametrize("input_rate", [False, True])
def test_cli_render_is_the_policy(tmp_path: Path, input_rate: bool) -> None:
    """The CLI's file equals ``policy.render_excerpt`` sample for sample, at the model's or the input's rate."""
    model = load(PAPERS / "armlp.safetensors")
    lb_dry, lb_ref, dry, _ = _context()
    audio = [resample(a, 44100, 48000) for a in (dry, lb_dry, lb_ref)]  # the model runs at 44.1 kHz
    files = [_write(tmp_path / f"{n}.wav", a, 48000) for n, a in zip(("x", "lb", "lbr"), audio)]
    out = tmp_path / "out.wav"
    argv = ["render", str(PAPERS / "armlp.safetensors"), files[0], "-o", str(out), "--no-progress"]
    argv += ["--param", "gain=0.7", "--lookback-dry", files[1], "--lookback-reference", files[2]]
    assert main(argv + (["--input-rate"] if input_rate else [])) == 0
    got, got_rate = sf.read(out, dtype="float32", always_2d=True)
    # Without --input-rate the CLI first brings every file to the model's rate.
    rate = 48000 if input_rate else model.sample_rate
    x, lbd, lbr = (a if input_rate else resample(a, 48000, rate) for a in audio)
    want, _ = policy.render_excerpt(model, x, rate, knobs={"gain": 0.7}, lookback_dry=lbd, lookback_reference=lbr)
    assert got_rate == rate and np.array_equal(got, want)


def test_cli_wants_both_lookback_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, dry, _ = _context()
    x = _write(tmp_path / "x.wav", dry)
    argv = ["render", str(PAPERS / "armlp.safetensors"), x, "-o", str(tmp_path / "o.wav"), "--lookback-dry", x]
    assert main(argv) == 2
    assert "give both --lookback-dry and --lookback-reference" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()

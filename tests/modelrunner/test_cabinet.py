"""Cabinet impulse responses (``modelrunner.cabinet``): checks, resampling, convolution, and the
policy and CLI applying one after the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import freqz

from modelrunner import cabinet, policy
from modelrunner.cli import main
from modelrunner.errors import AudioError
from modelrunner.formats import load
from tests.modelrunner._helpers import guitar
from tests.modelrunner._protocol_models import rnn_model
from tests.paths import fixture_path


def cab_ir(frames: int = 1500, seed: int = 0) -> np.ndarray:
    """A cabinet-like IR: a short delay, then exponentially decaying noise (about 5 ms decay at 44.1 kHz)."""
    rng = np.random.default_rng(seed)
    h = rng.standard_normal(frames) * np.exp(-np.arange(frames) / 220.0)
    h[:12] = 0.0
    return (0.2 * h).astype(np.float32)


def write(path: Path, audio: np.ndarray, rate: int, subtype: str = "FLOAT") -> Path:
    sf.write(path, audio, rate, subtype=subtype, format="WAV")
    return path


def test_apply_ir_equals_direct_convolution_truncated_to_the_input() -> None:
    """FFT convolution against numpy's direct ``np.convolve``, every channel, cut to the input's length."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 2)).astype(np.float32)
    h = cab_ir(700)
    y = cabinet.apply_ir(x, h)
    assert y.shape == x.shape and y.dtype == np.float32
    for c in range(2):
        want = np.convolve(x[:, c].astype(np.float64), h.astype(np.float64))[: x.shape[0]]
        np.testing.assert_allclose(y[:, c], want, rtol=0, atol=2e-6)
    # An IR longer than the audio: still the input's length, still the direct sum.
    short = x[:200, :1]
    want = np.convolve(short[:, 0].astype(np.float64), h.astype(np.float64))[:200]
    np.testing.assert_allclose(cabinet.apply_ir(short, h)[:, 0], want, rtol=0, atol=2e-6)


def test_a_unit_impulse_leaves_the_render_unchanged_and_a_delayed_one_delays_it() -> None:
    model = rnn_model(sample_rate=8000)
    x = guitar(0.5)[0].numpy()[:, None]  # 44.1 kHz: the policy resamples to the model's 8 kHz and back
    plain, start = policy.render_excerpt(model, x, 44100, knobs={"gain": 1.5})
    unit = cabinet.ImpulseResponse(np.array([1.0], dtype=np.float32), 8000)
    same, start_ir = policy.render_excerpt(model, x, 44100, knobs={"gain": 1.5}, ir=unit)
    assert start_ir == start and same.shape == plain.shape
    np.testing.assert_allclose(same, plain, rtol=0, atol=1e-6)
    # At the model's own rate nothing is resampled, so a delay of d frames is exact.
    x8 = x[::5][:4000]
    plain8, _ = policy.render_excerpt(model, x8, 8000, knobs={"gain": 1.5})
    d = 37
    delayed = np.zeros(d + 1, dtype=np.float32)
    delayed[d] = 0.5
    out, _ = policy.render_excerpt(model, x8, 8000, knobs={"gain": 1.5}, ir=cabinet.ImpulseResponse(delayed, 8000))
    assert out.shape == plain8.shape
    assert np.max(np.abs(out[:d])) < 1e-7  # silence before the delayed impulse (FFT round-off only)
    np.testing.assert_allclose(out[d:], 0.5 * plain8[:-d], rtol=0, atol=1e-6)
    assert np.max(np.abs(plain8)) > 0.05, "the check would be empty on silence"


def test_the_policy_refuses_an_ir_at_another_rate_than_the_model() -> None:
    ir = cabinet.ImpulseResponse(np.ones(4, dtype=np.float32), 44100)
    with pytest.raises(AudioError, match="44100 Hz but the model runs at 8000 Hz"):
        policy.render_excerpt(rnn_model(sample_rate=8000), np.zeros((100, 1), np.float32), 8000, ir=ir)


def test_a_44k1_ir_for_a_48k_model_keeps_its_frequency_response(tmp_path: Path) -> None:
    """Magnitude response (scipy.signal.freqz) of the IR at 44.1 kHz and resampled to 48 kHz agree
    within 0.1 dB up to 18 kHz; without the rate factor the resampled one would be 0.74 dB louder."""
    h = cab_ir(2000)
    path = write(tmp_path / "cab 44k.wav", h, 44100)
    ir = cabinet.load_ir(path, 48000)
    assert ir.sample_rate == 48000 and ir.data.dtype == np.float32
    assert ir.data.shape == (int(np.ceil(2000 * 48000 / 44100)),)
    assert ir.info["resampled"] is True and ir.info["rate"] == 48000
    assert ir.info["gain_scale"] == pytest.approx(44100 / 48000)
    assert ir.info["sample_rate"] == 44100 and ir.info["frames"] == 2000 and ir.info["name"] == "cab 44k.wav"
    freqs = np.array([100.0, 500.0, 1000.0, 3000.0, 6000.0, 10000.0, 14000.0, 18000.0])
    _, before = freqz(h.astype(np.float64), worN=freqs, fs=44100)
    _, after = freqz(ir.data.astype(np.float64), worN=freqs, fs=48000)
    diff_db = 20 * np.log10(np.abs(after) / np.abs(before))
    assert np.max(np.abs(diff_db)) < 0.1, diff_db
    # Same rate: the very samples, flagged as not resampled.
    same = cabinet.load_ir(path, 44100)
    assert same.info["resampled"] is False and np.array_equal(same.data, h)


def test_provenance_names_the_file_and_hashes_its_bytes(tmp_path: Path) -> None:
    import hashlib

    path = write(tmp_path / "upload-x1", np.stack([cab_ir(300)] * 2, axis=1), 48000, "PCM_24")
    ir = cabinet.read_ir(path, name="Mesa 4x12 SM57.wav")
    assert ir.info == {
        "name": "Mesa 4x12 SM57.wav",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "sample_rate": 48000,
        "frames": 300,
        "seconds": 0.00625,
        "channels": 2,  # identical channels: used as the mono IR
    }
    assert ir.data.shape == (300,)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: write(p, np.zeros((0, 1), np.float32), 48000), "x.wav: the impulse response has no samples"),
        (lambda p: write(p, np.zeros(480, np.float32), 48000), "x.wav: the impulse response is silent"),
        (
            lambda p: write(p, np.where(np.arange(64) == 9, np.nan, 0.1).astype(np.float32), 48000),
            "x.wav: contains NaN or infinite samples",
        ),
        (lambda p: p.write_bytes(b"this is not a wave file at all") and p, "x.wav: not a readable audio file"),
        (
            lambda p: write(p, np.stack([cab_ir(200), cab_ir(200, seed=5)], axis=1), 48000),
            "x.wav: a stereo impulse response with two different channels is not used",
        ),
        (lambda p: write(p, np.ones((64, 3), np.float32) * 0.1, 48000), "x.wav: 3 channels; at most 2"),
    ],
    ids=["empty", "silent", "nan", "not-audio", "stereo", "three-channels"],
)
def test_bad_irs_are_refused_with_a_specific_message(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "upload-123"
    make(path)
    with pytest.raises(AudioError) as caught:
        cabinet.load_ir(path, 48000, name="x.wav")
    assert str(caught.value).startswith(message), str(caught.value)
    assert "upload-123" not in str(caught.value)


def test_a_too_long_ir_is_refused_from_its_header_before_decoding(tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path / "hall.wav", np.full(8000 * 11, 0.01, np.float32), 8000)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the samples were decoded")

    monkeypatch.setattr(sf, "read", no_decoding)
    with pytest.raises(AudioError, match=r"hall\.wav: the impulse response lasts 11\.0 s; at most 10 s"):
        cabinet.load_ir(path, 48000)
    with pytest.raises(AudioError, match="lasts 11.0 s; at most 5 s"):
        cabinet.read_ir(path, max_seconds=5)


def test_cli_render_applies_the_ir_at_the_model_rate(tmp_path: Path, capsys) -> None:
    ckpt = fixture_path("models", "nam", "lstm_h3.nam")  # a 48 kHz model
    x = guitar(0.4)[0].numpy()[:, None]
    dry = write(tmp_path / "dry.wav", x, 44100)
    ir_path = write(tmp_path / "cab.wav", cab_ir(900), 44100)
    out = tmp_path / "out.wav"
    assert main(["render", str(ckpt), str(dry), "-o", str(out), "--ir", str(ir_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "cabinet IR cab.wav: 900 frames at 44100 Hz, resampled to 48000 Hz" in printed
    y, rate = sf.read(out, dtype="float32", always_2d=True)
    model = load(ckpt)
    from modelrunner.render import resample

    plain, _ = policy.render_excerpt(model, resample(x, 44100, 48000), 48000)
    want = cabinet.apply_ir(plain, cabinet.load_ir(ir_path, 48000))
    assert rate == 48000 and y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-6)
    assert np.max(np.abs(want - plain)) > 0.01, "the IR changed nothing: the check would be empty"
    assert main(["render", str(ckpt), str(dry), "-o", str(out), "--ir", str(tmp_path / "none.wav")]) == 2
    assert "--ir " in capsys.readouterr().err

"""Objective metrics, checked against auraloss 0.4.0 and against their written
definitions computed inline."""

from __future__ import annotations

import inspect
import math

import auraloss
import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch
from scipy import signal

from modelrunner import metrics as M
from modelrunner.errors import AudioError
from tests.paths import fixture_path

SR = 44_100
KEYS = {"esr", "esr_preemph", "esr_aweighted", "dc", "mae", "mse", "mr_stft", "mr_eesr", "delta_lufs", "delta_crest_db"}


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A stereo target and a plausible model output: gain error, noise, a DC offset, a little distortion."""
    rng = np.random.default_rng(7)
    target = (0.2 * rng.standard_normal((SR, 2))).astype(np.float32)
    target = signal.lfilter([1.0], [1.0, -0.9], target, axis=0).astype(np.float32) * 0.3
    output = (0.9 * np.tanh(1.2 * target) + 0.01 * rng.standard_normal(target.shape) + 0.003).astype(np.float32)
    return output, target


def batch(a: np.ndarray) -> torch.Tensor:
    """(frames, channels) -> auraloss (batch=1, channels, frames)."""
    return (
        torch.from_numpy(np.ascontiguousarray(np.atleast_2d(a.T)))[None]
        if a.ndim == 2
        else torch.from_numpy(a)[None, None]
    )


# --- against auraloss -----------------------------------------------------------------


@pytest.mark.parametrize("channels", [slice(0, 1), slice(0, 2)])
def test_esr_matches_auraloss(pair, channels):
    o, t = pair[0][:, channels], pair[1][:, channels]
    expected = auraloss.time.ESRLoss()(batch(o), batch(t)).item()
    assert M.esr(o, t) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("channels", [slice(0, 1), slice(0, 2)])
def test_dc_matches_auraloss(pair, channels):
    o, t = pair[0][:, channels], pair[1][:, channels]
    expected = auraloss.time.DCLoss()(batch(o), batch(t)).item()
    assert M.dc_loss(o, t) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("channels", [slice(0, 1), slice(0, 2)])
def test_mr_stft_matches_auraloss_defaults(pair, channels):
    o, t = pair[0][:, channels], pair[1][:, channels]
    expected = auraloss.freq.MultiResolutionSTFTLoss()(batch(o), batch(t)).item()
    assert M.mr_stft(o, t, SR) == pytest.approx(expected, rel=1e-4)


def _mr_stft_torch(o: np.ndarray, t: np.ndarray) -> float:
    """The former MR-STFT computation: ``torch.stft`` in float64, sqrt(max(|X|², 1e-8))."""
    x, y = (torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float64).T)) for a in (o, t))
    total = 0.0
    for n_fft, hop, win in zip(M.MR_STFT_FFT_SIZES, M.MR_STFT_HOP_SIZES, M.MR_STFT_WIN_LENGTHS):
        window = torch.hann_window(win, dtype=torch.float64)
        x_mag, y_mag = (
            torch.sqrt(torch.clamp(s.real**2 + s.imag**2, min=M.STFT_EPS))
            for s in (
                torch.stft(a, n_fft, hop, win, window, center=True, pad_mode="reflect", return_complex=True)
                for a in (x, y)
            )
        )
        sc = torch.linalg.vector_norm(y_mag - x_mag) / torch.linalg.vector_norm(y_mag)
        total += float(sc + torch.mean(torch.abs(torch.log(x_mag) - torch.log(y_mag))))
    return total / len(M.MR_STFT_FFT_SIZES)


@pytest.mark.parametrize("case", ["guitar", "stereo", "near-identical", "silent output", "short"])
def test_mr_stft_agrees_with_the_former_torch_stft_computation(pair, case):
    """The scipy.fft STFT gives the torch.stft float64 result within 1e-10 relative."""
    if case in ("guitar", "near-identical"):
        data, _ = sf.read(fixture_path("audio", "guitar_example_44k.wav"), dtype="float32", always_2d=True)
        t = np.tanh(4 * data) / np.tanh(4.0)
        o = (
            t + 1e-6 * np.sin(np.arange(t.shape[0]))[:, None]
            if case == "near-identical"
            else np.tanh(3.8 * data) / np.tanh(3.8)
        )
    elif case == "stereo":
        o, t = pair
    elif case == "silent output":
        o, t = np.zeros_like(pair[1]), pair[1]
    else:
        o, t = pair[0][:1100], pair[1][:1100]
    assert M.mr_stft(o, t, SR) == pytest.approx(_mr_stft_torch(o, t), rel=1e-10)


# --- against the written definitions ---------------------------------------------------


def test_esr_preemph_is_esr_of_first_order_highpassed_signals(pair):
    o, t = (a[:, 0].astype(np.float64) for a in pair)
    po = signal.lfilter([1.0, -0.85], [1.0], o)
    pt = signal.lfilter([1.0, -0.85], [1.0], t)
    expected = np.sum((pt - po) ** 2) / np.sum(pt**2)
    assert M.esr_preemph(o, t) == pytest.approx(expected, rel=1e-9)
    assert M.esr_preemph(o, t) != pytest.approx(M.esr(o, t), rel=1e-3)


@pytest.mark.parametrize("sr", [44_100, 48_000, 96_000])
def test_a_weighting_follows_the_iec_61672_table(sr):
    # IEC 61672-1:2013 Table 3 A-weightings (dB), to 0.15 dB up to 4 kHz
    table = {31.5: -39.4, 63.0: -26.2, 100.0: -19.1, 250.0: -8.6, 500.0: -3.2, 1000.0: 0.0, 2000.0: 1.2, 4000.0: 1.0}
    freqs = list(table)
    _, h = signal.sosfreqz(M.a_weighting_sos(sr), worN=freqs, fs=sr)
    got = 20 * np.log10(np.abs(h))
    assert got[freqs.index(1000.0)] == pytest.approx(0.0, abs=1e-9)
    for f, g in zip(freqs, got):
        assert g == pytest.approx(table[f], abs=0.15), f"{f} Hz at {sr} Hz"


def test_a_weighted_esr_discounts_low_frequency_error():
    rng = np.random.default_rng(0)
    t = (0.1 * rng.standard_normal(SR)).astype(np.float64)
    hum = 0.05 * np.sin(2 * np.pi * 50 * np.arange(SR) / SR)
    hiss = signal.lfilter(*signal.butter(2, [900, 1100], btype="band", fs=SR), rng.standard_normal(SR))
    hiss *= np.sqrt(np.mean(hum**2) / np.mean(hiss**2))  # same error energy as the hum
    assert M.esr(t + hum, t) == pytest.approx(M.esr(t + hiss, t), rel=1e-9)
    # 50 Hz sits about 30 dB down the A-weighting curve, 1 kHz at 0 dB
    assert M.esr_aweighted(t + hum, t, SR) < M.esr_aweighted(t + hiss, t, SR) / 100


def test_a_weighted_esr_is_the_esr_of_the_filtered_signals(pair):
    o, t = (a.astype(np.float64) for a in pair)
    sos = M.a_weighting_sos(SR)
    fo, ft = signal.sosfilt(sos, o, axis=0), signal.sosfilt(sos, t, axis=0)
    expected = np.mean(np.sum((ft - fo) ** 2, axis=0) / np.sum(ft**2, axis=0))
    assert M.esr_aweighted(o, t, SR) == pytest.approx(expected, rel=1e-9)


def test_dc_loss_definition():
    t = np.sin(np.linspace(0, 40, 5000))
    o = t + 0.1
    assert M.dc_loss(o, t) == pytest.approx(0.1**2 / np.mean(t**2), rel=1e-9)


def test_mae_and_mse_definitions(pair):
    o, t = (a.astype(np.float64) for a in pair)
    assert M.mae(o, t) == pytest.approx(np.mean(np.abs(o - t)), rel=1e-12)
    assert M.mse(o, t) == pytest.approx(np.mean((o - t) ** 2), rel=1e-12)
    assert M.mse(o, t) == pytest.approx(torch.nn.functional.mse_loss(batch(pair[0]), batch(pair[1])).item(), rel=1e-4)


def test_mr_eesr_definition_and_properties(pair):
    o, t = pair
    # a gain a scales every frame energy by a^2: |a^2 E - E| / E = 1 - a^2 at every frame
    assert M.mr_eesr(0.5 * t, t) == pytest.approx(1 - 0.25, rel=1e-5)
    # energy envelopes ignore polarity, which ESR punishes fully
    assert M.mr_eesr(-t, t) == pytest.approx(0.0, abs=1e-12)
    assert M.esr(-t, t) == pytest.approx(4.0, rel=1e-6)
    # inline, from the written definition: mean-square energies of rectangular frames of
    # W = 512, 1024, 2048 samples every W/4, mean relative error |Ê - E| / (E + 1e-8), mean
    x, y = o[:, 0].astype(np.float64), t[:, 0].astype(np.float64)
    values = []
    for win in (512, 1024, 2048):
        starts = range(0, len(y) - win + 1, win // 4)
        ex = np.array([np.mean(x[s : s + win] ** 2) for s in starts])
        ey = np.array([np.mean(y[s : s + win] ** 2) for s in starts])
        values.append(np.mean(np.abs(ex - ey) / (ey + 1e-8)))
    assert M.mr_eesr(x, y, SR) == pytest.approx(np.mean(values), rel=1e-9)


def test_delta_lufs_of_a_6_db_gain_error():
    rng = np.random.default_rng(4)
    t = (0.1 * rng.standard_normal((SR, 2))).astype(np.float32)
    o = t * 10 ** (-6 / 20)
    assert M.delta_lufs(o, t, SR) == pytest.approx(6.0, abs=1e-6)
    meter = pyloudnorm.Meter(SR)
    expected = abs(meter.integrated_loudness(o.astype(np.float64)) - meter.integrated_loudness(t.astype(np.float64)))
    assert M.delta_lufs(o, t, SR) == pytest.approx(expected, abs=1e-9)


def test_delta_crest_of_sine_against_square_is_3_01_db():
    n = np.arange(SR)
    sine = np.sin(2 * np.pi * 441 * n / SR)  # 100 samples a period: a sample lands on the crest
    square = np.sign(np.sin(2 * np.pi * 441 * (n + 0.5) / SR))  # half-sample offset avoids sign(0)
    assert M.crest_factor_db(sine) == pytest.approx(20 * math.log10(math.sqrt(2)), abs=1e-6)
    assert M.crest_factor_db(square) == pytest.approx(0.0, abs=1e-12)
    assert M.delta_crest_db(sine, square) == pytest.approx(3.0103, abs=1e-3)
    # scale-free: a gain changes neither crest factor
    assert M.delta_crest_db(0.1 * sine, square) == pytest.approx(3.0103, abs=1e-3)


# --- properties -----------------------------------------------------------------------


def test_identical_signals_give_zero(pair):
    t = pair[1]
    values = M.compute_all(t.copy(), t, SR)
    for key, value in values.items():
        # MR-STFT compares clamped magnitudes; it too is exactly zero for equal inputs
        assert value == pytest.approx(0.0, abs=1e-12), key


def test_ratios_are_scale_invariant_and_errors_scale(pair):
    o, t = pair
    k = 3.0
    for f in (M.esr, M.esr_preemph, M.dc_loss, M.mr_eesr, M.delta_crest_db):
        assert f(k * o, k * t) == pytest.approx(f(o, t), rel=1e-5), f.__name__
    assert M.esr_aweighted(k * o, k * t, SR) == pytest.approx(M.esr_aweighted(o, t, SR), rel=1e-5)
    assert M.delta_lufs(k * o, k * t, SR) == pytest.approx(M.delta_lufs(o, t, SR), abs=1e-6)
    assert M.mae(k * o, k * t) == pytest.approx(k * M.mae(o, t), rel=1e-5)
    assert M.mse(k * o, k * t) == pytest.approx(k**2 * M.mse(o, t), rel=1e-5)
    # ESR of a pure gain error a*y is (1 - a)^2 whatever the pre-emphasis
    for f in (M.esr, M.esr_preemph):
        assert f(0.8 * t, t) == pytest.approx(0.04, rel=1e-5)
    assert M.esr_aweighted(0.8 * t, t, SR) == pytest.approx(0.04, rel=1e-5)


def test_a_worse_model_scores_worse_on_a_real_guitar_recording():
    data, sr = sf.read(fixture_path("audio", "guitar_example_44k.wav"), dtype="float32", always_2d=True)
    data = data[: 2 * sr]
    target = np.tanh(4 * data) / np.tanh(4.0)  # stand-in for a device: a soft clipper
    close = np.tanh(3.8 * data) / np.tanh(3.8)
    far = np.clip(8 * data, -1, 1)
    good, bad = M.compute_all(close, target, sr), M.compute_all(far, target, sr)
    for key in ("esr", "esr_preemph", "esr_aweighted", "mae", "mse", "mr_stft", "mr_eesr"):
        assert good[key] < bad[key], key


# --- compute_all and errors -----------------------------------------------------------


def test_compute_all_keys_and_metric_table(pair):
    values = M.compute_all(*pair, SR)
    assert set(values) == KEYS and set(M.METRICS) == KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in values.values())
    for key, info in M.METRICS.items():
        assert info.lower_is_better is True
        assert info.name and info.citation, key
        args = (*pair, SR) if "sample_rate" in inspect.signature(info.function).parameters else pair
        assert info.function(*args) == pytest.approx(values[key], rel=1e-12), key


def test_every_metric_function_has_a_one_line_cited_docstring():
    for info in M.METRICS.values():
        doc = inspect.getdoc(info.function)
        assert doc and len(doc.splitlines()[0]) > 20, info.function.__name__


def test_one_dimensional_and_single_channel_inputs_agree(pair):
    o, t = pair[0][:, 0], pair[1][:, 0]
    assert M.compute_all(o, t, SR) == M.compute_all(o[:, None], t[:, None], SR)


def test_length_mismatch_says_by_how_much(pair):
    o, t = pair
    with pytest.raises(AudioError, match="output is 10 frames shorter"):
        M.compute_all(o[:-10], t, SR)
    with pytest.raises(AudioError, match="output is 5 frames longer"):
        M.esr(np.concatenate([o, o[:5]]), t)


def test_channel_mismatch_and_bad_values_are_refused(pair):
    o, t = pair
    with pytest.raises(AudioError, match="1 channel.*target 2"):
        M.compute_all(o[:, :1], t, SR)
    bad = o.copy()
    bad[3, 0] = np.inf
    with pytest.raises(AudioError, match="NaN or infinite"):
        M.mse(bad, t)
    with pytest.raises(AudioError, match="silent"):
        M.compute_all(o, np.zeros_like(t), SR)
    with pytest.raises(AudioError, match="MR-STFT needs"):
        M.mr_stft(o[:512], t[:512])


def test_silent_output_gives_infinite_level_differences(pair):
    t = pair[1]
    z = np.zeros_like(t)
    assert M.delta_lufs(z, t, SR) == math.inf
    assert M.delta_crest_db(z, t) == math.inf
    assert M.esr(z, t) == pytest.approx(1.0)

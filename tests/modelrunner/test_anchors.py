"""BS.1534-3 low-pass anchors: the filter actually applied meets the mask at every
supported rate, and the anchor is time-aligned with the reference."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
from scipy import signal

from modelrunner.anchors import (
    LOW_ANCHOR_HZ,
    MASK_25DB_RATIO,
    MID_ANCHOR_HZ,
    WEAK_ANCHOR_DB,
    anchor_35,
    anchor_70,
    anchor_difference,
    design_anchor_filter,
    lowpass_anchor,
)
from modelrunner.errors import AudioError

RATES = [44_100, 48_000, 88_200, 96_000]
CUTOFFS = [LOW_ANCHOR_HZ, MID_ANCHOR_HZ]


def assert_meets_mask(freqs: np.ndarray, mag_db: np.ndarray, cutoff: float, what: str) -> None:
    """The project's anchor mask, scaled with the cut-off (3.5 kHz: 4 / 4.5 kHz points)."""
    passband = freqs <= cutoff
    assert passband.sum() > 50, what
    assert np.max(np.abs(mag_db[passband])) <= 0.1, f"{what}: passband ripple {np.max(np.abs(mag_db[passband])):.3f} dB"
    at_25 = freqs >= cutoff * 8 / 7
    assert np.max(mag_db[at_25]) <= -25.0, f"{what}: only {-np.max(mag_db[at_25]):.1f} dB from {cutoff * 8 / 7:.0f} Hz"
    at_50 = freqs >= cutoff * 9 / 7
    assert np.max(mag_db[at_50]) <= -50.0, f"{what}: only {-np.max(mag_db[at_50]):.1f} dB from {cutoff * 9 / 7:.0f} Hz"


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("cutoff", CUTOFFS)
def test_designed_taps_meet_the_mask(sr, cutoff):
    taps = design_anchor_filter(sr, cutoff)
    assert len(taps) % 2 == 1
    assert np.allclose(taps, taps[::-1]), "linear phase needs symmetric taps"
    freqs, h = signal.freqz(taps, worN=2**16, fs=sr)
    assert_meets_mask(freqs, 20 * np.log10(np.abs(h) + 1e-300), cutoff, f"taps {cutoff:g} Hz @ {sr}")


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("cutoff", CUTOFFS)
def test_impulse_response_of_the_applied_anchor_meets_the_mask(sr, cutoff):
    n = 2**15
    impulse = np.zeros(n, dtype=np.float32)
    impulse[n // 2] = 1.0
    response = lowpass_anchor(impulse, sr, cutoff).astype(np.float64)
    # the response is the filter, centred on the impulse: no delay left
    assert int(np.argmax(response)) == n // 2
    spectrum = np.fft.rfft(response)
    freqs = np.fft.rfftfreq(n, 1 / sr)
    # float32 output limits the floor to about -140 dB, far below the mask
    assert_meets_mask(freqs, 20 * np.log10(np.abs(spectrum) + 1e-12), cutoff, f"anchor {cutoff:g} Hz @ {sr}")
    # linear phase with the delay removed: the centred response has zero phase
    centred = np.fft.rfft(np.roll(response, -(n // 2)))
    passband = freqs <= cutoff
    assert np.max(np.abs(centred[passband].imag)) < 1e-5


def test_white_noise_transfer_function_meets_the_mask():
    sr = 48_000
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4 * sr).astype(np.float32)
    y = anchor_35(x, sr)
    freqs, pxy = signal.csd(x, y, fs=sr, nperseg=8192)
    _, pxx = signal.welch(x, fs=sr, nperseg=8192)
    mag_db = 20 * np.log10(np.abs(pxy / pxx))
    # an estimate from noise: passband to 0.1 dB within estimation error, stopband as specified
    passband = freqs <= LOW_ANCHOR_HZ
    assert np.max(np.abs(mag_db[passband])) <= 0.1
    assert np.max(mag_db[freqs >= 4000]) <= -25
    assert np.max(mag_db[freqs >= 4500]) <= -50


@pytest.mark.parametrize("anchor", [anchor_35, anchor_70])
def test_anchor_is_time_aligned_with_a_broadband_reference(anchor):
    sr = 44_100
    rng = np.random.default_rng(1)
    x = rng.standard_normal(sr).astype(np.float32)
    y = anchor(x, sr)
    xc = signal.correlate(y, x, mode="full")
    lags = signal.correlation_lags(len(y), len(x), mode="full")
    assert lags[np.argmax(xc)] == 0


def test_low_frequency_sine_passes_with_same_phase_and_level():
    sr = 48_000
    t = np.arange(sr) / sr
    x = np.sin(2 * np.pi * 220.0 * t).astype(np.float32)
    y = anchor_35(x, sr)
    edge = len(design_anchor_filter(sr, LOW_ANCHOR_HZ))  # skip the ends, where zeros pad the filter
    assert np.max(np.abs(y[edge:-edge] - x[edge:-edge])) < 2e-3


def test_high_frequency_content_is_removed():
    sr = 48_000
    t = np.arange(sr) / sr
    x = (np.sin(2 * np.pi * 6000.0 * t)).astype(np.float32)
    edge = len(design_anchor_filter(sr, LOW_ANCHOR_HZ))
    assert np.max(np.abs(anchor_35(x, sr)[edge:-edge])) < 10 ** (-50 / 20)
    # the 7 kHz anchor keeps the 6 kHz tone
    assert np.max(np.abs(anchor_70(x, sr)[edge:-edge])) == pytest.approx(1.0, abs=0.02)


def test_shape_length_and_channels_are_preserved():
    sr = 48_000
    rng = np.random.default_rng(2)
    stereo = rng.standard_normal((1000, 2)).astype(np.float32)
    stereo[:, 1] = 0.0
    out = anchor_70(stereo, sr)
    assert out.shape == stereo.shape and out.dtype == np.float32
    assert not out[:, 1].any(), "channels must be filtered independently"
    assert np.allclose(out[:, 0], anchor_70(stereo[:, 0], sr), atol=1e-6)
    short = rng.standard_normal(50).astype(np.float32)  # shorter than the filter
    assert anchor_35(short, sr).shape == (50,)


def test_bad_input_is_refused():
    with pytest.raises(AudioError, match="sample rate above"):
        anchor_70(np.zeros(100, dtype=np.float32), 16_000)
    with pytest.raises(AudioError, match="NaN"):
        anchor_35(np.array([0.0, np.nan, 0.0]), 48_000)
    with pytest.raises(AudioError, match="shape"):
        anchor_35(np.zeros((2, 2, 2)), 48_000)
    with pytest.raises(AudioError, match="positive"):
        lowpass_anchor(np.zeros(10), 48_000, -1.0)


# ----------------------------------------------------------------------------- what an anchor removes


def welch_difference_db(reference: np.ndarray, anchor: np.ndarray, sr: int) -> float:
    """The removed energy from power spectra (scipy.signal.welch), not from the samples' sums."""
    _, p_ref = signal.welch(reference, fs=sr, nperseg=4096)
    _, p_diff = signal.welch(reference - anchor, fs=sr, nperseg=4096)
    return float(10 * np.log10(p_diff.sum() / p_ref.sum()))


@pytest.mark.parametrize("cutoff", CUTOFFS)
def test_white_noise_anchor_removes_the_band_above_the_cutoff(cutoff):
    sr = 48_000
    x = (0.1 * np.random.default_rng(3).standard_normal(4 * sr)).astype(np.float32)
    anchor = lowpass_anchor(x, sr, cutoff)
    found = anchor_difference(x, anchor, sr, cutoff)
    # Independent: the spectra's energy ratio, and the flat spectrum's share above the transition band.
    assert found.difference_db == pytest.approx(welch_difference_db(x, anchor, sr), abs=0.1)
    transition_mid = cutoff * (1 + MASK_25DB_RATIO) / 2
    assert found.difference_db == pytest.approx(10 * np.log10((sr / 2 - transition_mid) / (sr / 2)), abs=0.2)
    assert found.difference_lufs == pytest.approx(pyloudnorm.Meter(sr).integrated_loudness(x - anchor), abs=1e-6)
    assert found.difference_db > WEAK_ANCHOR_DB and not found.weak
    assert found.to_dict()["weak"] is False


def test_a_signal_without_energy_above_the_cutoff_gives_a_weak_anchor():
    sr = 48_000
    t = np.arange(2 * sr) / sr
    sine = (0.5 * np.sin(2 * np.pi * 200.0 * t)).astype(np.float32)
    noise = np.random.default_rng(4).standard_normal(2 * sr)
    lowpassed = (0.2 * signal.sosfiltfilt(signal.butter(8, 2000, fs=sr, output="sos"), noise)).astype(np.float32)
    for x in (sine, lowpassed):
        anchor = anchor_70(x, sr)
        found = anchor_difference(x, anchor, sr, MID_ANCHOR_HZ)
        assert found.difference_db < WEAK_ANCHOR_DB - 10, found
        assert found.weak and found.to_dict()["weak"] is True
    # The sine's difference lies below the BS.1770 absolute gate: its loudness is -inf, stored as None.
    sine_found = anchor_difference(sine, anchor_70(sine, sr), sr, MID_ANCHOR_HZ)
    assert sine_found.difference_lufs == -np.inf and sine_found.to_dict()["difference_lufs"] is None


def test_anchor_difference_edge_cases():
    sr = 48_000
    x = np.random.default_rng(5).standard_normal(sr).astype(np.float32)
    same = anchor_difference(x, x, sr, MID_ANCHOR_HZ)  # nothing removed at all
    assert same.difference_db == -np.inf and same.weak and same.to_dict()["difference_db"] is None
    silent = anchor_difference(np.zeros(sr), np.zeros(sr), sr, MID_ANCHOR_HZ)
    assert np.isnan(silent.difference_db) and silent.weak and silent.to_dict()["difference_lufs"] is None
    short = anchor_difference(x[:100], anchor_70(x[:100], sr), sr, MID_ANCHOR_HZ)  # under one gating block
    assert np.isnan(short.difference_lufs) and short.to_dict()["difference_lufs"] is None
    assert anchor_difference(x, anchor_70(x, sr), sr, MID_ANCHOR_HZ, threshold_db=0.0).weak
    with pytest.raises(AudioError, match="differ in shape"):
        anchor_difference(x, x[:-1], sr, MID_ANCHOR_HZ)
